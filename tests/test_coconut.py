"""Coconut (Hao et al. 2024): the stage curriculum, continuous thoughts, and training across stages."""

from __future__ import annotations

import pytest
import torch

from kava.api import generate
from kava.config import ConfigError, preset
from kava.curricula.coconut import CoconutSchedule
from kava.data.records import Record
from kava.model.sequences import positions_from_mask
from kava.model.kava_model import KavaModel
from kava.training.engine import train

from conftest import TRAIN_RECORDS, build_model, make_tokenizer, tiny_model, train_config

STEPS = tuple(f"<<{i}+1={i + 1}>>" for i in range(1, 7))


def coconut(**over) -> KavaModel:
    """A tiny Coconut model: c = 2, K = 2 (4 thoughts), stages of 2 optimizer steps."""
    over = {"thoughts_per_step": 2, "max_stage": 2, "num_latents": 4, "stage_steps": 2, **over}
    return build_model("coconut", **over)


@pytest.mark.parametrize("n_steps", range(1, 7))
def test_which_steps_are_thoughts_at_each_stage(n_steps):
    """Stage k ≤ K: the first k steps become k·c thoughts (all of them when the trace is shorter);
    past K: every step, K·c thoughts (the official pad_latent_to_max)."""
    s = CoconutSchedule(thoughts_per_step=2, max_stage=3, steps_per_stage=1, start_stage=0)
    steps = STEPS[:n_steps]
    for k in range(0, 7):
        stage = s.stage(k)
        assert stage.thoughts == 2 * min(k, 3)
        assert stage.remaining(steps) == (() if k > 3 else steps[k:])
    assert s.stage(0).remaining(steps) == steps  # stage 0: the CoT itself, no thought


