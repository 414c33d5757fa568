"""Curricula: methods whose training sequences change as training goes (Coconut, iCoT).

Coconut (Hao et al. 2024, "Training LLMs to Reason in a Continuous Latent Space") trains in
stages: at stage k the first k reasoning steps of every trace are replaced by k·c continuous
thoughts between ``<bot>`` and ``<eot>``, the rest of the trace stays text; past the last stage K
every step is replaced and K·c thoughts are used (the official GSM8k setting `pad_latent_to_max`,
so every example of a batch has the same number of thoughts). Stage 0 is CoT fine-tuning with the
markers and no thought; kava's latent methods start from a trained CoT model, so a run starts at
``start_stage`` (1 by default, as the official run resumes after its stage-0 epochs).

iCoT (Deng et al. 2024, "From Explicit CoT to Implicit CoT: Learning to Internalize CoT Step by
Step") starts from the CoT model and removes trace tokens from the front: one more every
``stage_steps`` optimizer steps (the official ``remove_per_epoch`` Δ is ``steps per epoch / Δ``
here), plus a per-example offset o drawn with P(o) ∝ exp(−λ·o) (removal smoothing, o < 100 as
in the official code), and everything once the schedule reaches ``remove_all_at``. Once no trace is
left the model answers directly, with No-CoT's passes.

The stage is a pure function of the optimizer step (and an iCoT offset of the step and the example's
own tokens), so a resumed run rebuilds the very batches of the uninterrupted one, whatever the
batching, and the engine resets the optimizer exactly where a stage starts.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

MAX_OFFSET = 100  # the official removal smoothing's truncation


@dataclass(frozen=True)
class CoconutStage:
    """What one stage does to a trace: how many steps become thoughts, and how many thoughts."""

    stage: int
    skipped_steps: int | None  # None: every step (past the last stage)
    thoughts: int

    def remaining(self, steps: tuple[str, ...]) -> tuple[str, ...]:
        """The steps still written as text."""
        return () if self.skipped_steps is None else steps[self.skipped_steps:]


@dataclass(frozen=True)
class CoconutSchedule:
    """Stage k for steps [(k - start)·n, (k - start + 1)·n), n = ``steps_per_stage``; the last stage is
    ``max_stage + 1`` (all steps latent) and lasts to the end of training."""

    thoughts_per_step: int  # c
    max_stage: int  # K
    steps_per_stage: int
    start_stage: int = 1

    def stage_at(self, step: int) -> int:
        """The stage of optimizer step ``step`` (0-based: the number of steps done before it)."""
        return min(self.start_stage + step // self.steps_per_stage, self.max_stage + 1)

    def stage(self, k: int) -> CoconutStage:
        if k > self.max_stage:
            return CoconutStage(k, None, self.max_stage * self.thoughts_per_step)
        return CoconutStage(k, k, k * self.thoughts_per_step)

    def at(self, step: int) -> CoconutStage:
        return self.stage(self.stage_at(step))

    def resets_at(self, step: int) -> bool:
        """Whether step ``step`` starts a new stage (the optimizer restarts there)."""
        return step > 0 and self.stage_at(step) != self.stage_at(step - 1)

    @property
    def complete_at(self) -> int:
        """The first step of the last stage (every step a thought), which lasts to the end."""
        return (self.max_stage + 1 - self.start_stage) * self.steps_per_stage

    def boundaries(self, total_steps: int) -> list[int]:
        """The steps (0-based) at which a new stage starts, within ``total_steps``: where the
        optimizer is reset."""
        return [s for s in range(1, total_steps) if self.stage_at(s) != self.stage_at(s - 1)]


def offset_probabilities(lam: float) -> torch.Tensor:
    """iCoT's removal smoothing: P(o) = (1 − e^−λ)·e^−λo for o < 100, the tail's mass on the last."""
    o = torch.arange(MAX_OFFSET, dtype=torch.float64)
    p = (1 - math.exp(-lam)) * torch.exp(-lam * o)
    p[-1] += 1 - p.sum()
    return p


@dataclass(frozen=True)
class ICoTSchedule:
    """Tokens removed from the front of the trace: ``start + step // stage_steps`` scheduled, plus a
    smoothing offset per example; the whole trace from ``remove_all_at`` scheduled tokens on."""

    stage_steps: int
    smoothing_lambda: float | None  # None: no smoothing (the official λ = inf)
    remove_all_at: int | None = None
    start: int = 0
    seed: int = 0

    def stage_at(self, step: int) -> int:
        """The scheduled number of removed tokens at optimizer step ``step``."""
        return self.start + step // self.stage_steps

    def complete_at(self, trace_tokens: int) -> int:
        """The first step at which a trace of ``trace_tokens`` tokens is scheduled to be gone
        (smoothing offsets may remove it earlier)."""
        tokens = trace_tokens if self.remove_all_at is None else min(trace_tokens, self.remove_all_at)
        return max(0, tokens - self.start) * self.stage_steps

    def removes_all(self, step: int) -> bool:
        return self.remove_all_at is not None and self.stage_at(step) >= self.remove_all_at

    def resets_at(self, step: int) -> bool:
        """The optimizer restarts when the removal grows, until the whole trace is gone."""
        return step > 0 and self.stage_at(step) != self.stage_at(step - 1) and not self.removes_all(step - 1)

    def offset(self, step: int, key: bytes) -> int:
        """The smoothing offset of one example (``key``: its own tokens) at ``step``: the same
        example draws the same offset whatever its batch mates."""
        if self.smoothing_lambda is None:
            return 0
        g = torch.Generator().manual_seed(zlib.crc32(key, self.seed * 1_000_003 + step))
        return int(torch.multinomial(offset_probabilities(self.smoothing_lambda), 1, generator=g))

    def removed(self, step: int, n_tokens: int, key: bytes) -> int:
        """How many of an example's ``n_tokens`` trace tokens are removed at ``step``."""
        if self.removes_all(step):
            return n_tokens
        return min(n_tokens, self.stage_at(step) + self.offset(step, key))
