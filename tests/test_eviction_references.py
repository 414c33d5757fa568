"""The published eviction rules of `kava.compression.EVICTIONS` against transcriptions of their
reference code, on random tensors: a left-padded batch, 2 layers, 4 query heads on 2 KV heads.

Each reference runs on one example alone, unpadded, with C' as its cache (the mapping of
docs/method.md §4: observation window = the last answer rows, recent = the last CoT entries,
sinks = the first ones); kava runs on the padded batch. The kept CoT positions must be identical
for every layer, example and KV head.

The transcriptions are test-only and stay close to the original text; where one had to change it
says so. One change is common: ``torch.topk`` becomes `_topk` (a stable sort), because max-pooled
scores repeat a local maximum and topk leaves the order of ties unspecified; kava's
`select_entries` breaks ties the same way (the earlier entry first).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kava import compression
from kava.config import ConfigError, preset

L, HQ, HKV, D, M = 2, 4, 2, 8, 8
# (question length, N_C, answer rows) per example; the last has N_C < M
EXAMPLES = [(3, 20, 6), (5, 14, 5), (2, 5, 6)]


def _topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """torch.topk(x, k).indices with ties to the earlier entry (see the module docstring)."""
    return x.sort(dim=-1, descending=True, stable=True).indices[..., :k]


# ---- R-KV: Zefan-Cai/R-KV, rkv/utils.py and rkv/compression/r1_kv.py ------------------------------
def compute_attention_scores(query_states, key_states, pooling="max"):
    batch_size, q_heads, q_len, head_dim = query_states.shape
    kv_heads = key_states.shape[1]
    query_group_size = q_heads // kv_heads

    if query_group_size == 1:
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(head_dim)
    else:
        query_states = query_states.view(batch_size, kv_heads, query_group_size, q_len, head_dim)
        key_states = key_states.unsqueeze(2)
        attn_weights = torch.matmul(query_states, key_states.transpose(3, 4)) / math.sqrt(head_dim)
        if pooling == "mean":
            attn_weights = attn_weights.mean(dim=2)
        elif pooling == "max":
            attn_weights = attn_weights.max(dim=2).values
        else:
            raise ValueError("Pooling method not supported")

    return attn_weights


def cal_similarity(key_states, threshold=0.5, retain_ratio=0.2, retain_direction="last"):
    _, _, seq_len, _ = key_states.shape

    k_norm = key_states / (key_states.norm(dim=-1, keepdim=True) + 1e-8)
    similarity_cos = torch.matmul(k_norm, k_norm.transpose(-1, -2))
    diag = torch.eye(seq_len, dtype=torch.bool, device=key_states.device)
    similarity_cos.masked_fill_(diag.view(1, 1, seq_len, seq_len), 0.0)

    similarity_mask = similarity_cos > threshold
    indices = torch.where(
        similarity_mask,
        torch.arange(seq_len, device=similarity_mask.device).view(1, 1, 1, seq_len),
        torch.zeros_like(similarity_mask, dtype=torch.long),
    )
    assert retain_direction == "last"  # R1KV's default; the other directions are not transcribed
    similarity_retain = torch.max(indices, dim=-1)[0]

    similarity_cos.scatter_(-1, similarity_retain.unsqueeze(-1), 0)
    return similarity_cos.mean(dim=-2).softmax(dim=-1)


class R1KV:
    def __init__(self, budget=128, window_size=8, kernel_size=7, mix_lambda=0.07, retain_ratio=0.1,
                 retain_direction="last", threshold=0.5):
        assert budget - window_size > 0, "budget must be greater than window_size"
        self.budget = budget
        self.window_size = window_size
        self.kernel_size = kernel_size
        self.mix_lambda = mix_lambda
        self.retain_ratio = retain_ratio
        self.retain_direction = retain_direction
        self.threshold = threshold  # cal_similarity's keyword, exposed (R1KV calls it with the default 0.5)

    def _compute_scores(self, key_states, query_states):
        attn_weights = compute_attention_scores(query_states, key_states)
        attn_weights_sum = (
            nn.functional.softmax(attn_weights[:, :, -self.window_size:, : -self.window_size], dim=-1, dtype=torch.float32)
            .mean(dim=-2)
            .to(query_states.dtype)
        )
        attn_cache = F.max_pool1d(attn_weights_sum, kernel_size=self.kernel_size, padding=self.kernel_size // 2, stride=1)
        similarity_cos = cal_similarity(key_states, threshold=self.threshold, retain_ratio=self.retain_ratio,
                                        retain_direction=self.retain_direction)[:, :, : -self.window_size]
        final_score = attn_cache * self.mix_lambda - similarity_cos * (1 - self.mix_lambda)
        return final_score, attn_weights

    def update_kv(self, key_states, query_states, value_states):
        head_dim = query_states.shape[-1]
        kv_cache_len = key_states.shape[-2]

        if kv_cache_len < self.budget:
            return key_states, value_states
        final_score, attn_weights = self._compute_scores(key_states, query_states)
        indices = _topk(final_score, self.budget - self.window_size)  # .topk(...).indices in the original
        indices = indices.unsqueeze(-1).expand(-1, -1, -1, head_dim)
        k_past_compress = key_states[:, :, : -self.window_size, :].gather(dim=2, index=indices)
        v_past_compress = value_states[:, :, : -self.window_size, :].gather(dim=2, index=indices)
        k_cur = key_states[:, :, -self.window_size:, :]
        v_cur = value_states[:, :, -self.window_size:, :]
        key_states = torch.cat([k_past_compress, k_cur], dim=2)
        value_states = torch.cat([v_past_compress, v_cur], dim=2)
        return key_states, value_states


# ---- SnapKV: FasterDecoding/SnapKV, snapkv/monkeypatch/snapkv_utils.py -----------------------------
def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def snapkv_scores(key_states, query_states, window_size, kernel_size, pooling, candidates):
    """SnapKVCluster.update_kv up to ``attn_cache`` (the hijack passes repeat_kv'd keys). Changed: the
    summed attention is read at ``candidates`` (C') before pooling, the original pools all of
    [:-window_size]; the selection (topk per head) follows in the test, per KV head."""
    bsz, num_heads, q_len, head_dim = query_states.shape
    attn_weights = torch.matmul(query_states[..., -window_size:, :], key_states.transpose(2, 3)) / math.sqrt(head_dim)
    mask = torch.full((window_size, window_size), torch.finfo(attn_weights.dtype).min, device=attn_weights.device)
    mask_cond = torch.arange(mask.size(-1), device=attn_weights.device)
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    attention_mask = mask[None, None, :, :]
    attn_weights[:, :, -window_size:, -window_size:] += attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
    attn_weights_sum = attn_weights[:, :, -window_size:, : -window_size].sum(dim=-2)
    attn_weights_sum = attn_weights_sum[..., candidates]  # the mapping: C' only
    if pooling == "avgpool":
        attn_cache = F.avg_pool1d(attn_weights_sum, kernel_size=kernel_size, padding=kernel_size // 2, stride=1)
    elif pooling == "maxpool":
        attn_cache = F.max_pool1d(attn_weights_sum, kernel_size=kernel_size, padding=kernel_size // 2, stride=1)
    else:
        raise ValueError("Pooling method not supported")
    return attn_cache


# ---- H2O: FMInference/H2O, h2o_hf/utils_real_drop/modify_llama.py ---------------------------------
class H2OKVCache_LayerWise:
    def __init__(self, hh_size=4, recent_size=512, k_seq_dim=2, v_seq_dim=2):
        self.hh_size = hh_size
        self.recent_size = recent_size
        self.cache_size = hh_size + recent_size
        self.k_seq_dim = k_seq_dim
        self.v_seq_dim = v_seq_dim
        self.hh_score = None

    def __call__(self, past_key_values, attn_score_cache):
        self._update_hh_score(attn_score_cache)
        if past_key_values is None:
            return None
        seq_len = past_key_values[0].size(self.k_seq_dim)
        if seq_len <= self.cache_size:
            return past_key_values

        bsz, num_heads, _, head_dim = past_key_values[0].shape
        select_hh_scores = self.hh_score[:, :seq_len - self.recent_size]
        _, keep_topk = torch.topk(select_hh_scores, self.hh_size, dim=-1)
        keep_topk = keep_topk.sort().values
        keep_recent = torch.arange(seq_len - self.recent_size, seq_len, device=keep_topk.device).repeat(keep_topk.shape[0], 1)
        keep_idx = torch.cat([keep_topk, keep_recent], dim=-1)
        mask = torch.zeros(self.hh_score.shape, dtype=torch.bool).to(past_key_values[0].device)
        mask = mask.scatter(-1, keep_idx, 1)
        k_hh_recent = past_key_values[0].squeeze()[mask].view(bsz, num_heads, -1, head_dim)
        v_hh_recent = past_key_values[1].squeeze()[mask].view(bsz, num_heads, -1, head_dim)
        self.hh_score = self.hh_score[mask].view(num_heads, self.cache_size)
        return (k_hh_recent, v_hh_recent)

    def _update_hh_score(self, attn_score_cache):
        num_new_tokens = attn_score_cache.shape[2]
        if self.hh_score is None:
            self.hh_score = attn_score_cache.sum(0).sum(1)
        else:
            attn_score_cache = attn_score_cache.sum(0).sum(1)
            attn_score_cache[:, :-num_new_tokens] += self.hh_score
            self.hh_score = attn_score_cache


def h2o_attention(query_states, key_states):
    """H2OLlamaAttention.forward's probabilities on a prefill: repeat_kv, scaled scores plus the
    causal mask of _make_causal_mask, softmax in float32."""
    bsz, num_heads, q_len, head_dim = query_states.shape
    key_states = repeat_kv(key_states, num_heads // key_states.shape[1])
    attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(head_dim)
    mask = torch.full((q_len, q_len), torch.finfo(attn_weights.dtype).min)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    attn_weights = attn_weights + mask[None, None]
    return nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32)


# ---- StreamingLLM: mit-han-lab/streaming-llm, streaming_llm/kv_cache.py --------------------------
class StartRecentKVCache:
    def __init__(self, start_size=4, recent_size=512, k_seq_dim=2, v_seq_dim=2):
        self.start_size = start_size
        self.recent_size = recent_size
        self.cache_size = start_size + recent_size
        self.k_seq_dim = k_seq_dim
        self.v_seq_dim = v_seq_dim

    def __call__(self, past_key_values):
        if past_key_values is None:
            return None
        seq_len = past_key_values[0][0].size(self.k_seq_dim)
        if seq_len <= self.cache_size:
            return past_key_values
        return [
            [
                torch.cat([k[:, :, 0:self.start_size], k[:, :, seq_len - self.recent_size:seq_len]], dim=self.k_seq_dim),
                torch.cat([v[:, :, 0:self.start_size], v[:, :, seq_len - self.recent_size:seq_len]], dim=self.v_seq_dim),
            ]
            for k, v in past_key_values
        ]


# ---- the batch ----------------------------------------------------------------------------------
class Batch:
    """Random post-RoPE queries and keys over a left-padded batch of [Q C' P A] examples."""

    def __init__(self, examples=EXAMPLES, seed=0):
        g = torch.Generator().manual_seed(seed)
        lengths = [sum(e) for e in examples]
        S = max(lengths)
        B = len(examples)
        self.q = torch.randn(L, B, HQ, S, D, generator=g)
        self.k = torch.randn(L, B, HKV, S, D, generator=g)
        self.k[..., :3] += 1.5 * torch.randn(L, B, HKV, S, 1, generator=g)  # some keys alike (cos > 0.5)
        self.mask = torch.zeros(B, S, dtype=torch.bool)
        self.cot = torch.zeros(B, S, dtype=torch.bool)
        self.answer = torch.zeros(B, S, dtype=torch.bool)
        self.spans = []
        for b, (nq, nc, na) in enumerate(examples):
            start = S - lengths[b]
            self.mask[b, start:] = True
            self.cot[b, start + nq:start + nq + nc] = True
            self.answer[b, start + nq + nc:] = True
            self.spans.append((start, nq, nc, na))

    def example(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Example b alone, unpadded: queries [L, HQ, n, D] and keys [L, HKV, n, D]."""
        start = self.spans[b][0]
        return self.q[:, b, :, start:], self.k[:, b, :, start:]

    def kept(self, eviction: str, cfg, keys=None) -> torch.Tensor:
        """kava's kept columns [L, B, HKV, M] (slots past N_C hold S) on this batch."""
        variant = compression.EVICTIONS[eviction]
        rows_mask = variant.query_rows(self.answer, self.cot, cfg)
        rows = None
        if rows_mask is not None:
            cols, valid = compression.mask_columns(rows_mask)
            q = self.q.gather(3, cols.view(1, -1, 1, cols.shape[1], 1).expand(L, -1, HQ, -1, D))
            rows = compression.QueryRows(q, cols, valid, self.k, self.mask, D ** -0.5)
        shape = (L, self.cot.shape[0], HKV, self.cot.shape[1])
        signals = compression.Signals(self.cot, shape, rows, self.k if keys is None else keys)
        scores = compression.eviction_scores(eviction, self.cot, L, HKV, signals=signals, knobs=cfg)
        sel = compression.select_entries(scores, self.cot, cfg.num_latents)
        idx = sel.indices.masked_fill(~sel.slot_mask.view(1, -1, 1, cfg.num_latents), self.cot.shape[1])
        return idx

    def to_columns(self, b: int, kept_in_cot: torch.Tensor) -> list[int]:
        """Positions in example b's C' (0 … N_C−1) as columns of the padded batch, sorted."""
        start, nq, nc, na = self.spans[b]
        return sorted((start + nq + kept_in_cot).tolist())


def _assert_same(batch: Batch, kava: torch.Tensor, reference) -> None:
    """kava's kept columns equal the reference's for every layer, example and KV head; never a
    padded or non-CoT column."""
    for b, (start, nq, nc, na) in enumerate(batch.spans):
        for layer in range(L):
            for h in range(HKV):
                got = [c for c in kava[layer, b, h].tolist() if c < batch.cot.shape[1]]
                assert all(batch.cot[b, c] for c in got)
                assert len(got) == min(nc, M)
                assert got == batch.to_columns(b, reference(b, layer, h)), (b, layer, h)


def _positions(n: int) -> torch.Tensor:
    """Value states that carry their own position, so a reference's kept values name what it kept."""
    return torch.arange(n, dtype=torch.float).view(1, 1, n, 1).expand(1, HKV, n, D)


# ---- the tests ----------------------------------------------------------------------------------
def test_rkv_official_keeps_what_r1kv_keeps():
    batch = Batch()
    window = 3  # R-KV's one window_size: the observation rows and the recent entries
    cfg = preset("kava", eviction="rkv-official", num_latents=M, rkv_window=window, rkv_recent=window, eviction_lambda=0.1)
    kava = batch.kept("rkv-official", cfg)

    def reference(b, layer, h):
        start, nq, nc, na = batch.spans[b]
        q, k = batch.example(b)
        keys = k[layer, :, nq:nq + nc].unsqueeze(0)  # C' as R-KV's cache
        queries = q[layer, :, -window:].unsqueeze(0)  # the last answer rows as its window
        _, v = R1KV(budget=M, window_size=window, kernel_size=7, mix_lambda=0.1).update_kv(keys, queries, _positions(nc))
        return v[0, h, :, 0].long()

    _assert_same(batch, kava, reference)


@pytest.mark.parametrize("pooling", ["avgpool", "maxpool"])
def test_snapkv_keeps_what_snapkv_keeps(pooling):
    batch = Batch()
    window = 4
    cfg = preset("kava", eviction="snapkv", num_latents=M, snapkv_window=window, snapkv_kernel=5, snapkv_pooling=pooling)
    kava = batch.kept("snapkv", cfg)

    def reference(b, layer, h):
        start, nq, nc, na = batch.spans[b]
        if nc <= M:
            return torch.arange(nc)
        q, k = batch.example(b)
        scores = snapkv_scores(repeat_kv(k[layer].unsqueeze(0), HQ // HKV), q[layer].unsqueeze(0), window, 5, pooling,
                               slice(nq, nq + nc))  # [1, HQ, N_C]
        per_kv_head = scores.view(HKV, HQ // HKV, nc).mean(1)  # kava's GQA reduction (the docstring of _snapkv)
        return _topk(per_kv_head[h], M)

    _assert_same(batch, kava, reference)


def test_h2o_keeps_what_h2o_keeps():
    batch = Batch()
    cfg = preset("kava", eviction="h2o", num_latents=M, h2o_heavy_ratio=0.5)
    kava = batch.kept("h2o", cfg)
    hh = int(M * 0.5)

    def reference(b, layer, h):
        start, nq, nc, na = batch.spans[b]
        q, k = batch.example(b)
        probs = h2o_attention(q[layer].unsqueeze(0), k[layer].unsqueeze(0))  # [1, HQ, n, n]
        n = probs.shape[-1]
        # the mapping: keys restricted to C'; the group's query heads summed (kava's GQA choice)
        attn = probs[..., nq:nq + nc].reshape(1, HKV, (HQ // HKV) * n, nc)
        cache = H2OKVCache_LayerWise(hh_size=hh, recent_size=M - hh)
        _, v = cache((k[layer, :, nq:nq + nc].unsqueeze(0), _positions(nc)), attn)
        return v[0, h, :, 0].long()

    _assert_same(batch, kava, reference)


def test_streamingllm_keeps_what_start_recent_kv_cache_keeps():
    batch = Batch()
    cfg = preset("kava", eviction="streamingllm", num_latents=M, streamingllm_sinks=4)
    kava = batch.kept("streamingllm", cfg)

    def reference(b, layer, h):
        start, nq, nc, na = batch.spans[b]
        kept = StartRecentKVCache(start_size=4, recent_size=M - 4)([[batch.example(b)[1][layer, :, nq:nq + nc].unsqueeze(0),
                                                                        _positions(nc)]])
        return kept[0][1][0, h, :, 0].long()

    _assert_same(batch, kava, reference)


RULES = {
    "rkv-official": {"rkv_window": 3, "rkv_recent": 2},
    "snapkv": {"snapkv_window": 4},
    "h2o": {},
    "streamingllm": {},
}


@pytest.mark.parametrize("eviction", list(RULES))
def test_an_example_keeps_the_same_entries_in_a_padded_batch_as_alone(eviction):
    batch = Batch()
    cfg = preset("kava", eviction=eviction, num_latents=M, **RULES[eviction])
    together = batch.kept(eviction, cfg)
    for b, (start, nq, nc, na) in enumerate(batch.spans):
        alone = Batch([EXAMPLES[b]])
        alone.q, alone.k = (t[:, b:b + 1, :, start:] for t in (batch.q, batch.k))
        own = alone.kept(eviction, cfg)[:, 0]
        S = batch.cot.shape[1]
        expected = torch.where(own < alone.cot.shape[1], own + start, torch.full_like(own, S))
        assert torch.equal(together[:, b], expected), (eviction, b)


def test_every_rule_is_in_the_table_and_reads_what_it_asks_for():
    assert set(RULES) <= set(compression.EVICTIONS)
    batch = Batch()
    for name in RULES:
        cfg = preset("kava", eviction=name, num_latents=M, **RULES[name])
        with pytest.raises(ValueError, match="signals"):
            compression.eviction_scores(name, batch.cot, L, HKV)
        rows = compression.EVICTIONS[name].query_rows(batch.answer, batch.cot, cfg)
        assert (rows is None) == (name == "streamingllm")
        if rows is not None:
            assert not (rows & ~(batch.cot | batch.answer)).any()  # never a question or padding row


def test_h2o_reads_every_row_from_the_trace_on_in_blocks(monkeypatch):
    """More query rows than one block: the blocks add up to the whole (one block of all rows)."""
    batch = Batch()
    cfg = preset("kava", eviction="h2o", num_latents=M)
    assert (batch.answer | batch.cot).sum(-1).max() > compression.H2O_CHUNK
    blocked = batch.kept("h2o", cfg)
    monkeypatch.setattr(compression, "H2O_CHUNK", 10_000)
    assert torch.equal(blocked, batch.kept("h2o", cfg))


@pytest.mark.parametrize("over, needle", [
    ({"eviction": "rkv-official", "rkv_recent": M}, "method.rkv_recent"),
    ({"eviction": "streamingllm", "streamingllm_sinks": M + 1}, "method.streamingllm_sinks"),
    ({"rkv_kernel": 4}, "method.rkv_kernel: must be odd"),
    ({"snapkv_kernel": 2}, "method.snapkv_kernel: must be odd"),
    ({"snapkv_pooling": "sum"}, "method.snapkv_pooling"),
    ({"h2o_heavy_ratio": -0.1}, "method.h2o_heavy_ratio"),
    ({"rkv_window": 0}, "method.rkv_window"),
])
def test_bad_rule_knobs_are_named(over, needle):
    with pytest.raises(ConfigError, match=needle):
        preset("kava", num_latents=M, **over)