def test_stage_schedule_and_boundaries():
    s = CoconutSchedule(thoughts_per_step=2, max_stage=3, steps_per_stage=5)  # starts at stage 1
    assert [s.stage_at(i) for i in (0, 4, 5, 9, 10, 14, 15, 100)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert s.boundaries(30) == [5, 10, 15]


def test_the_student_writes_the_steps_left_and_no_loss_falls_on_question_or_thoughts(records):
    model = coconut()
    b = model.builder
    r = records[0]  # three steps
    for step, (skipped, thoughts) in {0: (1, 2), 2: (2, 4), 4: (3, 4), 9: (3, 4)}.items():
        batch = b.training_batch([r], step=step)
        assert int(batch["s_num_latents"]) == thoughts
        rest = b.cot_ids(r.steps[skipped:], drop_last=False)
        want = [b.eot_id] + rest + b.prompt_ids + b.answer_ids(r.answer)
        assert batch["s_answer_ids"][0].tolist() == want
        assert batch["s_ce_mask"][0].tolist() == [False] + [True] * (len(want) - 1)  # <eot> is given
    assert "s_ce_mask" not in {k for k in batch if k.startswith("s_prefix")}  # the prefix has no targets
    with pytest.raises(ValueError, match="step="):
        b.training_batch([r])


def reference_thoughts(model: KavaModel, ids: list[int], n: int) -> torch.Tensor:
    """Continuous thoughts by the definition, one full forward per thought, no cache: the last
    hidden state of the sequence so far is appended as the next input embedding."""
    embeds = model.embed(torch.tensor([ids]))
    thoughts = []
    for _ in range(n):
        pos = torch.arange(embeds.shape[1]).view(1, -1)
        out = model.lm.get_decoder()(inputs_embeds=embeds, position_ids=pos, use_cache=False)
        h = out.last_hidden_state[:, -1:]
        thoughts.append(h)
        embeds = torch.cat([embeds, h], 1)
    return torch.cat(thoughts, 1)[0]


def test_thoughts_equal_the_step_by_step_recurrence_and_do_not_depend_on_batch_mates(records):
    model = coconut()
    prefix = model.builder.student_prefix([r.question for r in records])
    with torch.no_grad():
        state = model.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"])
        for i, r in enumerate(records):  # the batch is left-padded: the examples differ in length
            ids = model.builder.question_ids(r.question) + [model.builder.bot_id]
            torch.testing.assert_close(state.latents[i], reference_thoughts(model, ids, 4), atol=1e-6, rtol=1e-5)
    assert state.forward_passes == 1 + 4


def test_the_loss_equals_a_full_sequence_reference_and_reaches_the_thoughts(records):
    model = coconut().train()
    batch = model.builder.training_batch(records[:1], step=2)  # stage 2: 4 thoughts, 1 step left
    thoughts = []  # each thought as fed back (Coconut has no projection: project() is the identity)
    project = model.project
    model.project = lambda h: (thoughts.append(project(h)), thoughts[-1])[1]
    out = model(batch, return_internals=True)
    assert set(out.terms) == {"ce_student"}
    # Reference: question, <bot>, the thoughts as embeddings, then the answer segment, in one pass.
    p_ids, ans = batch["s_prefix_ids"], batch["s_answer_ids"]
    embeds = torch.cat([model.embed(p_ids), out.student.latents, model.embed(ans)], 1)
    logits = model.lm(inputs_embeds=embeds, position_ids=torch.arange(embeds.shape[1]).view(1, -1)).logits
    start = p_ids.shape[1] + 4  # the <eot> column
    targets = ans[0, 1:]
    ce = torch.nn.functional.cross_entropy(logits[0, start : start + len(targets)], targets)
    torch.testing.assert_close(out.terms["ce_student"], ce, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.loss, thoughts[:4])  # the fifth is computed after the last thought, unused
    assert all(g.abs().sum() > 0 for g in grads)  # every thought carries gradient back into the recurrence


def test_coconut_config_errors():
    with pytest.raises(ConfigError, match="num_latents must be 6"):
        preset("coconut", max_stage=3, thoughts_per_step=2, num_latents=8)
    with pytest.raises(ConfigError, match=r"thoughts_per_step \(c\): must be >= 1"):
        preset("coconut", thoughts_per_step=0)
    with pytest.raises(ConfigError, match="use method.preset: coconut"):
        preset("pccot", curriculum="coconut", num_latents=6)
    with pytest.raises(ConfigError, match="stage_steps"):
        train(coconut(stage_steps=0), TRAIN_RECORDS, train_config(), output_dir="/nonexistent/never-written")


def test_a_dataset_without_step_boundaries_is_refused_before_training(tmp_path):
    flat = [Record(r.question, (" ".join(r.steps),), r.answer) for r in TRAIN_RECORDS]
    with pytest.raises(ConfigError, match="single step"):
        train(coconut(), flat, train_config(), output_dir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def _adam_steps(run_dir) -> int:
    """AdamW's step count in the newest checkpoint (the moments restart with it)."""
    from kava.training.checkpoint import latest_checkpoint

    state = torch.load(latest_checkpoint(run_dir / "checkpoints") / "optimizer.bin", weights_only=True)
    return int(next(iter(state["state"].values()))["step"])


@pytest.mark.parametrize("reset", [True, False])
def test_the_optimizer_restarts_when_a_stage_starts(tmp_path, reset):
    """Stages of 2 steps from stage 1: boundaries at steps 2 and 4; after 5 steps AdamW has seen
    1 step since the last reset, or all 5 without resets."""
    train(coconut(reset_optimizer_per_stage=reset).train(), TRAIN_RECORDS, train_config(max_steps=5, save_every=5),
          output_dir=tmp_path)
    assert _adam_steps(tmp_path) == (1 if reset else 5)


def test_resume_across_a_stage_boundary_is_exact(tmp_path):
    cfg = train_config(max_steps=6, save_every=1)
    straight = train(coconut().train(), TRAIN_RECORDS, cfg, output_dir=tmp_path / "a")
    first = train(coconut().train(), TRAIN_RECORDS, cfg, output_dir=tmp_path / "b", stop_after=3)  # mid stage 2
    assert first.interrupted
    resumed = train(coconut().train(), TRAIN_RECORDS, cfg, output_dir=tmp_path / "b", resume=True)
    assert [e["stage"] for e in straight.history] == [1, 1, 2, 2, 3, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["ce_student"] == pytest.approx(b["ce_student"], abs=1e-6), a["step"]


def test_a_trained_coconut_answers_after_its_thoughts(tmp_path):
    result = train(coconut().train(), TRAIN_RECORDS, train_config(max_steps=2), output_dir=tmp_path)
    model = KavaModel.from_pretrained(result.final_dir, base_model=tiny_model())
    answer = generate(model, TRAIN_RECORDS[0].question, max_new_tokens=3)
    assert answer.mode == "latent" and answer.forward_passes == 1 + 4 + 3  # prefix, K·c thoughts, the answer
    assert positions_from_mask(torch.ones(1, 3)).tolist() == [[0, 1, 2]]


def test_coconut_starts_from_an_exported_cot_model(tmp_path):
    """The configs' path: a CoT run, merged (`kava train --export`), is the base a Coconut run wraps."""
    from kava.model.loading import ModelSource
    from kava.training.export import export_merged

    cot = build_model("cot").train()
    result = train(cot, TRAIN_RECORDS, train_config(max_steps=1), output_dir=tmp_path / "cot")
    trained = build_model("cot")
    trained.load_trained(result.final_dir)
    merged = export_merged(trained, tmp_path / "merged")
    lm, tok = ModelSource.parse(str(merged)).load()
    model = KavaModel(lm, tok, preset("coconut", thoughts_per_step=2, max_stage=2, num_latents=4, stage_steps=1,
                                      lora_r=4))
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7]])
        torch.testing.assert_close(model.lm(ids).logits, trained.lm(ids).logits)  # the CoT weights, adapter still zero
    out = model.train()(model.builder.training_batch(TRAIN_RECORDS[:2], step=0))
    assert out.loss.isfinite()
