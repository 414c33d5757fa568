"""Loss values on hand-computed cases (docs/method.md §5)."""

from __future__ import annotations

import math

import pytest
import torch

from kava.losses import codi_loss, kv_loss, kv_mean_baseline, token_ce


def _kv(seed=0, L=2, B=2, H=2, M=3, d=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, B, H, M, d, generator=g)


@pytest.mark.parametrize("kind", ["smooth_l1", "l1", "mse"])
@pytest.mark.parametrize("std", [True, False])
def test_kv_loss_zero_when_student_equals_teacher(kind, std):
    k, v = _kv(0), _kv(1)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert kv_loss(k, v, k.clone(), v.clone(), mask, kind, std).value.item() == 0.0


def _hand_kv(kind, std):
    # One layer, one example, one head, two slots (second masked), d = 2.
    ks = torch.tensor([[[[[1.0, 3.0], [100.0, 100.0]]]]])
    kt = torch.tensor([[[[[0.5, 0.0], [0.0, 0.0]]]]])
    vs = torch.tensor([[[[[2.0, 2.0], [-50.0, 9.0]]]]])
    vt = torch.tensor([[[[[2.0, 1.0], [0.0, 0.0]]]]])
    mask = torch.tensor([[True, False]])
    return kv_loss(ks, vs, kt, vt, mask, kind, std).value.item()


def test_kv_loss_hand_values():
    # diffs K: 0.5, 3.0 ; V: 0, 1.0
    sl1 = lambda x: 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5  # noqa: E731
    k_sl1 = (sl1(0.5) + sl1(3.0)) / 2
    v_sl1 = (sl1(0.0) + sl1(1.0)) / 2
    assert math.isclose(_hand_kv("smooth_l1", False), 0.5 * (k_sl1 + v_sl1), rel_tol=1e-6)
    assert math.isclose(_hand_kv("l1", False), 0.5 * ((0.5 + 3) / 2 + (0 + 1) / 2), rel_tol=1e-6)
    assert math.isclose(_hand_kv("mse", False), 0.5 * ((0.25 + 9) / 2 + (0 + 1) / 2), rel_tol=1e-6)
    # Layer-wise std of the valid teacher entries: K {0.5, 0} → 0.25; V {2, 1} → 0.5.
    assert math.isclose(_hand_kv("l1", True), 0.5 * ((3.5 / 2) / 0.25 + (1 / 2) / 0.5), rel_tol=1e-6)
    assert math.isclose(_hand_kv("mse", True), 0.5 * ((9.25 / 2) / 0.25 + (1 / 2) / 0.5), rel_tol=1e-6)


def test_kv_loss_averages_layers():
    ks = torch.zeros(2, 1, 1, 1, 1)
    kt = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1)
    z = torch.zeros_like(ks)
    val = kv_loss(ks, z, kt, z, torch.ones(1, 1, dtype=torch.bool), "l1", False).value.item()
    # Layer terms (K + V) / 2 = 0.5 and 1.5; their mean is 1.0.
    assert math.isclose(val, 1.0, rel_tol=1e-6)


def test_kv_loss_gradient_only_into_student():
    ks, vs = _kv(0).requires_grad_(), _kv(1).requires_grad_()
    kt, vt = _kv(2).requires_grad_(), _kv(3).requires_grad_()
    kv_loss(ks, vs, kt, vt, torch.ones(2, 3, dtype=torch.bool), "smooth_l1", True).value.backward()
    assert ks.grad.abs().sum() > 0 and vs.grad.abs().sum() > 0
    assert kt.grad is None and vt.grad is None


def _baseline_targets() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # One layer, two examples, one head, two slots (example 0's second masked), d = 2: [L, B, H, M, d].
    kt = torch.tensor([[[[[1.0, 10.0], [100.0, 100.0]]], [[[3.0, 10.0], [5.0, 10.0]]]]])
    vt = torch.tensor([[[[[2.0, 0.0], [-7.0, -7.0]]], [[[2.0, 0.0], [8.0, 3.0]]]]])
    return kt, vt, torch.tensor([[True, False], [True, True]])


