"""`kava reproduce`: a table file → the sweep's runs in dependency order (a CoT → Coconut chain),
best-validation models tested on several test sets, an interruption resumed, the combined table;
and the table file's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kava.cli import main
from kava.experiments.grid import GridError
from kava.experiments.table import load_table

from conftest import TRAIN_RECORDS, make_tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TESTS = ("gsm8k", "gsm8k-hard", "svamp")


def _table(tmp_path: Path, rows: str, seeds: str = "[0, 1]", checkpoint: str = "best") -> Path:
    """A tiny table on configs/tiny-cpu.yaml: a local tokenizer and records file, 2 steps per run,
    validation every step on 2 questions (best/ kept), each model tested on 2 questions of 3 sets."""
    tok, data = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    if not tok.exists():
        make_tokenizer().save_pretrained(tok)
        data.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                                for r in TRAIN_RECORDS))
    settings = (f"{{model.tokenizer: {tok}, data.name: {data}, data.limit: null, train.max_steps: 2, train.save_every: 1, "
                f"train.report_to: [], train.eval_every: 1, eval.name: {data}, eval.limit: 2, eval.max_new_tokens: 4, "
                "eval.keep_best: true}")
    tests = "\n".join(f"  - {{dataset: {t}, limit: 2, batch_size: 2, max_new_tokens: 4}}" for t in TESTS)
    path = tmp_path / "table.yaml"
    path.write_text(f"title: tiny\nseeds: {seeds}\ncheckpoint: {checkpoint}\ntest:\n{tests}\nsettings: {settings}\n"
                    f"rows:\n{rows}")
    return path


CHAIN = f"""\
  coconut: {{config: {CONFIGS}/tiny-cpu.yaml, method: coconut, start_from: cot,
             settings: {{method.thoughts_per_step: 1, method.max_stage: 2, method.num_latents: 2, method.stage_steps: 1}}}}
  cot: {{config: {CONFIGS}/tiny-cpu.yaml, method: cot}}
  nocot: {{config: {CONFIGS}/tiny-cpu.yaml, method: nocot}}
  kava: {{config: {CONFIGS}/tiny-cpu.yaml}}
"""


def test_rows_run_after_their_start_and_carry_their_settings(tmp_path):
    plan = load_table(_table(tmp_path, CHAIN))
    names = [r.name for r in plan.runs]
    assert names == ["cot-seed0", "cot-seed1", "coconut-seed0", "coconut-seed1", "nocot-seed0", "nocot-seed1",
                     "kava-seed0", "kava-seed1"]  # coconut's start first, whatever the file's order
    coconut = plan.run("coconut-seed1")
    assert coconut.config["start_from"] == "cot-seed1" and coconut.method == "coconut"
    assert coconut.config["run_config"]["method"]["stage_steps"] == 1
    assert [t["dataset"] for t in coconut.config["tests"]] == list(TESTS)
    assert all(t["checkpoint"] == "best" for t in coconut.config["tests"])
    nocot = plan.run("nocot-seed0").config["run_config"]["method"]
    assert nocot["preset"] == "nocot" and nocot["lora_r"] == 8  # the config's shared knobs carry over


def test_the_shipped_table_lists_42_runs_with_coconut_after_cot():
    plan = load_table(CONFIGS / "tables" / "table1-llama1b.yaml")
    assert len(plan.runs) == 14 * 3
    names = [r.name for r in plan.runs]
    for seed in (0, 1, 2):
        assert names.index(f"cot-aug-seed{seed}") < names.index(f"coconut-aug-seed{seed}")
        assert plan.run(f"coconut-aug-nl-seed{seed}").config["start_from"] == f"cot-aug-nl-seed{seed}"
    pccot = plan.run("pccot-aug-seed0").config["run_config"]["method"]
    assert pccot["preset"] == "pccot" and "alpha_kv" not in pccot and pccot["lora_r"] == 128


@pytest.mark.parametrize("rows,message", [
    (f"  a: {{config: {CONFIGS}/tiny-cpu.yaml, start_from: b}}\n  b: {{config: {CONFIGS}/tiny-cpu.yaml, start_from: a}}\n",
     "rows.a.start_from: a cycle: a -> b -> a"),
    (f"  a: {{config: {CONFIGS}/tiny-cpu.yaml, start_from: z}}\n", "rows.a.start_from: 'z' is not a row"),
    ("  a: {config: nowhere.yaml}\n", "rows.a.config: no such kava train config"),
    (f"  a: {{config: {CONFIGS}/tiny-cpu.yaml, method: magic}}\n", "rows.a.method: 'magic' is not one of"),
    (f"  a: {{config: {CONFIGS}/tiny-cpu.yaml, colour: red}}\n", "rows.a.colour: unknown key"),
])
def test_table_errors_are_one_line_naming_the_key(tmp_path, rows, message):
    with pytest.raises(GridError, match=message):
        load_table(_table(tmp_path, rows))


def test_best_needs_every_row_to_keep_it(tmp_path):
    path = _table(tmp_path, f"  kava: {{config: {CONFIGS}/tiny-cpu.yaml}}\n")
    path.write_text(path.read_text().replace("eval.keep_best: true", "eval.keep_best: false"))
    with pytest.raises(GridError, match="rows.kava: checkpoint: best needs the row's config to keep best/"):
        load_table(path)


def test_the_whole_pipeline_on_a_tiny_model_interrupted_once(tmp_path, monkeypatch, one_thread, capsys):
    """2 seeds × (CoT → Coconut, No-CoT, KaVa), best/ tested on 3 sets; KaVa seed 1 is stopped after
    its first step (as a preemption would), the command run again resumes it, and the table has every row."""
    import kava.training.engine as engine

    table, out = _table(tmp_path, CHAIN), tmp_path / "out"
    real_train, stopped = engine.train, []

    def preempted(*args, **kwargs):
        if "kava-seed1" in str(kwargs["output_dir"]) and not stopped:
            stopped.append(True)
            kwargs["stop_after"] = 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(engine, "train", preempted)
    assert main(["reproduce", str(table), "--out", str(out), "--no-progress"]) == 75  # interrupted
    assert "Run the same command again to resume" in capsys.readouterr().err
    assert main(["reproduce", str(table), "--out", str(out), "--no-progress"]) == 0
    history = [json.loads(x)["step"] for x in (out / "runs" / "kava-seed1" / "train" / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2]  # resumed from its checkpoint, each step once
    for seed in (0, 1):
        run_config = (out / "runs" / f"coconut-seed{seed}" / "run_config.yaml").read_text()
        assert f"runs/cot-seed{seed}/export" in run_config  # trained from its seed's merged CoT model
        metrics = json.loads((out / "runs" / f"coconut-seed{seed}" / "metrics.json").read_text())
        assert list(metrics["summaries"]) == list(TESTS) and metrics["setting"]["checkpoint"] == "best"
        assert (out / "runs" / f"kava-seed{seed}" / "eval" / "svamp" / "predictions.jsonl").is_file()
    text = (out / "report" / "table.md").read_text()
    for row in ("cot", "coconut", "nocot", "kava"):
        assert f"| {row} | 2 |" in text
    assert all((out / "report" / t / "report.md").is_file() for t in TESTS)
