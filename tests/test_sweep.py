"""Sweeps: grid parsing (and its one-line errors), resume that runs each configuration once,
per-run commands, and one real tiny run of the demo base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kava.cli import main
from kava.experiments.grid import GridError, load_grid
from kava.experiments.sweep import SweepError, commands, run_sweep

SUMMARY = {"accuracy": 0.5, "mean_forward_passes": 6.0, "mean_generated_tokens": 2.0, "mean_cache_tokens": 49.0,
           "mean_latency_s": 0.002}


def _grid(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


DEMO_GRID = """
base: demo
settings: {steps_latent: 7}
methods: [kava]
seeds: [0, 1]
knobs: {num_iterations: [1, 2]}
variants:
  crop: {eviction: crop}
"""


def test_grid_is_variants_times_knob_product_times_seeds_with_one_cot_run_per_seed(tmp_path):
    plan = load_grid(_grid(tmp_path, DEMO_GRID))
    names = [r.name for r in plan.runs]
    assert names[:5] == ["cot-seed0", "kava-num_iterations=1-seed0", "kava-num_iterations=2-seed0",
                         "kava-crop+num_iterations=1-seed0", "kava-crop+num_iterations=2-seed0"]
    assert len(names) == 2 * (1 + 2 * 2)
    crop = plan.run("kava-crop+num_iterations=2-seed1")
    assert crop.cot == "cot-seed1" and crop.knobs == {"eviction": "crop", "num_iterations": 2}
    assert crop.config["method_config"]["eviction"] == "crop" and crop.config["method_config"]["num_iterations"] == 2
    assert crop.config["settings"]["steps"]["latent"] == 7


def test_the_shipped_ablation_grid_has_54_runs_from_an_existing_cot(tmp_path):
    from pathlib import Path

    grid = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "demo-ablation.yaml"
    plan = load_grid(grid, cot_from=tmp_path)
    assert len(plan.runs) == 18 * 3 and not any(r.method == "cot" for r in plan.runs)
    assert len(load_grid(grid).runs) == 18 * 3 + 3  # without --cot-from the sweep trains CoT per seed
    pre, post = plan.run("kava-seed0").config["method_config"], plan.run("kava-post-rope-seed0").config["method_config"]
    assert (pre["kv_key_space"], pre["selection_key_space"]) == ("pre_rope", "pre_rope")
    assert (post["kv_key_space"], post["selection_key_space"]) == ("post_rope", "post_rope")


def test_the_shipped_evictions_grid_reuses_the_ablation_grids_kept_base_and_cot_runs():
    """configs/sweeps/demo-evictions.yaml: 4 rules × 3 seeds beside rkv; its base and CoT runs are the
    ones kept in docs/results/demo-ablation (same configuration), so the sweep does not retrain them.
    This checks the plan against the kept runs' metrics.json only; the CoT models the rule runs start
    from are not in docs/ (outputs/demo-ablation/, docs/results/README.md)."""
    from kava.experiments.sweep import finished

    root = Path(__file__).resolve().parents[1]
    plan = load_grid(root / "configs" / "sweeps" / "demo-evictions.yaml")
    rules = {"rkv-official", "snapkv", "h2o", "streamingllm"}
    assert len(plan.runs) == 3 * (1 + 1 + len(rules))
    assert {r.config["method_config"]["eviction"] for r in plan.runs if r.method == "kava"} == rules | {"rkv"}
    kept = root / "docs" / "results" / "demo-ablation" / "runs"
    for seed in range(3):
        for name in (f"cot-seed{seed}", f"kava-seed{seed}"):
            assert finished(plan.run(name), kept / name), name


def test_more_seeds_adds_seeds_to_some_methods_with_their_cot_runs(tmp_path):
    plan = load_grid(_grid(tmp_path, "base: demo\nmethods: [nocot, kava, pccot]\nseeds: [0]\n"
                                     "more_seeds: {kava: [1, 2], pccot: [2]}\n"))
    assert [r.name for r in plan.runs] == ["cot-seed0", "nocot-seed0", "kava-seed0", "pccot-seed0",
                                           "cot-seed1", "kava-seed1", "cot-seed2", "kava-seed2", "pccot-seed2"]
    assert plan.run("kava-seed1").cot == "cot-seed1" and plan.run("kava-seed2").config["seed"] == 2
    (tmp_path / "base.yaml").write_text("output_dir: x\nmodel: m\nmethod: {preset: kava}\ndata: {name: gsm8k-aug}\n"
                                        "train: {batch_size: 8, micro_batch_size: 8, epochs: 1}\n")
    train = load_grid(_grid(tmp_path, "base: base.yaml\neval: {dataset: gsm8k}\nmethods: [kava, pccot]\n"
                                      "seeds: [0]\nmore_seeds: {pccot: [0, 1]}\n"))
    assert [r.name for r in train.runs] == ["kava-seed0", "pccot-seed0", "pccot-seed1"]


def test_the_shipped_mult4_grid_has_three_seeds_of_every_method_and_five_of_kava_and_pccot():
    plan = load_grid(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "mult4.yaml")
    seeds = {m: sorted(r.seed for r in plan.runs if r.method == m) for m in {r.method for r in plan.runs}}
    assert seeds == {"cot": [0, 1, 2, 3, 4], "kava": [0, 1, 2, 3, 4], "pccot": [0, 1, 2, 3, 4],
                     **{m: [0, 1, 2] for m in ("nocot", "codi", "pause", "icot", "coconut")}}
    assert {r.config["settings"]["test_size"] for r in plan.runs} == {1000}  # all the public 4×4 test problems


@pytest.mark.parametrize(("text", "where"), [
    ("base: demo\nmethods: [kava]\nvariants: {bad: {eviction: nope}}\n", "variants.bad: method.eviction: 'nope' is not one of"),
    ("base: demo\nmethods: [kava]\nvariants: {bad: {no_such_knob: 1}}\n", "variants.bad: 'no_such_knob' is neither"),
    ("base: demo\nmethods: [kava, nope]\n", "methods: 'nope' is not one of"),
    ("base: demo\nmethods: [kava]\nseeds: 3\n", "seeds: expected a list of integers"),
    ("base: demo\nmethods: [kava]\nmore_seeds: {codi: [1]}\n", "more_seeds.codi: not one of the grid's methods (kava)"),
    ("base: demo\nmethods: [kava]\nmore_seeds: {kava: 1}\n", "more_seeds.kava: expected a list of integers"),
    ("base: demo\nmethods: [kava]\nmore_seeds: [1]\n", "more_seeds: expected a mapping"),
    ("base: demo\nmethods: [kava]\nknobs: {num_latents: 4}\n", "knobs.num_latents: expected a non-empty list"),
    ("base: demo\nmethods: [kava]\nmodels: []\n", "models: unknown key"),
    ("base: nowhere.yaml\nmethods: [kava]\n", "base: no such kava train config"),
    ("base: demo\nmethods: [kava]\nvariants: {x: {num_latents: 4}}\nknobs: {num_latents: [2]}\n", "variants.x: sets num_latents"),
    ("base: demo\nmethods: [kava]\nsettings: {batch_size: 8}\nvariants: {b: {batch_size: 4}}\n", "variants.b: changes the CoT run"),
    ("base: demo\nmethods: [kava\n", "not valid YAML"),
])
def test_grid_errors_are_one_line_naming_file_and_key(tmp_path, text, where):
    path = _grid(tmp_path, text)
    with pytest.raises(GridError) as e:
        load_grid(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and where in message and "\n" not in message


def test_train_base_resolves_configs_with_method_knobs_and_dotted_keys(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "output_dir: x\nmodel: meta-llama/Llama-3.2-1B-Instruct\nmethod: {preset: kava}\n"
        "data: {name: gsm8k-aug}\ntrain: {batch_size: 8, micro_batch_size: 8, epochs: 1}\n")
    plan = load_grid(_grid(tmp_path, "base: base.yaml\neval: {dataset: gsm8k}\nmethods: [kava, pccot]\nseeds: [0]\n"
                                     "variants: {no-projection: {use_projection: false}, lr: {train.lr: 1.0e-4}}\n"))
    assert [r.name for r in plan.runs] == ["kava-seed0", "kava-no-projection-seed0", "kava-lr-seed0",
                                           "pccot-seed0", "pccot-no-projection-seed0", "pccot-lr-seed0"]
    cfg = plan.run("pccot-lr-seed0").config["run_config"]
    assert cfg["method"]["preset"] == "pccot" and cfg["train"]["lr"] == 1e-4 and cfg["train"]["seed"] == 0
    assert plan.run("kava-no-projection-seed0").config["run_config"]["method"]["use_projection"] is False
    with pytest.raises(GridError, match=r"grid.yaml: variants.bad: .*method.kv_loss"):
        load_grid(_grid(tmp_path, "base: base.yaml\neval: {dataset: gsm8k}\nmethods: [kava]\n"
                                  "variants: {bad: {kv_loss: 3}}\n"))
    with pytest.raises(GridError, match="grid.yaml: eval: a train base needs"):
        load_grid(_grid(tmp_path, "base: base.yaml\nmethods: [kava]\n"))


class Counting:
    """A fake runner: counts calls per run, and can fail once at a chosen run (an interruption)."""

    def __init__(self, fail_at: str | None = None):
        self.calls: dict[str, int] = {}
        self.fail_at = fail_at

    def __call__(self, spec, run_dir):
        self.calls[spec.name] = self.calls.get(spec.name, 0) + 1
        (run_dir / "history.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
        if spec.name == self.fail_at:
            self.fail_at = None
            raise KeyboardInterrupt("stopped")
        return {"summary": dict(SUMMARY, accuracy=0.1 * spec.seed), "train_time_s": 1.0, "setting": {}}


def test_interrupted_sweep_resumes_and_runs_each_configuration_exactly_once(tmp_path):
    plan = load_grid(_grid(tmp_path, DEMO_GRID))
    out = tmp_path / "out"
    runner = Counting(fail_at="kava-crop+num_iterations=1-seed0")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, out, runner, echo=lambda _: None)
    assert not (out / "runs" / "kava-crop+num_iterations=1-seed0" / "metrics.json").exists()
    done = run_sweep(plan, out, runner, echo=lambda _: None)
    assert done["skipped"] == [r.name for r in plan.runs[:3]]
    # Every run finished once; the interrupted one was started twice (once interrupted, once to the end).
    assert runner.calls == {r.name: 2 if r.name == "kava-crop+num_iterations=1-seed0" else 1 for r in plan.runs}
    again = run_sweep(plan, out, runner, echo=lambda _: None)
    assert again["ran"] == [] and len(again["skipped"]) == len(plan.runs)
    metrics = json.loads((out / "runs" / "kava-num_iterations=2-seed1" / "metrics.json").read_text())
    assert metrics["config"] == plan.run("kava-num_iterations=2-seed1").config and metrics["seed"] == 1
    assert (out / "runs" / "kava-num_iterations=2-seed1" / "config.json").is_file()
    assert (out / "runs" / "kava-num_iterations=2-seed1" / "run.log").is_file()
    grid = json.loads((out / "sweep.json").read_text())["grid"]  # no machine path: relative to the sweep
    assert not Path(grid).is_absolute() and (out / grid).resolve() == plan.path.resolve()


def test_a_corrupt_metrics_file_means_not_finished_and_the_run_is_redone(tmp_path):
    plan = load_grid(_grid(tmp_path, DEMO_GRID))
    out, runner = tmp_path / "out", Counting()
    run_sweep(plan, out, runner, only=["cot-seed0"], echo=lambda _: None)
    (out / "runs" / "cot-seed0" / "metrics.json").write_text('{"summary": {"accura')
    run_sweep(plan, out, runner, only=["cot-seed0"], echo=lambda _: None)
    assert runner.calls == {"cot-seed0": 2}


def test_a_finished_run_of_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    run_sweep(load_grid(_grid(tmp_path, DEMO_GRID)), out, Counting(), only=["kava-num_iterations=1-seed0"],
              echo=lambda _: None)
    changed = load_grid(_grid(tmp_path, DEMO_GRID.replace("steps_latent: 7", "steps_latent: 8")))
    with pytest.raises(SweepError, match=r"kava-num_iterations=1-seed0 holds a finished run with other settings "
                                         r"\(settings.steps.latent: 7 -> 8"):
        run_sweep(changed, out, Counting(), only=["kava-num_iterations=1-seed0"], echo=lambda _: None)


def test_a_run_finished_before_a_knob_existed_stays_finished(tmp_path):
    """A knob added later (teacher_dropout) is at its default, the behaviour the run ran with."""
    plan, out, name = load_grid(_grid(tmp_path, DEMO_GRID)), tmp_path / "out", "kava-num_iterations=1-seed0"
    run_sweep(plan, out, Counting(), only=[name], echo=lambda _: None)
    path = out / "runs" / name / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["config"]["method_config"]["teacher_dropout"]
    path.write_text(json.dumps(metrics))
    runner = Counting()
    assert run_sweep(plan, out, runner, only=[name], echo=lambda _: None)["skipped"] == [name] and not runner.calls
    metrics["config"]["method_config"]["teacher_dropout"] = False
    path.write_text(json.dumps(metrics))
    with pytest.raises(SweepError, match="method_config.teacher_dropout"):
        run_sweep(plan, out, runner, only=[name], echo=lambda _: None)


def test_print_commands_gives_one_plain_kava_command_per_run(tmp_path, capsys):
    grid = _grid(tmp_path, DEMO_GRID)
    plan = load_grid(grid)
    lines = commands(plan, tmp_path / "o", [])
    assert len(lines) == len(plan.runs)
    assert lines[1] == f"kava sweep {grid} --out {tmp_path / 'o'} --only kava-num_iterations=1-seed0"
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), "--print-commands"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert not (tmp_path / "o").exists()  # printing writes nothing
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), "--only", "nope"]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


def test_a_latent_run_before_its_cot_run_names_the_run_to_do_first(tmp_path, capsys):
    grid = _grid(tmp_path, DEMO_GRID)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), "--only", "kava-num_iterations=1-seed0"]) == 2
    err = capsys.readouterr().err
    assert "its CoT run" in err and "is not finished" in err and "--only cot-seed0" in err


def test_real_tiny_demo_sweep_then_resume_skips_it(tmp_path, one_thread, capsys):
    grid = _grid(tmp_path, """
