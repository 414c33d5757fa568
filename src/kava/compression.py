"""Teacher KV-cache compression (docs/method.md §4): keep M of the N_C CoT entries per layer and KV head.

All functions work on tensors stacked over layers, ``[L, B, H, S, ...]``, so batch, layers and
heads are handled in single tensor operations. Callers run them under ``torch.no_grad``: the
compressed cache is a stop-gradient target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

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


def attention_logits(
    queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, rows: torch.Tensor, scaling: float,
    *, softcap: float | None = None, windows: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """The causal attention scores (before the softmax) of the given query rows: [L, B, H_q, A, S]
    in float32, −inf where a row cannot see a column. Arguments as `answer_attention`."""
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
    return scores.masked_fill(~visible.view(-1, B, 1, A, S), NEG_INF)


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
    logits = attention_logits(queries, keys, key_mask, rows, scaling, softcap=softcap, windows=windows)
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)


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


@dataclass
class QueryRows:
    """The queries of chosen rows of the teacher pass and what their attention is recomputed from
    (the arguments of `answer_attention`): a rule asks for the rows' scores or probabilities, in
    chunks of rows when it reads many (H2O reads every row from the trace on)."""

    queries: torch.Tensor  # [L, B, H_q, A, d] post-RoPE
    rows: torch.Tensor  # [B, A] their columns
    row_mask: torch.Tensor  # [B, A] which slots are real rows
    keys: torch.Tensor  # [L, B, H_kv, S, d] as cached
    key_mask: torch.Tensor  # [B, S]
    scaling: float
    softcap: float | None = None
    windows: Sequence[int | None] | None = None

    def _args(self, rows: slice) -> tuple:
        return self.queries[:, :, :, rows], self.keys, self.key_mask, self.rows[:, rows], self.scaling

    def logits(self, rows: slice = slice(None)) -> torch.Tensor:
        """[L, B, H_q, a, S] scores before the softmax, −inf where not visible."""
        return attention_logits(*self._args(rows), softcap=self.softcap, windows=self.windows)

    def probabilities(self, rows: slice = slice(None)) -> torch.Tensor:
        """[L, B, H_q, a, S] the model's attention probabilities (softmax over the visible prefix)."""
        return answer_attention(*self._args(rows), softcap=self.softcap, windows=self.windows)


class RuleKnobs(Protocol):
    """The config knobs the reference rules read (`kava.config.KavaConfig` has them all)."""

    num_latents: int
    eviction_lambda: float
    rkv_window: int
    rkv_recent: int
    rkv_kernel: int
    rkv_threshold: float
    snapkv_window: int
    snapkv_kernel: int
    snapkv_pooling: str
    h2o_heavy_ratio: float
    streamingllm_sinks: int


@dataclass
class Signals:
    """What a scoring rule may read of one batch: its CoT mask, the captured query rows (when the
    rule asks for rows) and the keys the selection compares (``selection_key_space``)."""

    cot_mask: torch.Tensor  # [B, S] bool
    shape: tuple[int, int, int, int]  # (L, B, H_kv, S) of the scores
    queries: QueryRows | None = None
    keys: torch.Tensor | None = None  # [L, B, H_kv, S, d]


# The score of an entry a rule always keeps: finite, so `select_entries` counts it, and small enough
# that the shared scope's mean over layers and heads stays finite.
ALWAYS = 1e30


class _Trace:
    """A batch's CoT entries compacted to the front, in time order ([B, C], C = the longest N_C):
    the references score a contiguous sequence of candidates, and kava's C' sits at a different
    offset in every example of a left-padded batch."""

    def __init__(self, cot_mask: torch.Tensor):
        self.cols, self.valid = mask_columns(cot_mask)
        self.S = cot_mask.shape[1]
        self.n = self.valid.sum(-1, keepdim=True)  # [B, 1] N_C
        self.order = torch.arange(self.cols.shape[1], device=cot_mask.device).view(1, -1)  # k = 0 … C−1

    def last(self, r: int) -> torch.Tensor:
        """[B, C] the r most recent CoT entries of each example."""
        return self.valid & (self.order >= self.n - r)

    def first(self, r: int) -> torch.Tensor:
        return self.valid & (self.order < r)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """x [L, B, H, ..., S] read at the CoT columns: [L, B, H, ..., C]."""
        idx = self.cols.view(1, self.cols.shape[0], *[1] * (x.dim() - 3), -1)
        return x.gather(-1, idx.expand(*x.shape[:-1], self.cols.shape[1]))

    def spread(self, scores: torch.Tensor) -> torch.Tensor:
        """[L, B, H, C] back to [L, B, H, S]; columns outside C' (and unused slots) score −inf."""
        L, B, H, C = scores.shape
        to = torch.where(self.valid, self.cols, torch.full_like(self.cols, self.S)).view(1, B, 1, C)
        out = scores.new_full((L, B, H, self.S + 1), NEG_INF)  # column S collects the unused slots
        return out.scatter(3, to.expand(L, B, H, C), scores)[..., : self.S]