def test_kv_mean_baseline_hand_values():
    kt, vt, mask = _baseline_targets()
    # Mean of the three valid slots per dim (the masked 100s and -7s do not count): K (3, 10), V (4, 1).
    # |error| K: dim 0 {2, 0, 2}, dim 1 {0, 0, 0}; V: dim 0 {2, 2, 4}, dim 1 {1, 1, 2}; 6 valid entries each.
    assert math.isclose(kv_mean_baseline(kt, vt, mask, "l1", False).item(), 0.5 * (4 / 6 + 12 / 6), rel_tol=1e-6)
    assert math.isclose(kv_mean_baseline(kt, vt, mask, "mse", False).item(), 0.5 * (8 / 6 + 30 / 6), rel_tol=1e-6)
    # Layer-wise std: of the valid teacher entries, as in kv_loss.
    k_std = torch.tensor([1.0, 10.0, 3.0, 10.0, 5.0, 10.0]).std(unbiased=False).item()
    v_std = torch.tensor([2.0, 0.0, 2.0, 0.0, 8.0, 3.0]).std(unbiased=False).item()
    expected = 0.5 * ((4 / 6) / k_std + (12 / 6) / v_std)
    assert math.isclose(kv_mean_baseline(kt, vt, mask, "l1", True).item(), expected, rel_tol=1e-6)


@pytest.mark.parametrize("kind", ["smooth_l1", "l1", "mse"])
@pytest.mark.parametrize("std", [True, False])
def test_a_student_equal_to_the_mean_target_scores_the_baseline(kind, std):
    kt, vt = _kv(0, L=3, B=4, M=5), _kv(1, L=3, B=4, M=5)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(2)) > 0.3

    def mean_target(t: torch.Tensor) -> torch.Tensor:  # [L, B, H, M, d]
        valid = t.permute(0, 2, 4, 1, 3)[..., mask]  # [L, H, d, valid (batch, slot) entries]
        return valid.mean(-1)[:, None, :, None, :].expand_as(t)

    student = kv_loss(mean_target(kt), mean_target(vt), kt, vt, mask, kind, std).value
    torch.testing.assert_close(kv_mean_baseline(kt, vt, mask, kind, std), student)


def test_kv_mean_baseline_carries_no_gradient():
    kt, vt = _kv(0).requires_grad_(), _kv(1).requires_grad_()
    assert not kv_mean_baseline(kt, vt, torch.ones(2, 3, dtype=torch.bool), "smooth_l1", True).requires_grad


def test_codi_loss_hand_value_and_zero():
    # L = 2 layers, B = 2, D = 2.
    teacher = torch.tensor([[[1.0, 3.0], [1.0, 3.0]], [[0.0, 0.0], [2.0, 2.0]]])
    student = torch.tensor([[[1.0, 1.0], [1.0, 3.0]], [[0.0, 0.5], [2.0, 2.0]]])
    assert codi_loss(teacher.clone(), teacher, "smooth_l1").value.item() == 0.0
    std0 = torch.tensor([1.0, 3.0, 1.0, 3.0]).std(unbiased=False).item()  # = 1
    std1 = torch.tensor([0.0, 0.0, 2.0, 2.0]).std(unbiased=False).item()  # = 1
    l1_l0 = (0 + 2 + 0 + 0) / 4
    l1_l1 = (0 + 0.5 + 0 + 0) / 4
    assert math.isclose(codi_loss(student, teacher, "l1").value.item(), (l1_l0 / std0 + l1_l1 / std1) / 2, rel_tol=1e-6)
    mse = ((4 / 4) / std0 + (0.25 / 4) / std1) / 2
    assert math.isclose(codi_loss(student, teacher, "mse").value.item(), mse, rel_tol=1e-6)
    sl1 = ((1.5 / 4) / std0 + (0.125 / 4) / std1) / 2
    assert math.isclose(codi_loss(student, teacher, "smooth_l1").value.item(), sl1, rel_tol=1e-6)


def test_token_ce_per_example_mean_over_target_tokens():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3)  # p(token 2 | pos 0) = 3/6
    ids = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[False, True, True]])
    expected = (-math.log(3 / 6) - math.log(1 / 4)) / 2
    assert math.isclose(token_ce(logits, ids, mask).item(), expected, rel_tol=1e-6)


def test_token_ce_applies_the_head_only_where_a_loss_is_and_matches_full_logits():
    torch.manual_seed(0)
    hidden, head = torch.randn(3, 7, 5), torch.nn.Linear(5, 11)
    ids = torch.randint(0, 11, (3, 7))
    mask = torch.rand(3, 7) > 0.4
    mask[2] = False  # an example without targets scores 0, not NaN
    seen = []
    full = token_ce(head(hidden), ids, mask)
    sparse = token_ce(hidden, ids, mask, lambda h: seen.append(h.shape[0]) or head(h))
    torch.testing.assert_close(sparse, full)
    assert seen == [int(mask[:, 1:].sum())] and sparse[2] == 0
