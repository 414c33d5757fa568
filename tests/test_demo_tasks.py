"""`kava demo --task`: the demo's recipe on the registered tasks (mult4, mult5, prosqa), through the
same sweep path as the synthetic task; end to end with 2 steps per phase (wiring, not accuracy)."""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict

import pytest

from kava.demo.dataset_tasks import dataset_task
from kava.demo.run import TRACE_TOKENS, DemoSettings, run_identity, trace_tokens
from kava.experiments.demo_preset import run_demo

# asdict(DemoSettings()) as committed before the task field: the default demo's runs stay reusable.
DEFAULT_SETTINGS = {
    "methods": ["nocot", "cot", "kava"], "seeds": [0],
    "task": {"min_ops": 2, "max_ops": 3, "max_value": 100, "max_amount": 9, "trace": "equation"},
    "steps": {"nocot": 400, "cot": 1200, "latent": 1500}, "lr": {"nocot": 3e-3, "cot": 3e-3, "latent": 1e-3},
    "alpha_codi": 1.0, "batch_size": 16, "weight_decay": 0.01, "warmup_ratio": 0.05, "num_latents": 8,
    "num_iterations": 3, "teacher_drop_last_step": False, "kv_key_space": "pre_rope", "test_size": 500,
    "eval_batch_size": 100, "save_every": 200, "curve_points": 5, "curve_valid_size": 100, "threads": None,
    "method_overrides": {},
}
KIND = {"mult4": "digits", "prosqa": "concept"}


def _small(dataset: str | None, **over) -> DemoSettings:
    base = dict(methods=("nocot", "kava"), steps={"nocot": 2, "cot": 2, "latent": 2}, batch_size=2,
                test_size=3, eval_batch_size=3, num_latents=3, num_iterations=2, curve_points=2, curve_valid_size=2,
                dataset=dataset)
    return DemoSettings(**(base | over))


def test_the_default_settings_are_unchanged_but_for_the_new_key():
    s = asdict(DemoSettings())
    assert s.pop("dataset") is None and s.pop("model") == {}
    assert json.loads(json.dumps(s)) == DEFAULT_SETTINGS
    assert trace_tokens(DemoSettings()) == TRACE_TOKENS == 30
    identity = run_identity(DemoSettings(), "cot", 0)
    assert "dataset" not in identity and "model" not in identity  # the synthetic runs' identity as before
    # A run recorded before the field existed reads as one with the field at its default: still reused.
    import copy

    from kava.experiments.grid import demo_plan
    from kava.experiments.sweep import in_current_form

    for spec in demo_plan(DemoSettings()).runs:
        old = copy.deepcopy(spec.config)
        del old["settings"]["dataset"], old["settings"]["model"]
        assert in_current_form(old) == spec.config


@pytest.mark.parametrize("name", ["mult4", "prosqa"])
def test_demo_on_a_registered_task(tmp_path, name):
    out = run_demo(tmp_path, _small(name), progress=False, command=f"kava demo --task {name}")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["methods"]) == set(out["methods"]) == {"nocot", "cot", "kava"}
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"] == f"kava demo --task {name}"
    for method in ("nocot", "cot", "kava"):
        metrics = json.loads((tmp_path / "runs" / f"{method}-seed0" / "metrics.json").read_text())
        assert metrics["config"]["settings"]["dataset"] == name
        assert metrics["setting"]["train_data"] == name
        assert [p["step"] for p in metrics["curve"]] == [1, 2]
        rows = [json.loads(line) for line in (tmp_path / "runs" / f"{method}-seed0" / "eval" / "predictions.jsonl").open()]
        assert len(rows) == 3 and {r["answer_kind"] for r in rows} == {KIND[name]}
    assert (tmp_path / "report" / "learning_curves.png").exists()


@pytest.mark.parametrize("name", ["mult4", "prosqa"])
def test_the_task_tokenizer_covers_every_record_and_the_stream_is_reproducible(name):
    task = dataset_task(name)
    tok = task.tokenizer
    records = [*task.valid, *task.test, *itertools.islice(task.stream()(0, 0), 300)]
    for r in records:
        assert r.answer_kind == KIND[name]
        text = " ".join((r.question, *r.steps, r.answer))
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
        assert len(ids) < 450  # the tiny model's 512 positions hold the sequence with its latents
    assert task.trace_tokens == max(
        len(tok.encode(" " + " ".join(r.steps), add_special_tokens=False)) for r in task.valid)
    stream = task.stream()
    first = list(itertools.islice(stream(1, 0), 10))
    assert list(itertools.islice(stream(1, 4), 6)) == first[4:]  # position 4 of seed 1, reached directly
    assert first != list(itertools.islice(stream(2, 0), 10))
    held_out = {r.question for r in (*task.valid, *task.test)}
    assert not held_out & {r.question for r in first}
    # iCoT's demo schedule spreads over this task's longest trace, not the synthetic task's 30.
    cfg = DemoSettings(dataset=name).method_config("icot")
    assert cfg.remove_all_at == task.trace_tokens != TRACE_TOKENS


