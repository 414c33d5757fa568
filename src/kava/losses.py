"""The four loss terms of docs/method.md §5, each also reported per example, and the table of every
term a training step logs (`TERMS`).

Per-example values make padding invariance testable: cross-entropies are per-example token means
(then averaged over the batch); the distillation terms return per-example sums and counts
before the batch-level std normalisation the method prescribes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

STD_EPS = 1e-6


@dataclass(frozen=True)
class LossTerm:
    """A scalar `KavaModel.forward` logs under its name (``KavaOutput.terms``, the history, the reports)."""

    # The `KavaConfig` knob that weights it in the trained total: a bool (on: weight 1) or a number
    # (α); the term is computed only when it is on. None: logged beside the loss, never trained.
    weight: str | None
    passes: tuple[str, ...] = ()  # the training passes it needs ("teacher", "student"): which ones run
    # A logged-only reference for this other term, drawn dashed in its loss-curve panel and divided
    # into it at the end of training (`kava.experiments.reports.final_losses`), and what it is, in words.
    baseline_of: str | None = None
    label: str = ""
    # The term from the two passes and the config, ``(teacher, student, config) → DistillTerm or a
    # scalar``, after both passes ran (`KavaModel.forward` calls it). None: a pass computes it
    # itself (the cross-entropies, which need the pass's own logits).
    compute: Callable[[Any, Any, Any], Any] | None = None


# Every logged term, in the reports' order. A new term: its row here (with its `compute`) and its
# weight knob in `kava.config.KavaConfig` — nothing else changes.
TERMS: dict[str, LossTerm] = {
    "ce_student": LossTerm("student_ce", ("student",)),
    "ce_teacher": LossTerm("teacher_ce", ("teacher",)),
    "codi": LossTerm("alpha_codi", ("teacher", "student"), compute=lambda t, s, cfg: codi_loss(
        s.distill_hidden, t.distill_hidden, cfg.codi_loss)),
    "kv": LossTerm("alpha_kv", ("teacher", "student"), compute=lambda t, s, cfg: kv_loss(
        s.k, s.v, t.kv.k, t.kv.v, t.kv.slot_mask, cfg.kv_loss, cfg.kv_layerwise_std)),
    # The L_KV of a student that outputs the mean target (`kv_mean_baseline`): the scale of kv.
    "kv_mean_baseline": LossTerm(None, baseline_of="kv", label="L_KV of the mean target", compute=lambda t, s, cfg:
                                 kv_mean_baseline(t.kv.k, t.kv.v, t.kv.slot_mask, cfg.kv_loss, cfg.kv_layerwise_std)),
}


def term_on(name: str, config: object) -> bool:
    """Whether a step computes term ``name``: its weight knob is on, or, for a logged-only
    baseline, the term it is the baseline of is on."""
    term = TERMS[name]
    if term.weight is None:
        return term.baseline_of is not None and term_on(term.baseline_of, config)
    return float(getattr(config, term.weight)) > 0


def weighted_total(terms: Mapping[str, torch.Tensor], config: object, start: torch.Tensor) -> torch.Tensor:
    """The trained loss: ``start`` plus each trained term times its weight knob's value in
    ``config`` (a `kava.config.KavaConfig`; typed as any object with the knobs, since kava.config
    imports this module and the layering has no arrow back), added in the order of ``terms``;
    logged-only terms are left out."""
    total = start
    for name, value in terms.items():
        knob = TERMS[name].weight
        if knob is not None:
            total = total + float(getattr(config, knob)) * value
    return total


# Element-wise distillation losses by config name (``codi_loss``, ``kv_loss``); the config's allowed names come from here.
ELEMENTWISE = {
    "smooth_l1": lambda pred, target: F.smooth_l1_loss(pred, target, reduction="none", beta=1.0),
    "l1": lambda pred, target: (pred - target).abs(),
    "mse": lambda pred, target: (pred - target).pow(2),
}


def elementwise(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind not in ELEMENTWISE:
        raise ValueError(f"unknown loss {kind!r}")
    return ELEMENTWISE[kind](pred, target)


def token_ce(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-example mean cross-entropy of the tokens flagged in target_mask ([B, S]) → [B].

    The state at position p predicts token p+1. ``head`` (the LM head) maps states to logits and
    runs only at the positions that predict a flagged token: most of a sequence (the question)
    carries no loss, and on a small model the vocabulary projection and its cross-entropy are
    the largest costs of a step. Without ``head``, ``hidden`` already holds the logits.
    """
    predicts = target_mask[:, 1:].bool()
    rows, cols = predicts.nonzero(as_tuple=True)
    states = hidden[rows, cols]
    logits = states if head is None else head(states)
    nll = F.cross_entropy(logits.float(), input_ids[rows, cols + 1], reduction="none")
    total = nll.new_zeros(input_ids.shape[0]).index_add_(0, rows, nll)
    return total / predicts.sum(-1).clamp(min=1)


