"""The curriculum registry (`kava.curricula`): every curriculum answers the whole interface, and one
registered from outside the package is taken up by the config, the sequence builder and the
engine without a change anywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from kava import curricula
from kava.config import CURRICULA, ConfigError, preset
from kava.curricula import Curriculum
from kava.methods import METHODS
from kava.training.engine import train

from conftest import TRAIN_RECORDS, build_model, train_config
from test_coconut import _adam_steps


def _config_for(name: str, **knobs):
    """A config that trains curriculum ``name``: the first method preset its own checks accept with it."""
    for method in METHODS:
        try:
            return preset(method, curriculum=name, **knobs)
        except ConfigError:
            continue
    raise AssertionError(f"no method preset can train the {name} curriculum")


@pytest.mark.parametrize("name", list(curricula.CURRICULA))
def test_every_registered_curriculum_answers_the_whole_interface(name, records):
    kind = curricula.CURRICULA[name]
    assert issubclass(kind, Curriculum) and kind.name == name and curricula.lookup(name) is kind
    assert name in CURRICULA  # a choice of the config's `curriculum`
    knobs = kind.demo_knobs(100, 30)
    assert knobs.get("stage_steps", 1) >= 1
    cfg = _config_for(name, **{"stage_steps": 2, **knobs})
    kind.check_config(cfg)  # its own checks pass
    assert kind.answer_mode(cfg, "cot") in ("latent", "cot", "direct") and cfg.inference_mode in ("latent", "cot", "direct")
    kind.check_records(records)
    schedule = cfg.curriculum_schedule()
    assert type(schedule) is kind and schedule == kind.from_config(cfg)
    end = schedule.settled_at(30)
    assert isinstance(end, int) and end >= 0
    for step in range(end + 3):
        assert isinstance(schedule.stage_at(step), int) and isinstance(schedule.resets_at(step), bool)
        assert isinstance(schedule.teacher_trace(step, list(range(30)), b"key"), list)
        stage = schedule.student_stage(step)
        assert stage is None or (isinstance(stage.thoughts, int) and isinstance(stage.remaining(("a", "b")), tuple))
    assert not schedule.resets_at(0)
    with pytest.raises(ValueError, match="already registered"):
        curricula.register(kind)


@dataclass(frozen=True)
class DropLast(Curriculum):
    """A throwaway curriculum: from stage 1 on the teacher's trace loses its last token; its model
    answers directly; the optimizer restarts at every step (``every_step``) or never."""

    name: ClassVar[str] = "droplast"
    stage_steps: int
    every_step: bool

    @classmethod
    def from_config(cls, cfg: Any) -> "DropLast":
        return cls(cfg.stage_steps, cfg.extra.get("every_step", True))

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.uses_student:
            raise ConfigError("method.curriculum: droplast trains the teacher alone")

    @classmethod
    def answer_mode(cls, cfg: Any, mode: str) -> str:
        return "direct"

    @classmethod
    def check_records(cls, records) -> None:
        if any(r.question.startswith("refused") for r in records):
            raise ConfigError("droplast refuses these records")

    def stage_at(self, step: int) -> int:
        return min(1, step // self.stage_steps)

    def resets_at(self, step: int) -> bool:
        return step > 0 and self.every_step

    def teacher_trace(self, step: int, ids: list[int], key: bytes) -> list[int]:
        return ids[:-1] if self.stage_at(step) else ids

    def settled_at(self, trace_tokens: int) -> int:
        return self.stage_steps


@pytest.fixture
def droplast(monkeypatch):
    """DropLast in the registry for one test (monkeypatch takes it out again)."""
    monkeypatch.setitem(curricula.CURRICULA, DropLast.name, DropLast)
    return DropLast


def test_an_unregistered_curriculum_is_refused():
    with pytest.raises(ConfigError, match="'droplast' is not one of none, coconut, icot"):
        preset("cot", curriculum="droplast")


def test_a_registered_curriculum_is_taken_up_by_config_builder_and_engine(droplast, records, tmp_path):
    # config: a choice now, its own checks, its answer mode, its schedule
    with pytest.raises(ConfigError, match="droplast trains the teacher alone"):
        preset("kava", curriculum="droplast", stage_steps=1)
    cfg = preset("cot", curriculum="droplast", stage_steps=2)
    assert cfg.inference_mode == "direct" and cfg.curriculum_schedule() == DropLast(2, True)

    # the sequence builder: the teacher's trace at each step is the curriculum's
    model = build_model("cot", curriculum="droplast", stage_steps=2)
    b, r = model.builder, records[0]
    q, cot = b.question_ids(r.question), b.cot_ids(r.steps, drop_last=False)
    for step, trace in {0: cot, 1: cot, 2: cot[:-1], 7: cot[:-1]}.items():
        want = q + trace + b.prompt_ids + b.answer_ids(r.answer)
        assert b.training_batch([r], step=step)["t_input_ids"][0].tolist() == want, step

    # the engine: its data check, its stages in the history, its reset rule
    refused = [type(r)("refused " + r.question, r.steps, r.answer) for r in TRAIN_RECORDS]
    with pytest.raises(ConfigError, match="droplast refuses"):
        train(model, refused, train_config(), output_dir=tmp_path / "refused")
    for every_step, adam_steps in ((True, 1), (False, 3)):
        run = tmp_path / f"every-{every_step}"
        model = build_model("cot", curriculum="droplast", stage_steps=2, extra={"every_step": every_step}).train()
        result = train(model, TRAIN_RECORDS, train_config(max_steps=3, save_every=3), output_dir=run)
        assert [e["stage"] for e in result.history] == [0, 0, 1]
        assert _adam_steps(run) == adam_steps
