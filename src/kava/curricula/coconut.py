"""Coconut (Hao et al. 2024, "Training LLMs to Reason in a Continuous Latent Space").

Coconut trains in stages: at stage k the first k reasoning steps of every trace are replaced by
k·c continuous thoughts between ``<bot>`` and ``<eot>``, the rest of the trace stays text; past the
last stage K every step is replaced and K·c thoughts are used (the official GSM8k setting
`pad_latent_to_max`, so every example of a batch has the same number of thoughts). Stage 0 is CoT
fine-tuning with the markers and no thought; kava's latent methods start from a trained CoT model,
so a run starts at ``start_stage`` (1 by default, as the official run resumes after its stage-0
epochs). The optimizer restarts when a stage starts, as the paper's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from kava.curricula.base import Curriculum, register
from kava.runtime.validation import ConfigError

if TYPE_CHECKING:
    from kava.data.records import Record


@dataclass(frozen=True)
class CoconutStage:
    """What one stage does to a trace: how many steps become thoughts, and how many thoughts."""

    stage: int
    skipped_steps: int | None  # None: every step (past the last stage)
    thoughts: int

    def remaining(self, steps: tuple[str, ...]) -> tuple[str, ...]:
        """The steps still written as text."""
        return () if self.skipped_steps is None else steps[self.skipped_steps:]


@register
@dataclass(frozen=True)
class CoconutSchedule(Curriculum):
    """Stage k for steps [(k - start)·n, (k - start + 1)·n), n = ``steps_per_stage``; the last stage is
    ``max_stage + 1`` (all steps latent) and lasts to the end of training."""

    name: ClassVar[str] = "coconut"

    thoughts_per_step: int  # c
    max_stage: int  # K
    steps_per_stage: int
    start_stage: int = 1

    # ---- for a config --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "CoconutSchedule":
        return cls(cfg.thoughts_per_step, cfg.max_stage, cfg.stage_steps, cfg.start_stage)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        budget = cfg.thoughts_per_step * cfg.max_stage
        if cfg.num_latents != budget:
            raise ConfigError(f"method.num_latents: Coconut answers after K·c = {cfg.max_stage}·{cfg.thoughts_per_step} = "
                              f"{budget} thoughts, so num_latents must be {budget}, got {cfg.num_latents}")
        if cfg.start_stage > cfg.max_stage + 1:
            raise ConfigError(f"method.start_stage: at most K + 1 = {cfg.max_stage + 1}, got {cfg.start_stage}")
        if cfg.uses_teacher or not cfg.student_ce or cfg.latent_mode != "sequential" or cfg.use_projection:
            raise ConfigError("method.curriculum: coconut trains the student's CE alone, its thoughts sequential and "
                              "unprojected (teacher_ce false, alpha_codi 0, alpha_kv 0, latent_mode sequential, "
                              "use_projection false); use method.preset: coconut")

    @classmethod
    def check_records(cls, records: Sequence[Record]) -> None:
        if all(len(r.steps) <= 1 for r in records):
            raise ConfigError("method.curriculum: Coconut replaces a trace's steps one stage at a time, but every training "
                              "record has a single step (traces without step boundaries); split them into steps")

    @classmethod
    def demo_knobs(cls, steps: int, trace_tokens: int) -> dict[str, Any]:
        """Its 4 stages (1 to K + 1 at the preset's K = 3) share the phase equally."""
        return {"stage_steps": max(1, steps // 4)}

    # ---- the schedule ----------------------------------------------------------------------
    def stage_at(self, step: int) -> int:
        """The stage of optimizer step ``step`` (0-based: the number of steps done before it)."""
        return min(self.start_stage + step // self.steps_per_stage, self.max_stage + 1)

    def stage(self, k: int) -> CoconutStage:
        if k > self.max_stage:
            return CoconutStage(k, None, self.max_stage * self.thoughts_per_step)
        return CoconutStage(k, k, k * self.thoughts_per_step)

    def at(self, step: int) -> CoconutStage:
        return self.stage(self.stage_at(step))

    def student_stage(self, step: int) -> CoconutStage:
        """The student's thoughts replace the stage's first steps; the rest is written after <eot>."""
        return self.at(step)

    @property
    def complete_at(self) -> int:
        """The first step of the last stage (every step a thought), which lasts to the end."""
        return (self.max_stage + 1 - self.start_stage) * self.steps_per_stage

    def settled_at(self, trace_tokens: int) -> int:
        return self.complete_at

    def boundaries(self, total_steps: int) -> list[int]:
        """The steps (0-based) at which a new stage starts, within ``total_steps``: where the
        optimizer is reset."""
        return [s for s in range(1, total_steps) if self.stage_at(s) != self.stage_at(s - 1)]
