"""Teacher KV-cache compression (docs/method.md §4): keep M of the N_C CoT entries per layer and KV head.

All functions work on tensors stacked over layers, ``[L, B, H, S, ...]``, so batch, layers and
heads are handled in single tensor operations. Callers run them under ``torch.no_grad``: the
compressed cache is a stop-gradient target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def importance_scores(attentions: torch.Tensor, answer_mask: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """I_i = mean over answer query rows j of a_{j,i}; max over the query heads of each KV head.

    attentions: [L, B, Hq, J, S] softmax probabilities of J query rows; answer_mask: [B, J] bool,
    which of those rows are answer rows (all rows of an `answer_attention` result, or a row mask).
    Returns [L, B, H_kv, S]. Transformers maps query head q to KV head q // (Hq / H_kv), so a
    reshape to [.., H_kv, G, ..] groups exactly the heads that share a KV head.
    """
    L, B, Hq, _, S = attentions.shape
    w = answer_mask.to(attentions.dtype)
    imp = torch.einsum("lbhjs,bj->lbhs", attentions, w) / w.sum(-1).clamp(min=1).view(1, B, 1, 1)
    return imp.view(L, B, n_kv_heads, Hq // n_kv_heads, S).amax(dim=3)


def mask_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True columns of each row, in order, as indices [B, A] (A = the most any row has) and
    which of those slots are real; unused slots point at column 0."""
    B, S = mask.shape
    mask = mask.bool()
    counts = mask.sum(-1)
    A = max(int(counts.max()), 1)
    cols = torch.arange(S, device=mask.device)
    idx = torch.argsort(torch.where(mask, cols, cols + S), dim=-1)[:, :A]  # True columns first, in order
    valid = torch.arange(A, device=mask.device).view(1, A) < counts.view(B, 1)
    return torch.where(valid, idx, torch.zeros_like(idx)), valid