base: demo
settings: {steps_cot: 2, steps_latent: 2, batch_size: 4, test_size: 4, eval_batch_size: 4, num_latents: 3,
           num_iterations: 1, curve_points: 0}
methods: [kava]
seeds: [0]
variants: {crop: {eviction: crop}}
""")
    out = tmp_path / "o"
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    for name in ("cot-seed0", "kava-seed0", "kava-crop-seed0"):
        run = out / "runs" / name
        assert json.loads((run / "metrics.json").read_text())["summary"]["n"] == 4
        assert (run / "eval" / "predictions.jsonl").is_file() and (run / "history.jsonl").is_file()
    assert "cot_run" in json.loads((out / "runs" / "kava-crop-seed0" / "metrics.json").read_text())
    assert (out / "report" / "report.md").is_file() and (out / "report" / "ablation_bars.png").is_file()
    assert "train:" not in capsys.readouterr().err  # --no-progress hides the training bars too
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    assert "ran 0, skipped 3" in capsys.readouterr().err


@pytest.mark.slow
def test_real_tiny_train_base_sweep(tmp_path, one_thread, capsys):
    """`kava train` then `kava eval` per run (configs/tiny-cpu.yaml: the SmolLM2 tokenizer; ~20 s)."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
    grid = _grid(tmp_path, f"base: {config}\nsettings: {{train.max_steps: 2, train.save_every: 2, train.report_to: []}}\n"
                           "eval: {dataset: gsm8k, limit: 2, batch_size: 2, max_new_tokens: 4}\nmethods: [kava]\n")
    out = tmp_path / "o"
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    assert "train:" not in capsys.readouterr().err
    metrics = json.loads((out / "runs" / "kava-seed0" / "metrics.json").read_text())
    assert metrics["summary"]["n"] == 2 and metrics["setting"]["eval_data"] == "gsm8k"
    assert (out / "runs" / "kava-seed0" / "train" / "final").is_dir()
    assert (out / "report" / "loss_curves.png").is_file()


