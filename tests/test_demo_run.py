"""The demo pipeline end to end with a handful of steps (wiring, outputs, recipe), not its accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from kava.demo.run import DemoSettings, run_demo


def _small(**over) -> DemoSettings:
    base = dict(methods=("nocot", "kava"), steps={"nocot": 2, "cot": 2, "latent": 2}, batch_size=4,
                test_size=6, eval_batch_size=3, num_latents=3, num_iterations=2, curve_points=2, curve_valid_size=4)
    return DemoSettings(**(base | over))


def test_demo_pipeline_writes_summary_runs_and_plot(tmp_path):
    out = run_demo(tmp_path, _small(), progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"nocot", "kava"}
    assert summary["test_questions"] == 6
    kava = summary["methods"]["kava"]
    # 1 init + T iterations + 1 (<eot> P) + one per further answer token: T + 1 + tokens with T = 2.
    assert kava["forward_passes"]["mean"] == pytest.approx(3 + kava["generated_tokens"]["mean"])
    assert (tmp_path / "accuracy_vs_forward_passes.png").exists()
    # cot was trained (the latent methods start from it) but not reported, as asked.
    assert (tmp_path / "runs" / "cot-seed0" / "final" / "kava_config.json").exists()
    assert (tmp_path / "runs" / "kava-seed0" / "eval" / "predictions.jsonl").exists()
    assert out["methods"].keys() == summary["methods"].keys()


def test_demo_records_learning_curves_of_every_trained_run(tmp_path):
    run_demo(tmp_path, _small(), progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    curves = summary["learning_curves"]
    assert set(curves) == {"nocot", "cot", "kava"}  # cot too: the latent methods start from it
    for method, runs in curves.items():
        [run] = runs
        points = run["points"]
        assert run["seed"] == 0 and [p["step"] for p in points] == [1, 2]  # every 2 // 2 steps
        times = [p["train_time_s"] for p in points]
        assert 0 < times[0] < times[1]
        assert all(0 <= p["accuracy"] <= 1 for p in points)
        record = json.loads((tmp_path / "runs" / f"{method}-seed0" / "demo_run.json").read_text())
        assert record["curve"] == points and record["train_time_s"] == pytest.approx(times[-1])
    # kava continues the cot run: its curve starts where cot's training ended.
    assert curves["kava"][0]["start_s"] == pytest.approx(curves["cot"][0]["points"][-1]["train_time_s"])
    assert curves["nocot"][0]["start_s"] == 0
    records = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/demo_run.json")]
    assert len(records) == 3
    assert summary["curve_eval_time_all_runs_s"] == pytest.approx(sum(r["curve_eval_time_s"] for r in records))
    assert (tmp_path / "learning_curves.png").exists()


def test_rerun_needs_resume_which_reuses_completed_runs(tmp_path):
    first = run_demo(tmp_path, _small(), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_demo(tmp_path, _small(), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    again = run_demo(tmp_path, _small(), progress=False, resume=True)
    assert again["methods"] == first["methods"]  # same numbers, read back rather than recomputed
    # The recorded training time of every run (cot included) is carried over, not re-measured.
    assert again["train_time_all_runs_s"] == pytest.approx(first["train_time_all_runs_s"])
    assert again["learning_curves"] == first["learning_curves"]  # so are the learning curves
    assert again["learning_curves"]["kava"][0]["points"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamps


def test_resume_refuses_runs_made_with_other_settings(tmp_path):
    run_demo(tmp_path, _small(), progress=False)
    with pytest.raises(ValueError, match=r"nocot-seed0 was trained with other settings \(train.max_steps\)"):
        run_demo(tmp_path, _small(steps={"nocot": 3, "cot": 2, "latent": 2}), progress=False, resume=True)


def test_runs_recorded_before_a_knob_existed_are_reused(tmp_path):
    """A knob added later (here teacher_dropout) defaults to the behaviour the run was trained with:
    its absence from an older record does not void the run; a recorded value that differs does."""
    from kava.demo.run import RUN_RECORD

    run_demo(tmp_path, _small(), progress=False)
    path = tmp_path / "runs" / "kava-seed0" / RUN_RECORD
    record = json.loads(path.read_text())
    del record["identity"]["method"]["teacher_dropout"]
    path.write_text(json.dumps(record))
    run_demo(tmp_path, _small(), progress=False, resume=True)
    record["identity"]["method"]["teacher_dropout"] = False
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"kava-seed0 was trained with other settings \(method.teacher_dropout\)"):
        run_demo(tmp_path, _small(), progress=False, resume=True)


def test_resume_refuses_runs_trained_on_another_task(tmp_path):
    from kava.demo.task import TaskConfig

    run_demo(tmp_path, _small(), progress=False)
    with pytest.raises(ValueError, match=r"trained with other settings \(task.max_ops\)"):
        run_demo(tmp_path, _small(task=TaskConfig(max_ops=4)), progress=False, resume=True)


def test_interrupted_latent_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from kava.training import engine

    real_train = engine.train

    def stop_kava_after_one_step(model, data, cfg, output_dir, **kw):  # as if Ctrl-C came mid-run
        if "kava" in str(output_dir):
            kw["stop_after"] = 1
        return real_train(model, data, cfg, output_dir=output_dir, **kw)

    s = _small(steps={"nocot": 2, "cot": 2, "latent": 4})
    monkeypatch.setattr(engine, "train", stop_kava_after_one_step)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        run_demo(tmp_path, s, progress=False)
    monkeypatch.setattr(engine, "train", real_train)
    out = run_demo(tmp_path, s, progress=False, resume=True)
    history = (tmp_path / "runs" / "kava-seed0" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [1, 2, 3, 4]  # continued, not restarted
    # The curve and the training time count the steps from before the interruption too.
    record = json.loads((tmp_path / "runs" / "kava-seed0" / "demo_run.json").read_text())
    assert [p["step"] for p in record["curve"]] == [2, 4]
    assert record["train_time_s"] == pytest.approx(sum(json.loads(line)["step_time_s"] for line in history))
    # ... and it ends where an uninterrupted run ends: the same answers to every test question.
    straight = run_demo(tmp_path / "straight", s, progress=False)
    assert out["methods"]["kava"]["accuracy"] == straight["methods"]["kava"]["accuracy"]
    answers = [[json.loads(line)["prediction"] for line in (d / "runs" / "kava-seed0" / "eval" / "predictions.jsonl").open()]
               for d in (tmp_path, tmp_path / "straight")]
    assert answers[0] == answers[1]


def test_curve_settings_leave_a_run_reusable(tmp_path):
    first = run_demo(tmp_path, _small(methods=("nocot",), curve_points=0), progress=False)
    assert first["learning_curves"]["nocot"][0]["points"] == [] and first["curve_eval_time_all_runs_s"] == 0
    assert not (tmp_path / "learning_curves.png").exists()
    # Evaluating more often does not change the trained model: the run is reused, with the curve it has.
    again = run_demo(tmp_path, _small(methods=("nocot",), curve_points=2), progress=False, resume=True)
    assert again["learning_curves"] == first["learning_curves"]


def test_diagnostics_of_a_finished_demo(tmp_path):
    from kava.demo.diagnose import diagnose, format_diagnostics

    with pytest.raises(FileNotFoundError, match="no trained cot model for seed 0"):
        diagnose(tmp_path)
    run_demo(tmp_path, _small(), progress=False)
    result = diagnose(tmp_path, questions=4, batch_size=2)
    assert json.loads((tmp_path / "diagnostics-seed0.json").read_text()) == result
    assert set(result["latent_ablation"]) == {"as_trained", "zero", "other_question"}
    for row in result["oracle"].values():
        assert set(row) == {"targets_as_trained", "last_step_kept", "nothing_evicted", "nothing_evicted_last_step_kept"}
        assert all(0 <= v <= 1 for v in row.values())
    assert "teacher-cache oracle" in format_diagnostics(result)


def test_latent_ablation_removes_the_question_from_the_latents_and_is_undone(tmp_path):
    from kava.demo.diagnose import latent_inputs
    from kava.model.kava_model import KavaModel

    run_demo(tmp_path, _small(), progress=False)
    model = KavaModel.from_pretrained(tmp_path / "runs" / "kava-seed0" / "final").eval()
    prefix = model.builder.student_prefix(["Ann has 5 pens. She buys 3 more.", "Bo has 9 cups. He breaks 2."])

    def latents() -> torch.Tensor:
        with torch.no_grad():
            return model.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"]).latents

    trained = latents()
    assert not torch.allclose(trained[0], trained[1])
    with latent_inputs(model, "zero"):
        zeroed = latents()
    assert torch.equal(zeroed, torch.zeros_like(zeroed))
    with latent_inputs(model, "other_question"):
        swapped = latents()
    assert torch.allclose(swapped[:, 0], trained.roll(1, dims=0)[:, 0])  # slot 1: the other question's <bot> output
    assert torch.equal(latents(), trained)


@pytest.mark.parametrize("full", [False, True])
def test_long_flag_trains_every_method_longer_with_the_same_recipe(monkeypatch, full):
    import argparse

    from kava.demo import cli, run

    seen = {}
    monkeypatch.setattr(run, "run_demo", lambda out, settings, **kw: seen.update(settings=settings))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--long"] + (["--full"] if full else []))) == 0
    s = seen["settings"]
    default = DemoSettings.full() if full else DemoSettings()
    assert s.steps == {"nocot": 10000, "cot": 3000, "latent": 10000} and s.curve_points == 10
    assert s.methods == default.methods and s.seeds == default.seeds
    # The same recipe; a curriculum's stages stretch over the longer phase with it.
    for m in s.methods:
        mine, theirs = s.method_config(m), default.method_config(m)
        assert mine.replace(stage_steps=0, remove_all_at=None) == theirs.replace(stage_steps=0, remove_all_at=None)
        assert mine.stage_steps * default.steps["latent"] == theirs.stage_steps * s.steps["latent"] or (
            mine.stage_steps == theirs.stage_steps == 0)


def test_methods_flag_picks_a_subset_and_refuses_unknown_or_repeated_names(monkeypatch, capsys):
    import argparse

    from kava.demo import cli, run

    seen = {}
    monkeypatch.setattr(run, "run_demo", lambda out, settings, **kw: seen.update(settings=settings))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--full", "--methods", "cot, pccot"])) == 0
    assert seen["settings"].methods == ("cot", "pccot") and seen["settings"].seeds == (0, 1, 2)
    for bad in ("kava,h2o", "kava,kava", ","):
        seen.clear()
        assert cli.run(parser.parse_args(["--methods", bad])) == 2
        assert "--methods" in capsys.readouterr().err and not seen


def test_demo_recipe_keeps_the_last_step_and_matches_pre_rope_keys_for_latent_methods_only():
    from kava.demo import run

    s = DemoSettings.full()
    for method in s.methods:
        cfg = s.method_config(method)
        if run.METHODS[method].latent:
            assert (cfg.teacher_drop_last_step, cfg.kv_key_space) == (False, "pre_rope")
        else:
            assert cfg == run.preset(method, finetune="full", seed=0)