def answer_attention(
    queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, rows: torch.Tensor, scaling: float,
    *, softcap: float | None = None, windows: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """The causal attention probabilities of the given query rows, recomputed from their queries.

    queries: [L, B, H_q, A, d] post-RoPE at columns ``rows`` [B, A]; keys: [L, B, H_kv, S, d] as
    cached (post-RoPE); key_mask: [B, S] padding mask. Returns [L, B, H_q, A, S] in float32, the
    rows an eager attention layer would return (query head q reads KV head q // (H_q / H_kv)).
    ``softcap`` caps the scores as c·tanh(s / c) (Gemma 2); ``windows`` gives each layer's sliding
    window (None: full attention), over columns as the model's own mask does.
    Rows with no visible key (unused slots) come back as zeros.
    """
    L, B, Hq, A, d = queries.shape
    H, S = keys.shape[2], keys.shape[3]
    grouped = queries.float().reshape(L, B, H, (Hq // H) * A, d)  # the query heads of each KV head
    scores = (grouped @ keys.float().transpose(-1, -2)).view(L, B, Hq, A, S) * scaling
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    behind = rows.unsqueeze(-1) - torch.arange(S, device=keys.device).view(1, 1, S)  # [B, A, S]: row − column
    visible = key_mask.bool().unsqueeze(1) & (behind >= 0)
    if windows is not None and any(w is not None for w in windows):
        span = torch.tensor([S if w is None else w for w in windows], device=keys.device).view(L, 1, 1, 1)
        visible = visible.unsqueeze(0) & (behind.unsqueeze(0) < span)  # [L, B, A, S]
    scores = scores.masked_fill(~visible.view(-1, B, 1, A, S), NEG_INF)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def redundancy_scores(keys: torch.Tensor, cot_mask: torch.Tensor) -> torch.Tensor:
    """R_i = softmax_i( −(1/N_C) Σ_{j≠i} cos(k_i, k_j) ) over the CoT keys of each head.

    keys: [L, B, H, S, d]; cot_mask: [B, S] bool. Only the CoT window is compared (N_C × N_C per
    head, not S × S); non-CoT positions get 0.
    """
    L, B, H, S, d = keys.shape
    cols, valid = mask_columns(cot_mask)  # [B, C]
    C = cols.shape[1]
    kc = keys.float().gather(3, cols.view(1, B, 1, C, 1).expand(L, B, H, C, d))
    kn = torch.nn.functional.normalize(kc, dim=-1)
    sim = kn @ kn.transpose(-1, -2)  # [L, B, H, C, C]
    m = valid.to(sim.dtype).view(1, B, 1, 1, C)
    n_c = valid.sum(-1).clamp(min=1).to(sim.dtype).view(1, B, 1, 1)
    off_diag = (sim * m).sum(-1) - sim.diagonal(dim1=-2, dim2=-1) * m.squeeze(-2)
    logits = (-off_diag / n_c).masked_fill(~valid.view(1, B, 1, C), NEG_INF)
    window = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # an example with N_C = 0 gives all zeros
    return window.new_zeros(L, B, H, S).scatter_add(3, cols.view(1, B, 1, C).expand(L, B, H, C), window)


@dataclass
class Selection:
    indices: torch.Tensor  # [L, B, H, M] kept positions, ascending; invalid slots hold 0
    slot_mask: torch.Tensor  # [B, M] True where slot m is matched with a real CoT entry


def _crop(shape: tuple[int, ...], cot_mask: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
    """Keep the first M CoT entries (the earliest score highest)."""
    return (-torch.arange(shape[-1], device=cot_mask.device, dtype=torch.float)).expand(shape)


def _random(shape: tuple[int, ...], cot_mask: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
    """Uniform scores over each example's own CoT entries, drawn from that example's seed: its kept
    set depends on nothing else in the batch (not its mates, not the padding)."""
    if seeds is None or len(seeds) != shape[1]:
        raise ValueError("random eviction needs one seed per example")
    L, B, H, S = shape
    scores = torch.zeros(shape)
    cot = cot_mask.cpu()
    for b, seed in enumerate(seeds):  # one generator per example; an ablation, not a hot path
        cols = cot[b].nonzero().flatten()
        scores[:, b][:, :, cols] = torch.rand(L, H, len(cols), generator=torch.Generator().manual_seed(seed))
    return scores.to(cot_mask.device)


@dataclass(frozen=True)
class EvictionVariant:
    """How one eviction variant scores CoT entries: S = λ·I + (1−λ)·R with its own λ (None: the
    config's ``eviction_lambda``), or a score that reads no model signal (``fixed``)."""

    lam: float | None = None
    fixed: Callable[[tuple[int, ...], torch.Tensor, Sequence[int] | None], torch.Tensor] | None = None

    def weight(self, lam: float) -> float:
        return lam if self.lam is None else self.lam

    def needs_importance(self, lam: float) -> bool:
        return self.fixed is None and self.weight(lam) > 0

    def needs_redundancy(self, lam: float) -> bool:
        return self.fixed is None and self.weight(lam) < 1


# Every eviction variant (docs/method.md §4), by its config name; the config's allowed names come from here.
EVICTIONS: dict[str, EvictionVariant] = {
    "rkv": EvictionVariant(),
    "importance": EvictionVariant(lam=1.0),
    "redundancy": EvictionVariant(lam=0.0),
    "crop": EvictionVariant(fixed=_crop),
    "random": EvictionVariant(fixed=_random),
}


def eviction_scores(
    eviction: str,
    cot_mask: torch.Tensor,
    n_layers: int,
    n_kv_heads: int,
    *,
    importance: torch.Tensor | None = None,
    redundancy: torch.Tensor | None = None,
    lam: float = 0.1,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-entry keep score [L, B, H, S] for an eviction variant of `EVICTIONS` (higher = keep);
    ``importance`` / ``redundancy`` are needed where the variant says so, ``seeds`` (one per example)
    by ``random``."""
    if eviction not in EVICTIONS:
        raise ValueError(f"unknown eviction {eviction!r}")
    variant = EVICTIONS[eviction]
    shape = (n_layers, cot_mask.shape[0], n_kv_heads, cot_mask.shape[1])
    if variant.fixed is not None:
        return variant.fixed(shape, cot_mask, seeds)
    w = variant.weight(lam)
    score = torch.zeros(shape, device=cot_mask.device)
    if variant.needs_importance(lam):
        score = score + w * importance
    if variant.needs_redundancy(lam):
        score = score + (1 - w) * redundancy
    return score


def select_entries(scores: torch.Tensor, cot_mask: torch.Tensor, m: int) -> Selection:
    """Top-M CoT entries per (layer, example, head), sorted by position; never a padded one.

    Slot k is matched with the k-th kept entry in time order. When N_C < M, the first N_C
    slots are matched and the rest are masked out of the KV loss.
    """
    L, B, H, S = scores.shape
    valid = cot_mask.view(1, B, 1, S).expand_as(scores)
    scores = scores.float().masked_fill(~valid, NEG_INF)
    k = min(m, S)
    top_vals, top_idx = scores.topk(k, dim=-1)
    kept = torch.isfinite(top_vals)
    # Sort kept indices by position; push unkept ones (when N_C < M) past the end.
    order_key = torch.where(kept, top_idx, top_idx.new_full((), S))
    sorted_idx, _ = order_key.sort(dim=-1)
    n_keep = cot_mask.sum(-1).clamp(max=m)  # [B]
    slot_mask = torch.arange(m, device=scores.device).view(1, m) < n_keep.view(B, 1)
    if k < m:
        sorted_idx = torch.cat([sorted_idx, sorted_idx.new_full((L, B, H, m - k), S)], dim=-1)
    indices = torch.where(sorted_idx >= S, torch.zeros_like(sorted_idx), sorted_idx)
    return Selection(indices=indices, slot_mask=slot_mask)


def gather_entries(x: torch.Tensor, sel: Selection) -> torch.Tensor:
    """x: [L, B, H, S, d] → [L, B, H, M, d] at the selected positions; masked slots are zeros."""
    idx = sel.indices.unsqueeze(-1).expand(*sel.indices.shape, x.shape[-1])
    out = x.gather(3, idx)
    return out * sel.slot_mask.view(1, *sel.slot_mask.shape[:1], 1, -1, 1).to(out.dtype)
