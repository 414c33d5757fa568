"""Evaluating on MATH-500 and AQuA-RAT: prediction rows by answer kind, the summary's breakdowns,
and every inference mode (latent included) of a tiny random model running on the real questions."""

from __future__ import annotations

import pytest

from kava.data.datasets import load_dataset
from kava.evaluation.evaluate import breakdowns, evaluate, summarize

from conftest import decoding_model as build
from test_math_aqua_data import DATA, needs_data

RULES = {"boxed", "answer is", "last expression", "none", "answer letter", "letter", "option value", "ambiguous value"}


def _row(correct: bool, **fields) -> dict:
    base = {"index": 0, "question": "q", "gold": "C", "prediction": "", "answer": None, "correct": correct,
            "answer_rule": "none", "answer_flag": None, "finished": True, "forward_passes": 1,
            "generated_tokens": 1, "cache_tokens": 1, "cache_entries": 1, "latency_s": 0.5}
    return {**base, **fields}


def test_summary_per_subject_level_and_option() -> None:
    rows = [_row(True, answer_kind="math", subject="Algebra", level="1", answer="2", answer_rule="boxed"),
            _row(False, answer_kind="math", subject="Algebra", level="5", answer="x", answer_rule="answer is",
                 answer_flag="unparseable"),
            _row(True, answer_kind="math", subject="Geometry", level="5", answer="3", answer_rule="boxed")]
    s = summarize(rows)
    assert s["by_subject"]["Algebra"] | {"accuracy_ci95": None} == {"n": 2, "correct": 1, "accuracy": 0.5, "accuracy_ci95": None}
    assert s["by_subject"]["Geometry"]["n"] == 1 and s["by_level"]["5"]["correct"] == 1
    assert s["answer_rules"] == {"answer is": 1, "boxed": 2} and s["unparseable"] == 1
    assert "options" not in s
    choice = [_row(True, answer_kind="choice", answer="C", gold="C"), _row(False, answer_kind="choice", answer="C", gold="A"),
              _row(False, answer_kind="choice", answer=None, gold="B")]
    s = summarize(choice)
    assert s["options"] == {"predicted": {"C": 2, "none": 1}, "gold": {"A": 1, "B": 1, "C": 1}, "chance_accuracy": 0.2}
    assert "by_subject" not in s
    assert breakdowns([{"correct": True}]) == {}  # numeric rows: the summary is as before


@needs_data
@pytest.mark.parametrize("name", ["kava", "cot", "nocot"])
@pytest.mark.parametrize(("dataset", "split"), [("math500", "test"), ("aqua", "test")])
def test_every_mode_runs_on_the_real_questions(name: str, dataset: str, split: str, one_thread) -> None:
    data = load_dataset(dataset, split, data_dir=DATA, limit=3)
    model = build(name)
    result = evaluate(model, data, batch_size=2, max_new_tokens=8, progress=False)
    s = result.summary
    assert s["n"] == 3 and s["dataset"] == dataset and s["mode"] == model.config.inference_mode
    for p, record in zip(result.predictions, data):
        assert p["answer_kind"] == record.answer_kind and p["answer_rule"] in RULES
        assert p["correct"] in (True, False) and "gold_value" not in p
        assert (p["answer"] is None) == (p["answer_rule"] in ("none", "ambiguous value"))
    assert sum(s["answer_rules"].values()) == 3
    if dataset == "math500":
        assert sum(g["n"] for g in s["by_subject"].values()) == sum(g["n"] for g in s["by_level"].values()) == 3
        assert all({"subject", "level"} <= set(p) for p in result.predictions)
    else:
        assert sum(s["options"]["predicted"].values()) == sum(s["options"]["gold"].values()) == 3


def test_kava_eval_prints_the_breakdowns() -> None:
    from kava.evaluation.resumable import summary_line

    rows = [_row(True, answer_kind="math", subject="Algebra", level="2", answer="2", answer_rule="boxed"),
            _row(False, answer_kind="math", subject="Geometry", level="2", answer=None, answer_rule="none")]
    s = summarize(rows) | {"dataset": "math500", "mode": "cot"}
    lines = summary_line(s).split("\n")
    assert lines[0].startswith("math500 (cot, 2 questions): accuracy 50.0% ")
    assert lines[1:] == ["  by subject: Algebra 1/1 (100.0%), Geometry 0/1 (0.0%)", "  by level: 2 1/2 (50.0%)",
                         "  answers read by: boxed 1, none 1; unparseable 0"]


@needs_data
def test_kava_eval_on_math500_and_aqua_writes_rows_and_breakdowns(tmp_path, monkeypatch, one_thread) -> None:
    """The command's Python API end to end on a saved tiny model (latent mode): the rows of both
    sets carry the answer rule, and the written summary has the breakdowns."""
    import json

    from kava.config import preset
    from kava.evaluation.resumable import evaluate_checkpoint
    from kava.model.kava_model import KavaModel
    from kava.model.loading import ModelSource

    from conftest import make_tokenizer, tiny_model

    monkeypatch.setenv("KAVA_DATA_DIR", str(DATA))
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("kava", num_latents=2, finetune="full"),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    model.save_pretrained(tmp_path / "ckpt")
    for dataset, key in (("math500", "by_subject"), ("aqua", "options")):
        out = tmp_path / dataset
        summary = evaluate_checkpoint(tmp_path / "ckpt", dataset, limit=4, out=out, max_new_tokens=4, progress=False)
        assert summary["mode"] == "latent" and summary["n"] == 4 and key in summary
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(r["answer_rule"] in RULES for r in rows)