def _pool(x: torch.Tensor, kernel: int, pooling: str) -> torch.Tensor:
    """1-d pooling along the last axis with the references' padding (kernel // 2, stride 1)."""
    flat = x.reshape(-1, 1, x.shape[-1])
    pool = F.max_pool1d if pooling == "maxpool" else F.avg_pool1d
    return pool(flat, kernel_size=kernel, padding=kernel // 2, stride=1).view(x.shape)


def _last_answer_rows(window_of: Callable[[RuleKnobs], int]) -> Callable[[torch.Tensor, torch.Tensor, RuleKnobs], torch.Tensor]:
    """The last ``window`` answer rows of each example: the references' observation window (their
    most recent queries) is the teacher's last answer rows."""

    def rows(answer: torch.Tensor, cot: torch.Tensor, knobs: RuleKnobs) -> torch.Tensor:
        answer = answer.bool()
        from_end = answer.flip(-1).long().cumsum(-1).flip(-1)  # answer rows at or after each column
        return answer & (from_end <= window_of(knobs))

    return rows


def _rows_from_the_trace(answer: torch.Tensor, cot: torch.Tensor, knobs: RuleKnobs) -> torch.Tensor:
    """Every row from C' on (the trace's rows and P A [eos]): H2O accumulates the attention each
    entry receives from every later token; rows before C' cannot see it (causal)."""
    return cot.bool() | answer.bool()


def _rkv_official(sig: Signals, kn: RuleKnobs) -> torch.Tensor:
    """R-KV's own score (Zefan-Cai/R-KV, rkv/compression/r1_kv.py R1KV._compute_scores and
    rkv/utils.py compute_attention_scores / cal_similarity), with C' as its cache:

    - the observation window = the last ``rkv_window`` answer rows; the raw scores (softcap applied)
      are max-pooled over the query heads of each KV head (compute_attention_scores, pooling
      "max": GQA as the reference), softmaxed over the candidates only (C' less its recent
      entries), averaged over the window rows and max-pooled along C' (kernel ``rkv_kernel``);
    - redundancy over all N_C CoT keys (the selection keys): cosine with the diagonal zeroed, per
      row the last key with cos > ``rkv_threshold`` zeroed (column 0 when none, as the reference
      does), mean over the rows, softmax over the columns;
    - score λ·attention − (1−λ)·redundancy (λ = ``eviction_lambda``); the last ``rkv_recent`` CoT
      entries are always kept (R-KV keeps its window_size most recent tokens; kava's window rows
      are answer rows, never candidates, so the two are separate knobs).
    """
    tr = _Trace(sig.cot_mask)
    recent = tr.last(kn.rkv_recent)
    candidate = (tr.valid & ~recent).view(1, -1, 1, 1, tr.valid.shape[1])
    q = sig.queries
    L, B, H, S = sig.shape
    raw = q.logits()  # [L, B, Hq, A, S]
    raw = raw.view(L, B, H, raw.shape[2] // H, *raw.shape[3:]).amax(dim=3)  # max over the group, raw
    attn = torch.softmax(tr.take(raw).masked_fill(~candidate, NEG_INF), dim=-1).nan_to_num(0.0)
    w = q.row_mask.to(attn.dtype).view(1, B, 1, -1, 1)
    attn = (attn * w).sum(3) / w.sum(3).clamp(min=1)  # [L, B, H, C]
    attn = _pool(attn.masked_fill(~candidate.squeeze(3), NEG_INF), kn.rkv_kernel, "maxpool")

    keys = tr.take(sig.keys.transpose(-1, -2)).transpose(-1, -2)  # [L, B, H, C, d]
    kn_ = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    sim = kn_ @ kn_.transpose(-1, -2)  # [L, B, H, C, C]
    C = sim.shape[-1]
    sim = sim.masked_fill(torch.eye(C, dtype=torch.bool, device=sim.device), 0.0)
    pair = (tr.valid.view(B, C, 1) & tr.valid.view(B, 1, C)).view(1, B, 1, C, C)
    sim = sim * pair
    above = (sim > kn.rkv_threshold) & pair
    last = torch.where(above, tr.order.view(1, 1, 1, 1, C), torch.zeros_like(above, dtype=torch.long)).amax(-1)
    sim = sim.scatter(-1, last.unsqueeze(-1), 0.0)
    red = sim.sum(-2) / tr.n.view(1, B, 1, 1).clamp(min=1)
    red = torch.softmax(red.masked_fill(~tr.valid.view(1, B, 1, C), NEG_INF), dim=-1).nan_to_num(0.0)

    lam = kn.eviction_lambda
    score = attn * lam - red * (1 - lam)
    score = torch.where(candidate.squeeze(3), score, torch.full_like(score, NEG_INF))
    return tr.spread(torch.where(recent.view(1, B, 1, C), torch.full_like(score, ALWAYS), score))


def _snapkv(sig: Signals, kn: RuleKnobs) -> torch.Tensor:
    """SnapKV's score (FasterDecoding/SnapKV, snapkv/monkeypatch/snapkv_utils.py
    SnapKVCluster.update_kv): the attention probabilities of the observation window (the last
    ``snapkv_window`` answer rows; softmax over the whole visible prefix) summed over its rows,
    read at C' and pooled along C' (``snapkv_pooling``, kernel ``snapkv_kernel``; C' ends where
    the reference's sequence would, zero- or −inf-padded as avg/max pooling pad), per query head.
    GQA: the reference scores repeated KV heads, one selection per query head; kava keeps one per
    KV head, so it averages the group's pooled scores. No entry is always kept: SnapKV keeps its
    window because the window is the prompt's end, and kava's window rows are answer rows.
    """
    tr = _Trace(sig.cot_mask)
    q = sig.queries
    L, B, H, S = sig.shape
    probs = q.probabilities()  # [L, B, Hq, A, S]
    summed = (probs * q.row_mask.to(probs.dtype).view(1, B, 1, -1, 1)).sum(3)  # [L, B, Hq, S]
    fill = NEG_INF if kn.snapkv_pooling == "maxpool" else 0.0
    pooled = _pool(tr.take(summed).masked_fill(~tr.valid.view(1, B, 1, -1), fill), kn.snapkv_kernel, kn.snapkv_pooling)
    return tr.spread(pooled.view(L, B, H, -1, pooled.shape[-1]).mean(dim=3))


H2O_CHUNK = 16  # query rows per attention block: H2O reads every row from C' on, [L, B, H_q, 16, S] at a time


def _h2o(sig: Signals, kn: RuleKnobs) -> torch.Tensor:
    """H2O's heavy hitters (FMInference/H2O, h2o_hf/utils_real_drop/modify_llama.py
    H2OKVCache_LayerWise): each CoT entry's attention probability accumulated over every query
    row after it (C' and P A [eos]; `_rows_from_the_trace`), computed in blocks of rows so no
    [.., S, S] map is built. The last M − int(M·``h2o_heavy_ratio``) CoT entries are kept as
    the recent window; the int(M·ratio) heavy hitters are the top accumulated scores among the
    rest. GQA: the reference accumulates per query head (its cache code assumes as many KV
    heads); kava sums the group's query heads, the attention each KV entry receives in total.
    """
    tr = _Trace(sig.cot_mask)
    q = sig.queries
    L, B, H, S = sig.shape
    acc = torch.zeros(L, B, q.queries.shape[2], S, device=q.keys.device)
    for start in range(0, q.rows.shape[1], H2O_CHUNK):
        rows = slice(start, start + H2O_CHUNK)
        acc += (q.probabilities(rows) * q.row_mask[:, rows].to(acc.dtype).view(1, B, 1, -1, 1)).sum(3)
    heavy = tr.take(acc.view(L, B, H, -1, S).sum(dim=3))  # [L, B, H, C]
    recent = tr.last(kn.num_latents - int(kn.num_latents * kn.h2o_heavy_ratio)).view(1, B, 1, -1)
    return tr.spread(torch.where(recent, torch.full_like(heavy, ALWAYS), heavy))


def _streamingllm(sig: Signals, kn: RuleKnobs) -> torch.Tensor:
    """StreamingLLM (mit-han-lab/streaming-llm, streaming_llm/kv_cache.py StartRecentKVCache): the
    first ``streamingllm_sinks`` CoT entries (the attention sinks) and the most recent M − sinks.
    Reads no model signal; the same entries in every layer and head."""
    tr = _Trace(sig.cot_mask)
    L, B, H, S = sig.shape
    kept = tr.first(kn.streamingllm_sinks) | tr.last(kn.num_latents - kn.streamingllm_sinks)
    return tr.spread(kept.float().view(1, B, 1, -1).expand(L, B, H, -1))


@dataclass(frozen=True)
class EvictionVariant:
    """How one eviction variant scores CoT entries: S = λ·I + (1−λ)·R with its own λ (None: the
    config's ``eviction_lambda``), a score that reads no model signal (``fixed``), or a rule of
    its own (``rule``: a published method's score from `Signals` and the config's knobs, with
    ``rows`` naming the query rows whose attention it reads, as a [B, S] mask from the answer
    mask, the CoT mask and the knobs)."""

    lam: float | None = None
    fixed: Callable[[tuple[int, ...], torch.Tensor, Sequence[int] | None], torch.Tensor] | None = None
    rule: Callable[[Signals, RuleKnobs], torch.Tensor] | None = None
    rows: Callable[[torch.Tensor, torch.Tensor, RuleKnobs], torch.Tensor] | None = None

    def weight(self, lam: float) -> float:
        return lam if self.lam is None else self.lam

    def needs_importance(self, lam: float) -> bool:
        return self.fixed is None and self.rule is None and self.weight(lam) > 0

    def needs_redundancy(self, lam: float) -> bool:
        return self.fixed is None and self.rule is None and self.weight(lam) < 1

    def query_rows(self, answer: torch.Tensor, cot: torch.Tensor, knobs: RuleKnobs) -> torch.Tensor | None:
        """[B, S] the rows whose queries the teacher pass keeps for this variant; None: none."""
        if self.rule is not None:
            return None if self.rows is None else self.rows(answer, cot, knobs)
        return answer.bool() if self.needs_importance(knobs.eviction_lambda) else None


# Every eviction variant (docs/method.md §4), by its config name; the config's allowed names come from here.
EVICTIONS: dict[str, EvictionVariant] = {
    "rkv": EvictionVariant(),
    "importance": EvictionVariant(lam=1.0),
    "redundancy": EvictionVariant(lam=0.0),
    "crop": EvictionVariant(fixed=_crop),
    "random": EvictionVariant(fixed=_random),
    # Published eviction rules, each scored as its reference code does (docs/method.md §4)
    "rkv-official": EvictionVariant(rule=_rkv_official, rows=_last_answer_rows(lambda kn: kn.rkv_window)),
    "snapkv": EvictionVariant(rule=_snapkv, rows=_last_answer_rows(lambda kn: kn.snapkv_window)),
    "h2o": EvictionVariant(rule=_h2o, rows=_rows_from_the_trace),
    "streamingllm": EvictionVariant(rule=_streamingllm),
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
    signals: Signals | None = None,
    knobs: RuleKnobs | None = None,
) -> torch.Tensor:
    """Per-entry keep score [L, B, H, S] for an eviction variant of `EVICTIONS` (higher = keep);
    ``importance`` / ``redundancy`` are needed where the variant says so, ``seeds`` (one per example)
    by ``random``, ``signals`` and ``knobs`` by a rule."""
    if eviction not in EVICTIONS:
        raise ValueError(f"unknown eviction {eviction!r}")
    variant = EVICTIONS[eviction]
    shape = (n_layers, cot_mask.shape[0], n_kv_heads, cot_mask.shape[1])
    if variant.rule is not None:
        if signals is None or knobs is None:
            raise ValueError(f"eviction {eviction!r} scores from the batch's signals and the config's knobs")
        return variant.rule(signals, knobs)
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
    # A stable sort, not topk: ties (pooled scores repeat a local maximum) go to the earlier entry,
    # the same way every run (topk leaves the order of ties unspecified).
    top_vals, top_idx = (t[..., :k] for t in scores.sort(dim=-1, descending=True, stable=True))
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
