"""Eviction on hand-built keys and attention probabilities (docs/method.md §4)."""

from __future__ import annotations

import math

import pytest
import torch

from kava import compression as C


def _attn(rows: dict[int, list[float]], S: int, Hq: int) -> torch.Tensor:
    """[1, 1, Hq, S, S] attention with the given query rows per head index (others zero)."""
    a = torch.zeros(1, 1, Hq, S, S)
    for h, row in rows.items():
        a[0, 0, h, S - 1] = torch.tensor(row)
    return a


def test_importance_takes_max_over_query_heads_of_each_kv_head():
    S, Hq, Hkv = 6, 4, 2  # query heads 0,1 share KV head 0; 2,3 share KV head 1
    answer = torch.tensor([[False] * 5 + [True]])
    attn = _attn(
        {0: [0, .1, .6, .1, .1, .1], 1: [0, .5, .1, .2, .1, .1], 2: [0, .0, .0, .9, .0, .1], 3: [0, .2, .2, .2, .2, .2]},
        S, Hq,
    )
    imp = C.importance_scores(attn, answer, Hkv)
    assert imp.shape == (1, 1, Hkv, S)
    torch.testing.assert_close(imp[0, 0, 0], torch.tensor([0, .5, .6, .2, .1, .1]))
    torch.testing.assert_close(imp[0, 0, 1], torch.tensor([0, .2, .2, .9, .2, .2]))


def test_importance_averages_over_answer_rows_only():
    a = torch.zeros(1, 1, 1, 4, 4)
    a[0, 0, 0, 2] = torch.tensor([.5, .5, 0, 0])  # answer row
    a[0, 0, 0, 3] = torch.tensor([.1, .3, .2, .4])  # answer row
    a[0, 0, 0, 1] = torch.tensor([1., 0, 0, 0])  # not an answer row
    imp = C.importance_scores(a, torch.tensor([[False, False, True, True]]), 1)
    torch.testing.assert_close(imp[0, 0, 0], torch.tensor([.3, .4, .1, .2]))


def test_importance_is_the_mean_over_answer_rows_then_the_max_over_the_group():
    """Two answer rows, two query heads sharing one KV head: mean-then-max gives [.5, .5, .5];
    max-then-mean would give [1, .5, .5]."""
    a = torch.zeros(1, 1, 2, 3, 3)
    a[0, 0, 0, 1], a[0, 0, 0, 2] = torch.tensor([1., 0, 0]), torch.tensor([0., 0, 1])
    a[0, 0, 1, 1], a[0, 0, 1, 2] = torch.tensor([0., 1, 0]), torch.tensor([1., 0, 0])
    imp = C.importance_scores(a, torch.tensor([[False, True, True]]), 1)
    torch.testing.assert_close(imp[0, 0, 0], torch.tensor([.5, .5, .5]))


def test_redundancy_matches_formula():
    keys = torch.tensor([[1., 0], [1., 0.1], [0, 1], [5, 5]]).view(1, 1, 1, 4, 2)
    cot = torch.tensor([[True, True, True, False]])
    r = C.redundancy_scores(keys, cot)[0, 0, 0]
    k = torch.nn.functional.normalize(keys[0, 0, 0, :3], dim=-1)
    sim = k @ k.T
    logits = -(sim.sum(1) - 1) / 3
    torch.testing.assert_close(r[:3], torch.softmax(logits, 0))
    assert r[3] == 0
    # The duplicated direction (keys 0 and 1) is the redundant one: the odd key scores highest.
    assert r[2] > r[0] and r[2] > r[1]


def _select(eviction, scores_imp, scores_red, cot, M, lam=0.1):
    s = C.eviction_scores(eviction, cot, 1, scores_imp.shape[2] if scores_imp is not None else 1,
                          importance=scores_imp, redundancy=scores_red, lam=lam,
                          seeds=list(range(cot.shape[0])))
    return C.select_entries(s, cot, M)


