"""iCoT (Deng et al. 2024, "From Explicit CoT to Implicit CoT: Learning to Internalize CoT Step by Step").

iCoT starts from the CoT model and removes trace tokens from the front: one more every
``stage_steps`` optimizer steps (the official ``remove_per_epoch`` Δ is ``steps per epoch / Δ``
here), plus a per-example offset o drawn with P(o) ∝ exp(−λ·o) (removal smoothing, o < 100 as
in the official code), and everything once the schedule reaches ``remove_all_at``. Once no trace is
left the model answers directly, with No-CoT's passes. The optimizer restarts when the removal
grows, as the paper's does.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from kava.curricula.base import Curriculum, register
from kava.runtime.validation import ConfigError

MAX_OFFSET = 100  # the official removal smoothing's truncation


def offset_probabilities(lam: float) -> torch.Tensor:
    """iCoT's removal smoothing: P(o) = (1 − e^−λ)·e^−λo for o < 100, the tail's mass on the last."""
    o = torch.arange(MAX_OFFSET, dtype=torch.float64)
    p = (1 - math.exp(-lam)) * torch.exp(-lam * o)
    p[-1] += 1 - p.sum()
    return p


@register
@dataclass(frozen=True)
class ICoTSchedule(Curriculum):
    """Tokens removed from the front of the trace: ``start + step // stage_steps`` scheduled, plus a
    smoothing offset per example; the whole trace from ``remove_all_at`` scheduled tokens on."""

    name: ClassVar[str] = "icot"

    stage_steps: int
    smoothing_lambda: float | None  # None: no smoothing (the official λ = inf)
    remove_all_at: int | None = None
    start: int = 0
    seed: int = 0

    # ---- for a config --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "ICoTSchedule":
        return cls(cfg.stage_steps, cfg.removal_smoothing, cfg.remove_all_at, seed=cfg.seed)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.uses_student or not cfg.teacher_uses_cot or cfg.teacher_drop_last_step:
            raise ConfigError("method.curriculum: icot trains the teacher's CoT alone, its whole trace (student_ce false, "
                              "alpha_codi 0, alpha_kv 0, teacher_drop_last_step false); use method.preset: icot")

    @classmethod
    def answer_mode(cls, cfg: Any, mode: str) -> str:
        """The trace is gone by the end of training: the model answers directly, as No-CoT does."""
        return "direct" if mode == "cot" else mode

    @classmethod
    def demo_knobs(cls, steps: int, trace_tokens: int) -> dict[str, Any]:
        """One more token removed every ``stage_steps``, the whole trace gone after 60 % of the
        phase; the rest trains direct answers, as the model will give them."""
        return {"stage_steps": max(1, int(0.6 * steps) // trace_tokens), "remove_all_at": trace_tokens}

    # ---- the schedule ----------------------------------------------------------------------
    def stage_at(self, step: int) -> int:
        """The scheduled number of removed tokens at optimizer step ``step``."""
        return self.start + step // self.stage_steps

    def complete_at(self, trace_tokens: int) -> int:
        """The first step at which a trace of ``trace_tokens`` tokens is scheduled to be gone
        (smoothing offsets may remove it earlier)."""
        tokens = trace_tokens if self.remove_all_at is None else min(trace_tokens, self.remove_all_at)
        return max(0, tokens - self.start) * self.stage_steps

    def settled_at(self, trace_tokens: int) -> int:
        return self.complete_at(trace_tokens)

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

    def teacher_trace(self, step: int, ids: list[int], key: bytes) -> list[int]:
        """The trace without its first `removed` tokens."""
        return ids[self.removed(step, len(ids), key):]
