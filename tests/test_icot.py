"""iCoT (Deng et al. 2024): trace tokens removed from the front on a schedule, then direct answers."""

from __future__ import annotations

import math

import pytest
import torch

from kava.api import generate
from kava.config import ConfigError, preset
from kava.curricula.icot import ICoTSchedule, offset_probabilities
from kava.model.kava_model import KavaModel
from kava.training.engine import train

from conftest import TRAIN_RECORDS, build_model, tiny_model, train_config
from test_coconut import _adam_steps


def test_removal_schedule_and_resets():
    s = ICoTSchedule(stage_steps=3, smoothing_lambda=None, remove_all_at=2)
    assert [s.stage_at(i) for i in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [s.removes_all(i) for i in (5, 6)] == [False, True]
    assert [i for i in range(12) if s.resets_at(i)] == [3, 6]  # none once everything is removed
    assert s.removed(4, 10, b"x") == 1 and s.removed(6, 10, b"x") == 10 and s.removed(0, 0, b"x") == 0


def test_smoothing_distribution_and_seeded_offsets():
    p = offset_probabilities(4.0)
    assert p.sum().item() == pytest.approx(1.0) and (p >= 0).all()
    assert p[1] / p[0] == pytest.approx(math.exp(-4.0)) and p[0] == pytest.approx(1 - math.exp(-4.0))
    s = ICoTSchedule(stage_steps=1, smoothing_lambda=1.0, seed=3)
    draws = [s.offset(7, f"example {i}".encode()) for i in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3)[:3].double() / len(draws)
    torch.testing.assert_close(freq, offset_probabilities(1.0)[:3], atol=0.025, rtol=0)  # P(0)=.632, P(1)=.233, P(2)=.086
    assert s.offset(7, b"a") == s.offset(7, b"a")  # the same example, the same step: the same offset
    assert len({s.offset(step, b"a") for step in range(200)}) > 1  # but it changes from step to step
    assert ICoTSchedule(1, None).offset(7, b"a") == 0


def test_the_teacher_loses_trace_tokens_from_the_front(records):
    model = build_model("icot", stage_steps=2, removal_smoothing=None, remove_all_at=4)
    b = model.builder
    r = records[0]
    full = b.cot_ids(r.steps, drop_last=False)
    q = b.question_ids(r.question)
    for step, n in {0: 0, 1: 0, 2: 1, 5: 2, 6: 3, 8: len(full)}.items():
        batch = b.training_batch([r], step=step)
        want = q + full[n:] + b.prompt_ids + b.answer_ids(r.answer)
        assert batch["t_input_ids"][0].tolist() == want, step
        assert int(batch["t_cot_mask"].sum()) == len(full) - n
        assert int(batch["t_ce_mask"].sum()) == len(want) - len(q)  # the question carries no loss
    # With the whole trace removed the teacher sequence is No-CoT's.
    nocot = build_model("nocot").builder.training_batch([r])
    assert torch.equal(b.training_batch([r], step=8)["t_input_ids"], nocot["t_input_ids"])


def test_an_example_loses_the_same_tokens_whatever_its_batch(records):
    b = build_model("icot", stage_steps=1, removal_smoothing=0.5).builder
    alone = [b.training_batch([r], step=5) for r in records]
    together = b.training_batch(records, step=5)
    for i, one in enumerate(alone):
        row = together["t_input_ids"][i][together["t_attention_mask"][i].bool()]
        assert row.tolist() == one["t_input_ids"][0].tolist()


def test_icot_config_errors():
    with pytest.raises(ConfigError, match="use method.preset: icot"):
        preset("kava", curriculum="icot")
    with pytest.raises(ConfigError, match=r"removal_smoothing \(λ\): must be > 0"):
        preset("icot", removal_smoothing=0.0)
    with pytest.raises(ConfigError, match="stage_steps"):
        build_model("icot").builder.training_batch(TRAIN_RECORDS[:1], step=0)


@pytest.mark.parametrize("remove_all_at,adam_steps", [(None, 1), (1, 5)])
def test_the_optimizer_restarts_when_the_removal_grows(tmp_path, remove_all_at, adam_steps):
    """Stages of 2 steps, 7 steps: removal grows at steps 2, 4 and 6. With everything removed from 1
    token on, only the step-2 reset happens: none after a batch with the whole trace removed (the
    official rule)."""
    model = build_model("icot", stage_steps=2, remove_all_at=remove_all_at).train()
    train(model, TRAIN_RECORDS, train_config(max_steps=7, save_every=7), output_dir=tmp_path)
    assert _adam_steps(tmp_path) == adam_steps


def test_a_trained_icot_model_answers_directly(tmp_path):
    result = train(build_model("icot", stage_steps=1).train(), TRAIN_RECORDS, train_config(max_steps=2), output_dir=tmp_path)
    model = KavaModel.from_pretrained(result.final_dir, base_model=tiny_model())
    assert model.config.inference_mode == "direct"
    nocot = build_model("nocot")
    mine, theirs = (generate(m, TRAIN_RECORDS[0].question, max_new_tokens=4) for m in (model, nocot))
    assert mine.mode == "direct" and mine.forward_passes == theirs.forward_passes
