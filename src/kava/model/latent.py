"""Student latent reasoning (method.md §3): Jacobi iterations, sequential latents, pause tokens.

Shared by training (``KavaModel.forward``) and inference (``kava.evaluation.decoding``) so both
run exactly the same passes. The prefix ``[bos] Q <bot>`` is left-padded: the M latent slots
sit in the same columns for every example, and position ids continue from each example's own
prefix length, so an example's latents never depend on its batch mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from kava.data.sequences import positions_from_mask

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [B, H_kv, S, d]


def cache_of(kv: KV) -> DynamicCache:
    """A fresh cache holding these tensors; the model appends to it without touching ours."""
    return DynamicCache(ddp_cache_data=[(k, v) for k, v in kv])


def kv_of(cache: DynamicCache, start: int = 0, end: int | None = None) -> KV:
    return [(layer.keys[:, :, start:end], layer.values[:, :, start:end]) for layer in cache.layers]


@dataclass
class LatentState:
    """Everything later passes need after the latents: the cache and where each example stands."""

    kv: KV  # cache over [bos] Q <bot> z_1..z_M
    attention_mask: torch.Tensor  # [B, Lp + M] over that cache
    next_position: torch.Tensor  # [B] position id of the token after z_M (<eot>)
    latent_kv: KV  # the M latent entries per layer: [B, H_kv, M, d] each
    latents: torch.Tensor  # [B, M, D] latent input embeddings of the pass that made latent_kv
    forward_passes: int


def run_latents(model, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor) -> LatentState:
    """Compute the M latents of the student for a left-padded prefix ``[bos] Q <bot>``."""
    cfg = model.config
    M = cfg.num_latents
    B, Lp = prefix_ids.shape
    prefix_len = prefix_mask.sum(-1)
    ones = prefix_mask.new_ones(B, M)
    full_mask = torch.cat([prefix_mask, ones], dim=1)
    latent_pos = prefix_len.view(B, 1) + torch.arange(M, device=prefix_ids.device).view(1, M)

    if cfg.latent_mode == "sequential":
        return _sequential(model, prefix_ids, prefix_mask, full_mask, latent_pos)

    # Init pass: [bos] Q <bot> <latent>×M. With T = 0 these placeholders are the pause tokens.
    placeholder = torch.full((B, M), model.latent_token_id, dtype=torch.long, device=prefix_ids.device)
    ids = torch.cat([prefix_ids, placeholder], dim=1)
    embeds = model.embed(ids)
    out = model.decode(embeds, full_mask, positions_from_mask(full_mask), DynamicCache())
    passes = 1
    if cfg.num_iterations == 0:
        kv = kv_of(out.cache)
        return LatentState(kv, full_mask, prefix_len + M, kv_of(out.cache, Lp), embeds[:, Lp:], passes)

    prefix_kv = kv_of(out.cache, 0, Lp)
    # Slot i+1 receives the projected output of slot i; slot 1 the output at <bot>.
    z = model.project(out.last_hidden_state[:, Lp - 1 : Lp - 1 + M])
    for t in range(cfg.num_iterations):
        out = model.decode(z, full_mask, latent_pos, cache_of(prefix_kv))
        passes += 1
        if t < cfg.num_iterations - 1:
            z = torch.cat([z[:, :1], model.project(out.last_hidden_state[:, : M - 1])], dim=1)
    return LatentState(kv_of(out.cache), full_mask, prefix_len + M, kv_of(out.cache, Lp), z, passes)


def _sequential(model, prefix_ids, prefix_mask, full_mask, latent_pos) -> LatentState:
    """CODI-style: each latent is the projected last hidden state of the previous one."""
    B, Lp = prefix_ids.shape
    M = model.config.num_latents
    cache = DynamicCache()
    out = model.decode(model.embed(prefix_ids), prefix_mask, positions_from_mask(prefix_mask), cache)
    zs = []
    z = model.project(out.last_hidden_state[:, -1:])
    for m in range(M):
        zs.append(z)
        out = model.decode(z, full_mask[:, : Lp + m + 1], latent_pos[:, m : m + 1], out.cache)
        if m < M - 1:
            z = model.project(out.last_hidden_state[:, -1:])
    kv = kv_of(out.cache)
    return LatentState(kv, full_mask, latent_pos[:, -1] + 1, kv_of(out.cache, Lp), torch.cat(zs, 1), 1 + M)