def test_rkv_mix_keeps_expected_indices_sorted_by_position():
    cot = torch.tensor([[False, True, True, True, True, True, False]])  # CoT at 1..5, then answer
    imp = torch.tensor([0, .9, .0, .5, .1, .0, .0]).view(1, 1, 1, 7)
    red = torch.tensor([0, .0, .3, .0, .3, .4, 0]).view(1, 1, 1, 7)
    # λ=0.1: scores 1:.09 2:.27 3:.05 4:.28 5:.36 → top3 = {5,4,2} → sorted [2,4,5]
    assert _select("rkv", imp, red, cot, 3).indices[0, 0, 0].tolist() == [2, 4, 5]
    assert _select("importance", imp, red, cot, 3).indices[0, 0, 0].tolist() == [1, 3, 4]
    assert _select("redundancy", imp, red, cot, 3).indices[0, 0, 0].tolist() == [2, 4, 5]
    assert _select("crop", None, None, cot, 3).indices[0, 0, 0].tolist() == [1, 2, 3]
    rnd = _select("random", None, None, cot, 3).indices[0, 0, 0].tolist()
    assert rnd == sorted(rnd) and set(rnd) <= {1, 2, 3, 4, 5} and len(set(rnd)) == 3


def test_padding_never_kept_and_short_cot_masked():
    # Example 0: CoT of 2 tokens (< M = 3); example 1: CoT of 4. Padding has the highest scores.
    cot = torch.tensor([[False, True, True, False, False, False], [False, True, True, True, True, False]])
    imp = torch.tensor([[9., .2, .1, 9., 9., 9.], [9., .1, .4, .3, .2, 9.]]).view(1, 2, 1, 6)
    sel = _select("importance", imp, None, cot, 3)
    assert sel.slot_mask.tolist() == [[True, True, False], [True, True, True]]
    assert sel.indices[0, 0, 0, :2].tolist() == [1, 2]
    assert sel.indices[0, 1, 0].tolist() == [2, 3, 4]
    keys = torch.arange(6, dtype=torch.float).view(1, 1, 1, 6, 1).expand(1, 2, 1, 6, 2)
    kept = C.gather_entries(keys, sel)
    assert kept[0, 0, 0, :, 0].tolist() == [1, 2, 0]  # masked slot is zero, never padding
    assert kept[0, 1, 0, :, 0].tolist() == [2, 3, 4]


def test_zero_length_cot_keeps_nothing_without_nan():
    cot = torch.zeros(1, 4, dtype=torch.bool)
    keys = torch.randn(1, 1, 2, 4, 3)
    red = C.redundancy_scores(keys, cot)
    assert torch.isfinite(red).all()
    sel = C.select_entries(C.eviction_scores("rkv", cot, 1, 2, importance=torch.zeros(1, 1, 2, 4), redundancy=red), cot, 3)
    assert not sel.slot_mask.any()


def test_selection_is_per_kv_head_and_layer():
    cot = torch.ones(1, 4, dtype=torch.bool)
    scores = torch.tensor([[[[4., 3, 2, 1], [1, 2, 3, 4]]], [[[1, 4, 1, 4], [4, 1, 4, 1]]]])  # [L=2,B=1,H=2,S=4]
    sel = C.select_entries(scores, cot, 2)
    assert sel.indices.tolist() == [[[[0, 1], [2, 3]]], [[[1, 3], [0, 2]]]]


@pytest.mark.parametrize("m", [1, 4])
def test_m_larger_than_sequence(m):
    cot = torch.tensor([[True, True]])
    sel = C.select_entries(torch.tensor([[[[.1, .9]]]]), cot, m)
    assert sel.indices.shape[-1] == m
    assert sel.slot_mask.sum().item() == min(2, m)
    assert math.isclose(sel.indices[0, 0, 0, 0].item(), 1 if m == 1 else 0)


def test_mask_columns_lists_true_columns_in_order():
    cols, valid = C.mask_columns(torch.tensor([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]))
    assert cols.tolist() == [[1, 3, 4], [0, 0, 0], [0, 0, 0]]
    assert valid.tolist() == [[True, True, True], [False, False, False], [True, False, False]]


def test_redundancy_over_the_cot_window_equals_the_formula_per_example():
    """Examples with CoT windows of different places and lengths (and one with none) in one batch."""
    torch.manual_seed(0)
    keys = torch.randn(2, 3, 2, 7, 4)  # [L, B, H, S, d]
    cot = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 0], [0] * 7]).bool()
    r = C.redundancy_scores(keys, cot)
    for b in range(2):
        idx = cot[b].nonzero().flatten()
        k = torch.nn.functional.normalize(keys[:, b][:, :, idx], dim=-1)  # [L, H, N_C, d]
        sim = k @ k.transpose(-1, -2)
        expected = torch.softmax(-(sim.sum(-1) - 1) / len(idx), dim=-1)
        torch.testing.assert_close(r[:, b][:, :, idx], expected)
        assert (r[:, b][:, :, ~cot[b]] == 0).all()
    assert (r[:, 2] == 0).all()