def test_mult5_is_refused_in_one_line_without_its_test_split(tmp_path, capsys, monkeypatch):
    from kava.experiments import demo_cli as cli
    from kava.experiments.grid import GridError, load_grid

    with pytest.raises(ValueError, match="'mult5' has no test split .*never substitutes the valid split"):
        run_demo(tmp_path / "demo", _small("mult5"), progress=False)
    assert not (tmp_path / "demo").exists()
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--task", "mult5", "--out", str(tmp_path / "demo")])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mult5" in err and "test split" in err
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nsettings: {task: mult5}\nmethods: [kava]\n")
    with pytest.raises(GridError, match="settings.task: the demo task 'mult5' has no test split"):
        load_grid(grid)


def test_task_flag_and_grid_setting(tmp_path, monkeypatch):
    from kava.experiments import demo_cli as cli
    from kava.experiments import demo_preset
    from kava.experiments.grid import GridError, load_grid

    seen = {}
    monkeypatch.setattr(demo_preset, "run_demo", lambda out, settings, **kw: seen.update(settings=settings, **kw))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--task", "prosqa", "--methods", "cot,icot"])) == 0
    assert seen["settings"].dataset == "prosqa" and seen["command"] == "kava demo --task prosqa --methods cot,icot"
    assert cli.run(parser.parse_args([])) == 0
    assert seen["settings"].dataset is None and seen["command"] == "kava demo"
    assert parser.parse_args([]).out == "outputs/demo"
    with pytest.raises(SystemExit):
        parser.parse_args(["--task", "gsm8k"])

    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nsettings: {task: mult4, steps_latent: 20}\nmethods: [kava, icot]\nseeds: [0]\n")
    plan = load_grid(grid)
    assert [r.name for r in plan.runs] == ["cot-seed0", "kava-seed0", "icot-seed0"]
    assert {r.config["settings"]["dataset"] for r in plan.runs} == {"mult4"}
    assert run_identity(DemoSettings(dataset="mult4"), "cot", 0)["dataset"] == "mult4"
    grid.write_text("base: demo\nsettings: {task: synthetic}\nmethods: [kava]\n")
    assert load_grid(grid).runs[0].config["settings"]["dataset"] is None
    grid.write_text("base: demo\nsettings: {task: gsm8k}\nmethods: [kava]\n")
    with pytest.raises(GridError, match="unknown demo task 'gsm8k'"):
        load_grid(grid)
    # A variant cannot change the task: the latent runs share their seed's CoT run.
    grid.write_text("base: demo\nmethods: [kava]\nvariants: {m: {task: mult4}}\n")
    with pytest.raises(GridError, match="changes the CoT run"):
        load_grid(grid)


def test_model_shape_knob_trains_that_shape_and_is_part_of_the_identity(tmp_path):
    from kava.experiments.grid import GridError, load_grid
    from kava.model.kava_model import KavaModel

    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
             "intermediate_size": 96}
    settings = _small("mult4", methods=("kava",), model=shape)
    run_demo(tmp_path, settings, progress=False, command="kava demo --task mult4")
    for method in ("cot", "kava"):
        lm = KavaModel.from_pretrained(tmp_path / "runs" / f"{method}-seed0" / "final").lm.config
        assert {k: getattr(lm, k) for k in shape} == shape, method
    assert run_identity(settings, "cot", 0)["model"] == shape
    assert run_identity(settings, "cot", 0) != run_identity(_small("mult4"), "cot", 0)

    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nsettings: {task: mult4, model: {hidden_size: 256, num_hidden_layers: 2}}\nmethods: [icot]\n")
    assert {r.config["settings"]["model"]["hidden_size"] for r in load_grid(grid).runs} == {256}
    for bad, where in [("{depth: 2}", "model.depth: not a model knob"),
                       ("{num_hidden_layers: 0}", "model.num_hidden_layers: expected a positive integer, got 0"),
                       ("{hidden_size: 100}", "model.hidden_size 100 is not an even multiple of num_attention_heads 4"),
                       ("{hidden_size: 36}", "model.hidden_size 36 is not an even multiple"),
                       ("{num_key_value_heads: 3}", "model.num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
                       ("[2]", "model: expected a mapping")]:
        grid.write_text(f"base: demo\nsettings: {{task: mult4, model: {bad}}}\nmethods: [icot]\n")
        with pytest.raises(GridError) as e:
            load_grid(grid)
        assert f"{grid}: settings: " in str(e.value) and where in str(e.value) and "\n" not in str(e.value)
    grid.write_text("base: demo\nsettings: {task: mult4}\nmethods: [kava]\nvariants: {w: {model: {hidden_size: 64}}}\n")
    with pytest.raises(GridError, match="variants.w: changes the CoT run"):
        load_grid(grid)
