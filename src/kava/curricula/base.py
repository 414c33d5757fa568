"""What a curriculum is, and the registry of them (`KavaConfig.curriculum` names one).

A curriculum is a method whose training sequences change as training goes (Coconut, iCoT). One
class holds everything it decides, so the config, the sequence builder, the training engine, the
demo and the bench ask it instead of testing its name:

- for a config (class methods): the checks that span knobs (`check_config`), how the trained model
  answers (`answer_mode`), the training data it needs (`check_records`), its schedule over a demo
  phase (`demo_knobs`), and its schedule itself (`from_config`);
- as that schedule (an instance): the stage of an optimizer step (`stage_at`), where the optimizer
  restarts (`resets_at`), what it does to a batch at a step (`teacher_trace`, `student_stage`), and
  the step from which its batches stop changing (`settled_at`, what the bench spans).

The stage is a pure function of the optimizer step (and of an example's own tokens), so a resumed
run rebuilds the very batches of the uninterrupted one, whatever the batching, and the engine
resets the optimizer exactly where a stage starts.

A new curriculum is one module defining a `Curriculum` subclass decorated with `register`, imported
in ``kava/curricula/__init__.py``. This package imports nothing of kava's above the config's layer
(the config reads the registry for its choices and checks).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from kava.runtime.validation import ConfigError

if TYPE_CHECKING:
    from kava.data.records import Record

NONE = "none"  # `KavaConfig.curriculum` of every method without a curriculum


class StudentStage(Protocol):
    """What a curriculum does to the student's sequence at one step (Coconut's `CoconutStage`)."""

    thoughts: int  # latent thoughts before <eot>: the batch's ``s_num_latents``

    def remaining(self, steps: tuple[str, ...]) -> tuple[str, ...]:
        """The trace steps still written as text after <eot>."""
        ...


class Curriculum:
    """One curriculum. ``cfg`` below is a `kava.config.KavaConfig` (not imported: it imports this)."""

    name: ClassVar[str]  # its `KavaConfig.curriculum` value

    # ---- for a config --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "Curriculum":
        """Its schedule under ``cfg`` (``cfg.stage_steps`` is already checked to be > 0)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The checks that span knobs, run when the config is built: a `ConfigError` naming the knob."""

    @classmethod
    def answer_mode(cls, cfg: Any, mode: str) -> str:
        """How a model trained under it answers ("latent", "cot" or "direct"), given the ``mode`` its
        loss terms imply without a curriculum."""
        return mode

    @classmethod
    def check_records(cls, records: Sequence[Record]) -> None:
        """Refuse training data it cannot use (a `ConfigError`), before the first step."""

    @classmethod
    def demo_knobs(cls, steps: int, trace_tokens: int) -> dict[str, Any]:
        """Its knobs for a demo phase of ``steps`` optimizer steps on traces of at most
        ``trace_tokens`` tokens (`kava.demo.run.DemoSettings.curriculum_knobs`)."""
        return {}

    # ---- the schedule ----------------------------------------------------------------------
    def stage_at(self, step: int) -> int:
        """The stage of optimizer step ``step`` (0-based: the number of steps done before it)."""
        raise NotImplementedError

    def resets_at(self, step: int) -> bool:
        """Whether the optimizer restarts at ``step`` (with ``reset_optimizer_per_stage``): where a
        stage starts."""
        return step > 0 and self.stage_at(step) != self.stage_at(step - 1)

    def teacher_trace(self, step: int, ids: list[int], key: bytes) -> list[int]:
        """The teacher's trace tokens ``ids`` of one example at ``step`` (``key``: the example's own
        tokens, for per-example draws); unchanged by default."""
        return ids

    def student_stage(self, step: int) -> StudentStage | None:
        """What the student's sequence holds at ``step``; None: the method's own (M latents, no text)."""
        return None

    def settled_at(self, trace_tokens: int) -> int:
        """The first step from which the batches of traces of at most ``trace_tokens`` teacher tokens
        no longer change (the bench times a curriculum from step 0 to here)."""
        raise NotImplementedError


CURRICULA: dict[str, type[Curriculum]] = {}  # name → curriculum, in registration order

C = TypeVar("C", bound=type[Curriculum])


def register(cls: C) -> C:
    """Add a curriculum class to the registry (a class decorator); a name can be registered once."""
    if cls.name == NONE or cls.name in CURRICULA:
        raise ValueError(f"curriculum {cls.name!r} is already registered")
    CURRICULA[cls.name] = cls
    return cls


def lookup(name: str) -> type[Curriculum] | None:
    """The curriculum ``name``; None for ``none``."""
    if name == NONE:
        return None
    if name not in CURRICULA:
        raise ConfigError(f"method.curriculum: {name!r} is not one of {', '.join(CHOICES)}")
    return CURRICULA[name]


class _Choices(Collection[str]):
    """``none`` and every registered name, read from the registry each time (the config's choices)."""

    def __contains__(self, name: object) -> bool:
        return name == NONE or name in CURRICULA

    def __iter__(self) -> Iterator[str]:
        return iter((NONE, *CURRICULA))

    def __len__(self) -> int:
        return 1 + len(CURRICULA)


CHOICES: Collection[str] = _Choices()
