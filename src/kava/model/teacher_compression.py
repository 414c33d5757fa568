"""The teacher's side of KaVa: one pass over ``[bos] Q C' P A [eos]`` and the stop-gradient targets
the student is distilled towards (docs/method.md §4–§5).

The pass gives the teacher's own CE (with gradient), the distillation hidden states at the last
token of P (L_CODI) and, through the eviction of `kava.compression`, the M kept CoT cache entries
per layer and KV head (L_KV). `KavaModel.forward` runs it as half of a training step; inspection and
the teacher-cache oracle call `teacher_targets` to see the very targets training uses.

It is its own module so that what reads these targets (inspection, the oracle, benchmarks) depends
on the compression alone, not on the whole model class. It reaches the model through `Teacher`, a
structural type: kava_model imports this module, never the reverse.
"""

from __future__ import annotations

import zlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

from kava import compression
from kava.config import KavaConfig
from kava.model.sequences import positions_from_mask
from kava.losses import token_ce
from kava.model import arch
from kava.model.cache import KV, kv_of, stack
from kava.model.queries import capture_queries
from kava.model.rope import rotate, unrotate_keys


@dataclass
class CompressedKV:
    """The teacher's kept CoT entries: M per layer and KV head (docs/method.md §4)."""

    k: torch.Tensor  # [L, B, H, M, d] keys in the space L_KV compares (kv_key_space)
    k_cached: torch.Tensor  # the same entries as the cache holds them (post-RoPE)
    v: torch.Tensor  # [L, B, H, M, d]
    slot_mask: torch.Tensor  # [B, M] slots matched with a real CoT entry
    indices: torch.Tensor  # [L, B, H, M] their columns in the teacher sequence, ascending


@dataclass
class TeacherTargets:
    """The stop-gradient targets of one batch: what the student's distillation terms compare against."""

    kv: CompressedKV | None = None  # when L_KV is on
    distill_hidden: torch.Tensor | None = None  # [L, B, D] at the last token of P, when L_CODI is on


class Teacher(Protocol):
    """What the teacher pass uses of a `KavaModel`."""

    config: KavaConfig
    lm: PreTrainedModel
    arch: arch.Architecture
    n_layers: int
    n_kv_heads: int

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def decode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
               cache: DynamicCache, *, hidden_states: bool = False) -> Any: ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def rotaries(self) -> list[arch.Rotary]: ...

    def dropout(self, on: bool) -> AbstractContextManager[None]: ...

    def span(self, name: str) -> AbstractContextManager: ...


