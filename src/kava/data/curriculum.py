"""Curricula: methods whose training sequences change as training goes (Coconut, iCoT).

Coconut (Hao et al. 2024, "Training LLMs to Reason in a Continuous Latent Space") trains in
stages: at stage k the first k reasoning steps of every trace are replaced by k·c continuous
thoughts between ``<bot>`` and ``<eot>``, the rest of the trace stays text; past the last stage K
every step is replaced and K·c thoughts are used (the official GSM8k setting `pad_latent_to_max`,
so every example of a batch has the same number of thoughts). Stage 0 is CoT fine-tuning with the
markers and no thought; kava's latent methods start from a trained CoT model, so a run starts at
``start_stage`` (1 by default, as the official run resumes after its stage-0 epochs).

The stage is a pure function of the optimizer step, so a resumed run rebuilds the very batches of
the uninterrupted one, and the engine resets the optimizer exactly where a stage starts.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def boundaries(self, total_steps: int) -> list[int]:
        """The steps (0-based) at which a new stage starts, within ``total_steps``: where the
        optimizer is reset."""
        return [s for s in range(1, total_steps) if self.stage_at(s) != self.stage_at(s - 1)]
