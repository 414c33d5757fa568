"""The demo pipeline end to end with a handful of steps (wiring, outputs, recipe), not its accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from kava.demo.run import DemoSettings
from kava.experiments.demo_preset import run_demo
from kava.experiments.sweep import SweepError
from kava.runtime.stop import StoppedAfterSaving


def _small(**over) -> DemoSettings:
    base = dict(methods=("nocot", "kava"), steps={"nocot": 2, "cot": 2, "latent": 2}, batch_size=4,
                test_size=6, eval_batch_size=3, num_latents=3, num_iterations=2, curve_points=2, curve_valid_size=4)
    return DemoSettings(**(base | over))


def _metrics(root, run: str) -> dict:
    return json.loads((root / "runs" / run / "metrics.json").read_text())


def test_demo_is_a_sweep_with_a_report(tmp_path):
    out = run_demo(tmp_path, _small(), progress=False)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    # cot is a run of the grid (the latent methods start from it), so it is reported too.
    assert set(summary["methods"]) == {"nocot", "cot", "kava"}
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"] == "kava demo"
    kava = summary["methods"]["kava"]
    # 1 init + T iterations + 1 (<eot> P) + one per further answer token: T + 1 + tokens with T = 2.
    assert kava["forward_passes"]["mean"] == pytest.approx(3 + kava["generated_tokens"]["mean"])
    for plot in ("accuracy_vs_forward_passes.png", "learning_curves.png", "loss_curves.png"):
        assert (tmp_path / "report" / plot).exists()
    assert (tmp_path / "runs" / "cot-seed0" / "final" / "kava_config.json").exists()
    assert (tmp_path / "runs" / "kava-seed0" / "eval" / "predictions.jsonl").exists()
    assert not list(tmp_path.rglob("demo_run.json"))  # one run record: metrics.json
    assert _metrics(tmp_path, "kava-seed0")["cot_run"] == str(tmp_path / "runs" / "cot-seed0")
    assert out["methods"].keys() == summary["methods"].keys()


def test_demo_records_learning_curves_of_every_run(tmp_path):
    run_demo(tmp_path, _small(), progress=False)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    curves = summary["learning_curves"]
    assert set(curves) == {"nocot", "cot", "kava"}
    for method, runs in curves.items():
        [run] = runs
        points = run["points"]
        assert run["seed"] == 0 and [p["step"] for p in points] == [1, 2]  # every 2 // 2 steps
        times = [p["train_time_s"] for p in points]
        assert 0 < times[0] < times[1]
        assert all(0 <= p["accuracy"] <= 1 for p in points)
        metrics = _metrics(tmp_path, f"{method}-seed0")
        assert metrics["curve"] == points and metrics["train_time_s"] == pytest.approx(times[-1])
    # kava continues the cot run: its curve starts where cot's training ended.
    assert curves["kava"][0]["start_s"] == pytest.approx(curves["cot"][0]["points"][-1]["train_time_s"])
    assert curves["nocot"][0]["start_s"] == 0
    records = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/metrics.json")]
    assert len(records) == 3
    assert summary["curve_eval_time_all_runs_s"] == pytest.approx(sum(r["curve_eval_time_s"] for r in records))
    assert summary["train_time_all_runs_s"] == pytest.approx(sum(r["train_time_s"] for r in records))


def test_rerun_needs_resume_which_reuses_finished_runs(tmp_path):
    first = run_demo(tmp_path, _small(), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_demo(tmp_path, _small(), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    report = json.loads((tmp_path / "report" / "summary.json").read_text())
    again = run_demo(tmp_path, _small(), progress=False, resume=True)
    assert again["methods"] == first["methods"]  # same numbers, read back rather than recomputed
    # The recorded training time of every run and the learning curves are carried over, not re-measured.
    assert again["train_time_all_runs_s"] == pytest.approx(first["train_time_all_runs_s"])
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["learning_curves"] == report["learning_curves"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamps


def test_resume_refuses_runs_made_with_other_settings_and_keeps_the_other_phases(tmp_path):
    run_demo(tmp_path, _small(), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")}
    steps = _small().steps
    # Only the run of the changed phase is refused: cot-seed0 (first in the grid) is reused.
    with pytest.raises(SweepError, match=r"nocot-seed0 holds a finished run with other settings \(settings.steps.nocot"):
        run_demo(tmp_path, _small(steps={**steps, "nocot": steps["nocot"] + 1}), progress=False, resume=True)
    with pytest.raises(SweepError, match=r"kava-seed0 holds a finished run with other settings \(settings.lr.latent"):
        run_demo(tmp_path, _small(lr={**_small().lr, "latent": 5e-4}), progress=False, resume=True)
    with pytest.raises(SweepError, match=r"cot-seed0 holds a finished run with other settings \(settings.steps.cot"):
        run_demo(tmp_path, _small(steps={**steps, "cot": steps["cot"] + 1}), progress=False, resume=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.safetensors")} == stamps


def test_runs_recorded_before_a_knob_existed_are_reused(tmp_path):
    """A knob added later (here teacher_dropout) defaults to the behaviour the run was trained with:
    its absence from an older record does not void the run; a recorded value that differs does."""
    run_demo(tmp_path, _small(), progress=False)
    path = tmp_path / "runs" / "kava-seed0" / "metrics.json"
    record = json.loads(path.read_text())
    del record["config"]["method_config"]["teacher_dropout"]
    path.write_text(json.dumps(record))
    run_demo(tmp_path, _small(), progress=False, resume=True)
    record["config"]["method_config"]["teacher_dropout"] = False
    path.write_text(json.dumps(record))
    with pytest.raises(SweepError, match=r"kava-seed0 holds a finished run with other settings \(method_config.teacher_dropout"):
        run_demo(tmp_path, _small(), progress=False, resume=True)


def test_resume_refuses_runs_trained_on_another_task(tmp_path):
    from kava.demo.task import TaskConfig

    run_demo(tmp_path, _small(), progress=False)
    with pytest.raises(SweepError, match=r"other settings \(settings.task.max_ops"):
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
    with pytest.raises(StoppedAfterSaving, match="checkpoint"):
        run_demo(tmp_path, s, progress=False)
    assert not (tmp_path / "runs" / "kava-seed0" / "metrics.json").exists()  # not counted as finished
    monkeypatch.setattr(engine, "train", real_train)
    out = run_demo(tmp_path, s, progress=False, resume=True)
    history = (tmp_path / "runs" / "kava-seed0" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [1, 2, 3, 4]  # continued, not restarted
    # The curve and the training time count the steps from before the interruption too.
    record = _metrics(tmp_path, "kava-seed0")
    assert [p["step"] for p in record["curve"]] == [2, 4]
    assert record["train_time_s"] == pytest.approx(sum(json.loads(line)["step_time_s"] for line in history))
    # ... and it ends where an uninterrupted run ends: the same answers to every test question.
    straight = run_demo(tmp_path / "straight", s, progress=False)
    assert out["methods"]["kava"]["accuracy"] == straight["methods"]["kava"]["accuracy"]
    answers = [[json.loads(line)["prediction"] for line in (d / "runs" / "kava-seed0" / "eval" / "predictions.jsonl").open()]
               for d in (tmp_path, tmp_path / "straight")]
    assert answers[0] == answers[1]


def test_a_demo_folder_starts_a_sweeps_latent_runs(tmp_path):
    """`kava sweep --cot-from DEMO` takes the demo's CoT runs; one trained otherwise is refused."""
    from kava.experiments.grid import demo_plan
    from kava.experiments.sweep import check_cot_sources

    run_demo(tmp_path / "demo", _small(), progress=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nmethods: [kava]\nseeds: [0]\nsettings: {steps_nocot: 2, steps_cot: 2, steps_latent: 2, "
                    "batch_size: 4, test_size: 6, eval_batch_size: 3, num_latents: 3, num_iterations: 2, "
                    "curve_points: 2, curve_valid_size: 4}\n")
    from kava.experiments.grid import load_grid

    assert check_cot_sources(load_grid(grid, cot_from=tmp_path / "demo")) == []
    grid.write_text(grid.read_text().replace("steps_cot: 2", "steps_cot: 3"))
    [problem] = check_cot_sources(load_grid(grid, cot_from=tmp_path / "demo"))
    assert "trained with other settings" in problem and "train.max_steps" in problem
    assert [r.name for r in demo_plan(_small(seeds=(0, 1))).runs] == [
        "cot-seed0", "nocot-seed0", "kava-seed0", "cot-seed1", "nocot-seed1", "kava-seed1"]


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

    from kava.experiments import demo_cli as cli
    from kava.experiments import demo_preset

    seen = {}
    monkeypatch.setattr(demo_preset, "run_demo", lambda out, settings, **kw: seen.update(settings=settings))
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

    from kava.experiments import demo_cli as cli
    from kava.experiments import demo_preset

    seen = {}
    monkeypatch.setattr(demo_preset, "run_demo", lambda out, settings, **kw: seen.update(settings=settings))
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