def states_at(hidden_states: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
    """Every transformer layer's hidden state at one position per example: [L, B, D].

    Each layer's position is picked before stacking: stacking whole layers first would build an
    [L, B, S, D] copy (46 MB per pass on SmolLM2, a fresh mmap and its page faults every call)."""
    rows = torch.arange(index.shape[0], device=index.device)
    return torch.stack([h[rows, index] for h in hidden_states[1:]])  # index 0 is the embedding output


def example_seeds(ids: torch.Tensor, mask: torch.Tensor, seed: int) -> list[int]:
    """A seed per example from its own tokens (padding excluded) and the config seed: the same
    example always draws the same numbers, whatever it is batched with."""
    return [zlib.crc32(row[keep].cpu().numpy().tobytes(), seed) for row, keep in zip(ids, mask.bool())]


def teacher_targets(model: Teacher, batch: dict[str, torch.Tensor], config: KavaConfig | None = None) -> TeacherTargets:
    """The stop-gradient targets of one batch as the losses see them, without running the student;
    under ``config`` (e.g. another M or eviction) instead of the model's own when given."""
    return teacher_pass(model, batch, config or model.config)[0]


def teacher_pass(model: Teacher, batch: dict[str, torch.Tensor], cfg: KavaConfig) -> tuple[TeacherTargets, torch.Tensor, KV]:
    """Teacher pass: per-example CE with gradient; compressed KV and distillation states as
    stop-grad targets.

    Also returns the pass's cache, still in the graph, for the student to reuse over ``[bos] Q``.
    """
    mask = batch["t_attention_mask"]
    pos = positions_from_mask(mask)
    need_kv = cfg.alpha_kv > 0 and cfg.uses_student
    need_hidden = cfg.alpha_codi > 0 and cfg.uses_student
    row_mask_full = compression.EVICTIONS[cfg.eviction].query_rows(
        batch["t_answer_mask"], batch["t_cot_mask"], cfg) if need_kv else None
    capture = nullcontext(None)
    if row_mask_full is not None:
        rows, row_mask = compression.mask_columns(row_mask_full)
        capture = capture_queries(model.lm.get_decoder(), rows, model.arch.query_module, model.arch.query_heads_first)
    with model.span("teacher"), model.dropout(cfg.teacher_dropout):
        with capture as queries:
            res = model.decode(model.embed(batch["t_input_ids"]), mask, pos, DynamicCache(), hidden_states=need_hidden)
        ce = token_ce(res.last_hidden_state, batch["t_input_ids"], batch["t_ce_mask"], model.logits)
    targets = TeacherTargets()
    with torch.no_grad():
        if need_hidden:
            targets.distill_hidden = states_at(res.hidden_states, batch["t_distill_index"]).detach()
        if need_kv:
            answer_queries = (queries, rows, row_mask) if row_mask_full is not None else None
            with model.span("eviction"):
                targets.kv = compress(model, res, batch, pos, answer_queries, cfg)
    return targets, ce, kv_of(res.cache)


def query_rows(model: Teacher, queries: list[torch.Tensor], rows: torch.Tensor, row_mask: torch.Tensor,
               cached: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> compression.QueryRows:
    """The kept rows' queries (rotated as the attention saw them) with what their attention is
    recomputed from: the model's scaling, soft-capping and sliding windows."""
    decoder = model.lm.get_decoder()
    attn_layer = decoder.layers[0].self_attn
    B, A = rows.shape
    q = torch.stack(queries).view(model.n_layers, B, A, -1, attn_layer.head_dim).transpose(2, 3)
    q = rotate(q, pos.gather(1, rows), model.rotaries())  # [L, B, H_q, A, d]
    config = model.lm.config
    return compression.QueryRows(q, rows, row_mask, cached, mask, attn_layer.scaling,
                                 softcap=arch.attention_softcap(config), windows=arch.sliding_windows(config))


def compress(model: Teacher, res: Any, batch: dict[str, torch.Tensor], pos: torch.Tensor,
             answer_queries: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor] | None,
             cfg: KavaConfig) -> CompressedKV:
    """The M kept entries per layer and KV head of the teacher pass ``res``; ``answer_queries`` =
    (queries, rows, row_mask) from `capture_queries` when the eviction reads query rows."""
    cot = batch["t_cot_mask"]
    cached, values = (t.detach() for t in stack(kv_of(res.cache)))  # [L, B, H, S, d]
    unrotated = unrotate_keys(cached, pos, model.rotaries()) if "pre_rope" in (
        cfg.kv_key_space, cfg.selection_key_space) else None
    keys = unrotated if cfg.kv_key_space == "pre_rope" else cached  # the space L_KV compares in
    variant = compression.EVICTIONS[cfg.eviction]
    selection_keys = unrotated if cfg.selection_key_space == "pre_rope" else cached
    rows = query_rows(model, *answer_queries, cached, batch["t_attention_mask"], pos) if answer_queries else None
    importance = redundancy = None
    if variant.needs_importance(cfg.eviction_lambda):
        importance = compression.importance_scores(rows.probabilities(), rows.row_mask, model.n_kv_heads)
    if variant.needs_redundancy(cfg.eviction_lambda):
        redundancy = compression.redundancy_scores(selection_keys, cot)
    seeds = example_seeds(batch["t_input_ids"], batch["t_attention_mask"], cfg.seed) if cfg.eviction == "random" else None
    signals = compression.Signals(cot, (model.n_layers, cot.shape[0], model.n_kv_heads, cot.shape[1]), rows, selection_keys)
    scores = compression.eviction_scores(
        cfg.eviction, cot, model.n_layers, model.n_kv_heads, importance=importance, redundancy=redundancy,
        lam=cfg.eviction_lambda, seeds=seeds, signals=signals, knobs=cfg,
    )
    if cfg.eviction_scope == "shared":
        scores = scores.mean(dim=(0, 2), keepdim=True).expand_as(scores)
    sel = compression.select_entries(scores, cot, cfg.num_latents)
    k = compression.gather_entries(keys, sel)
    return CompressedKV(
        k=k,
        k_cached=k if keys is cached else compression.gather_entries(cached, sel),
        v=compression.gather_entries(values, sel),
        slot_mask=sel.slot_mask,
        indices=sel.indices,
    )