@pytest.mark.slow
def test_a_train_base_sweep_evaluates_best_when_asked(tmp_path, one_thread):
    from pathlib import Path

    from kava.training.best import read_selection

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
    settings = ("{train.max_steps: 3, train.save_every: 3, train.report_to: [], train.eval_every: 1, "
                "eval.name: gsm8k, eval.limit: 2, eval.max_new_tokens: 4, eval.keep_best: true}")
    grid = _grid(tmp_path, f"base: {config}\nsettings: {settings}\nmethods: [kava]\n"
                           "eval: {dataset: gsm8k, limit: 2, batch_size: 2, max_new_tokens: 4, checkpoint: best}\n")
    out = tmp_path / "o"
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    run = out / "runs" / "kava-seed0"
    assert json.loads((run / "metrics.json").read_text())["setting"]["checkpoint"] == "best"
    assert read_selection(run / "train") is not None
    assert "/train/best" in json.loads((run / "eval" / "eval_run.json").read_text())["model"]
    with pytest.raises(GridError, match="eval.checkpoint: best needs the run config's eval.keep_best"):
        load_grid(_grid(tmp_path, f"base: {config}\nmethods: [kava]\neval: {{dataset: gsm8k, checkpoint: best}}\n"))
    with pytest.raises(GridError, match="eval.checkpoint: expected one of final, best"):
        load_grid(_grid(tmp_path, f"base: {config}\nmethods: [kava]\neval: {{dataset: gsm8k, checkpoint: last}}\n"))


