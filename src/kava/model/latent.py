"""Student latent reasoning (docs/method.md §3): Jacobi iterations, sequential latents, pause tokens.

Shared by training (``KavaModel.forward``) and inference (``kava.evaluation.decoding``) so both
run exactly the same passes; training may start them on the teacher's cache over ``[bos] Q``
instead of running the question again (``question_kv``). The prefix ``[bos] Q <bot>`` is
left-padded: the M latent slots sit in the same columns for every example, and position ids
continue from each example's own prefix length, so an example's latents never depend on its
batch mates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from kava.model.sequences import positions_from_mask
from kava.model.cache import KV, cache_of, kv_of

# Sees the last-layer hidden states [B, M, D] at the M latent slots of a pass (see `run_latents`).
Observer = Callable[[torch.Tensor], None]


@dataclass
class LatentState:
    """Everything later passes need after the latents: the cache and where each example stands."""

    kv: KV  # cache over [bos] Q <bot> z_1..z_M
    attention_mask: torch.Tensor  # [B, Lp + M] over that cache
    next_position: torch.Tensor  # [B] position id of the token after z_M (<eot>)
    latent_kv: KV  # the M latent entries per layer: [B, H_kv, M, d] each
    latents: torch.Tensor  # [B, M, D] latent input embeddings of the pass that made latent_kv
    forward_passes: int


def run_latents(model, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, question_kv: KV | None = None,
                observe: Observer | None = None, num_latents: int | None = None) -> LatentState:
    """Compute the M latents of the student for a left-padded prefix ``[bos] Q <bot>``.

    ``question_kv``, when given, already holds the prefix's first columns (in training, the
    teacher's cache over ``[bos] Q``: same ids, mask and positions); only the rest of the prefix
    (``<bot>``) is run, on top of it and with gradients flowing into it. Without it (inference,
    or ``student_shares_question_cache=False``) the whole prefix is run. Everything after that
    opening is the same code for both.

    ``observe``, when given, is called with the last-layer hidden states at the M latent slots
    after every pass that computes them all: the init pass, then each Jacobi iteration (T + 1
    calls); once with the M outputs in sequential mode. Inspection (`kava.inspection`) reads what
    the latents "say" from them; the passes themselves do not change.

    ``num_latents`` overrides the config's M (a Coconut stage trains with fewer thoughts; 0 at
    its CoT stage, sequential mode only).
    """
    cfg = model.config
    M = cfg.num_latents if num_latents is None else num_latents
    B, Lp = prefix_ids.shape
    n_cached = 0 if question_kv is None else question_kv[0][0].shape[2]
    cache = DynamicCache() if question_kv is None else cache_of(question_kv)
    new_ids = prefix_ids[:, n_cached:]  # the prefix tokens the opening pass runs
    full_mask = torch.cat([prefix_mask, prefix_mask.new_ones(B, M)], dim=1)
    full_pos = positions_from_mask(full_mask)  # the latents continue from each example's own prefix
    next_position = prefix_mask.sum(-1) + M

    if cfg.latent_mode == "sequential":
        return _sequential(model, new_ids, cache, full_mask, full_pos, M, observe)
    if M < 1:
        raise ValueError(f"num_latents={M}: Jacobi latents need at least one slot")

    # Init pass: (the uncached rest of) [bos] Q <bot>, then <latent>×M. With T = 0 these
    # placeholders are the pause tokens.
    placeholder = torch.full((B, M), model.latent_token_id, dtype=torch.long, device=prefix_ids.device)
    embeds = model.embed(torch.cat([new_ids, placeholder], dim=1))
    out = model.decode(embeds, full_mask, full_pos[:, n_cached:], cache)
    passes = 1
    n_new = new_ids.shape[1]
    if observe is not None:
        observe(out.last_hidden_state[:, n_new : n_new + M])
    if cfg.num_iterations == 0:
        return LatentState(kv_of(out.cache), full_mask, next_position, kv_of(out.cache, Lp), embeds[:, n_new:], passes)

    prefix_kv = kv_of(out.cache, 0, Lp)
    # Slot i+1 receives the projected output of slot i; slot 1 the output at <bot>.
    z = model.project(out.last_hidden_state[:, n_new - 1 : n_new - 1 + M])
    for t in range(cfg.num_iterations):
        out = model.decode(z, full_mask, full_pos[:, Lp:], cache_of(prefix_kv))
        passes += 1
        if observe is not None:
            observe(out.last_hidden_state)
        if t < cfg.num_iterations - 1:
            z = torch.cat([z[:, :1], model.project(out.last_hidden_state[:, : M - 1])], dim=1)
    return LatentState(kv_of(out.cache), full_mask, next_position, kv_of(out.cache, Lp), z, passes)


def _sequential(model, new_ids, cache, full_mask, full_pos, M: int, observe: Observer | None) -> LatentState:
    """CODI-style: each latent is the projected last hidden state of the previous one (Coconut's
    continuous thought: the same, unprojected)."""
    Lp = full_mask.shape[1] - M
    n_cached = Lp - new_ids.shape[1]
    out = model.decode(model.embed(new_ids), full_mask[:, :Lp], full_pos[:, n_cached:Lp], cache)
    zs, hs = [], []
    z = model.project(out.last_hidden_state[:, -1:])
    for m in range(M):
        zs.append(z)
        out = model.decode(z, full_mask[:, : Lp + m + 1], full_pos[:, Lp + m : Lp + m + 1], out.cache)
        hs.append(out.last_hidden_state[:, -1:])
        if m < M - 1:
            z = model.project(hs[-1])
    if observe is not None and hs:
        observe(torch.cat(hs, 1))
    kv = kv_of(out.cache)
    latents = torch.cat(zs, 1) if zs else z[:, :0]
    return LatentState(kv, full_mask, full_pos[:, -1] + 1, kv_of(out.cache, Lp), latents, 1 + M)