def batch_ce(per_example: torch.Tensor, target_mask: torch.Tensor, average: str) -> torch.Tensor:
    """The batch's CE from `token_ce`'s per-example means: their mean (``example``), or the mean
    over every target token of the batch (``token``: each example weighted by its token count,
    torch's ``CrossEntropyLoss`` over the flattened batch)."""
    if average == "example":
        return per_example.mean()
    if average != "token":
        raise ValueError(f"unknown CE average {average!r}")
    counts = target_mask[:, 1:].sum(-1).to(per_example.dtype)
    return (per_example * counts).sum() / counts.sum().clamp(min=1)


def masked_std_per_layer(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population std over all but the first (layer) dim of x, counting entries where mask is set."""
    m = mask.to(x.dtype).expand_as(x)
    dims = tuple(range(1, x.dim()))
    n = m.sum(dim=dims).clamp(min=1)
    mean = (x * m).sum(dim=dims) / n
    centred = (x - mean.view(-1, *([1] * (x.dim() - 1)))) * m
    return (centred.pow(2).sum(dim=dims) / n).sqrt()


@dataclass
class DistillTerm:
    value: torch.Tensor  # scalar loss term
    per_example: torch.Tensor  # [B, L] un-normalised per-example sums (or means, for CODI)


def codi_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> DistillTerm:
    """Hidden-state distillation at the distillation position, every layer.

    student, teacher: [L, B, D]. Layer l's term is mean_{b,d} ℓ / std_l(teacher over b, d);
    the result is the mean over layers.
    """
    teacher = teacher.detach()
    err = elementwise(kind, student.float(), teacher.float()).mean(-1)  # [L, B]
    std = teacher.float().flatten(1).std(dim=1, unbiased=False).clamp(min=STD_EPS)  # [L]
    value = (err.mean(-1) / std).mean()
    return DistillTerm(value=value, per_example=err.transpose(0, 1))


def kv_loss(
    ks: torch.Tensor,
    vs: torch.Tensor,
    kt: torch.Tensor,
    vt: torch.Tensor,
    slot_mask: torch.Tensor,
    kind: str,
    layerwise_std: bool,
) -> DistillTerm:
    """KV distillation between the student latent cache and the compressed teacher cache.

    ks, vs, kt, vt: [L, B, H, M, d]; slot_mask: [B, M]. For each layer the elementwise loss is
    averaged over valid (batch, head, slot, dim) entries; K and V terms are averaged (the
    paper's 1/2) and so are the layers. With layerwise_std each layer's K (V) term is divided by
    the std of the teacher's compressed K (V) in that layer.
    """
    kt, vt = kt.detach(), vt.detach()
    L, B, H, M, d = ks.shape
    m = slot_mask.view(1, B, 1, M, 1).to(torch.float32)
    count = (m.sum() * H * d).clamp(min=1)

    def term(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = elementwise(kind, s.float(), t.float()) * m  # [L, B, H, M, d]
        per_ex = e.sum(dim=(2, 3, 4)).transpose(0, 1)  # [B, L]
        layer = e.sum(dim=(1, 2, 3, 4)) / count  # [L]
        if layerwise_std:
            layer = layer / masked_std_per_layer(t.float(), m).clamp(min=STD_EPS)
        return layer, per_ex

    k_layer, k_ex = term(ks, kt)
    v_layer, v_ex = term(vs, vt)
    value = (0.5 * (k_layer + v_layer)).mean()
    return DistillTerm(value=value, per_example=0.5 * (k_ex + v_ex))


def kv_mean_baseline(
    kt: torch.Tensor, vt: torch.Tensor, slot_mask: torch.Tensor, kind: str, layerwise_std: bool
) -> torch.Tensor:
    """L_KV of a student that learned nothing: for every slot, the batch mean of the targets.

    The mean is taken per layer, KV head and dim over the valid (batch, slot) entries, for K and
    V separately, and scored by `kv_loss` with the same knobs. Logged beside L_KV it says how
    much of the loss a student has removed: L_KV at this value means the latents carry nothing
    example- or slot-specific. Shapes as in `kv_loss`; never part of the gradient.
    """
    with torch.no_grad():
        B, M = slot_mask.shape
        m = slot_mask.view(1, B, 1, M, 1).to(torch.float32)
        n = m.sum().clamp(min=1)  # valid (batch, slot) entries

        def mean_target(t: torch.Tensor) -> torch.Tensor:
            return ((t.float() * m).sum(dim=(1, 3), keepdim=True) / n).expand_as(t)

        return kv_loss(mean_target(kt), mean_target(vt), kt, vt, slot_mask, kind, layerwise_std).value