def test_a_refused_training_start_stops_a_train_base_sweep_in_one_line_naming_the_run(tmp_path, capsys):
    """The sweep calls `train_from_config` itself: its refusal becomes the sweep's one-line error (status 2)."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
    grid = _grid(tmp_path, f"base: {config}\neval: {{dataset: gsm8k, limit: 2}}\nmethods: [kava]\n")
    out = tmp_path / "o"
    (out / "runs" / "kava-seed0").mkdir(parents=True)
    (out / "runs" / "kava-seed0" / "train").write_text("not a folder")
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kava sweep: error: kava-seed0: training refused to start: output_dir: ") and err.count("\n") == 1
    assert "is a file, not a folder" in err and not (out / "runs" / "kava-seed0" / "metrics.json").exists()


def test_a_new_test_size_scores_the_finished_runs_again_without_training(tmp_path, one_thread, capsys):
    """test_size only picks test problems: the finished models are scored on the new set (their
    first answers unchanged), what they recorded of training is kept, and no training step runs."""
    text = """
base: demo
settings: {steps_cot: 2, steps_latent: 2, batch_size: 4, test_size: 4, eval_batch_size: 4, num_latents: 3,
           num_iterations: 1, curve_points: 0}
methods: [kava]
seeds: [0]
"""
    out = tmp_path / "o"
    assert main(["sweep", str(_grid(tmp_path, text)), "--out", str(out), "--no-progress"]) == 0
    runs = {n: out / "runs" / n for n in ("cot-seed0", "kava-seed0")}
    before = {n: json.loads((r / "metrics.json").read_text()) for n, r in runs.items()}
    answers = {n: [json.loads(line)["answer"] for line in (r / "eval" / "predictions.jsonl").read_text().splitlines()]
               for n, r in runs.items()}
    history = {n: (r / "history.jsonl").read_text() for n, r in runs.items()}
    grid = _grid(tmp_path, text.replace("test_size: 4", "test_size: 6"))
    capsys.readouterr()
    assert main(["sweep", str(grid), "--out", str(out), "--dry-run"]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == ["to score again"] * 2
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("scoring its final model again") == 2
    for n, r in runs.items():
        after = json.loads((r / "metrics.json").read_text())
        assert after["summary"]["n"] == 6 and after["config"]["settings"]["test_size"] == 6
        assert after["train_time_s"] == before[n]["train_time_s"] and (r / "history.jsonl").read_text() == history[n]
        rows = [json.loads(line) for line in (r / "eval" / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and [row["answer"] for row in rows[:4]] == answers[n]
    assert "cot_run" in json.loads((runs["kava-seed0"] / "metrics.json").read_text())
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    assert "ran 0, skipped 2" in capsys.readouterr().err
    # A training setting still refuses the folder; a run without its final model cannot be scored again.
    assert main(["sweep", str(_grid(tmp_path, text.replace("steps_latent: 2", "steps_latent: 3"))), "--out", str(out),
                 "--only", "kava-seed0"]) == 2
    assert "other settings (settings.steps.latent: 2 -> 3" in capsys.readouterr().err
    import shutil

    shutil.rmtree(runs["kava-seed0"] / "final")
    assert main(["sweep", str(_grid(tmp_path, text.replace("test_size: 4", "test_size: 5"))), "--out", str(out),
                 "--only", "kava-seed0", "--no-progress"]) == 2
    assert "kava-seed0:" in (err := capsys.readouterr().err) and "final model is missing" in err
