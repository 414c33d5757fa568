"""MATH-500 and AQuA-RAT in the dataset registry: the real files, malformed rows, the hub fallback."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from kava.data.datasets import DatasetFormatError, DatasetNotFoundError, load_dataset
from kava.data.math_answers import parse_math

from conftest import DATA_DIR

DATA = DATA_DIR  # the folder conftest names in KAVA_DATA_DIR (../shared/data unless set), passed as data_dir=
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA} (KAVA_DATA_DIR)")

AQUA_ROW = {"question": "What is 2+3?", "options": ["A)4", "B)5", "C)6", "D)7", "E)8"],
            "rationale": "2 + 3 = 5\nAnswer: B", "correct": "B"}
MATH_ROW = {"problem": "Compute $1+\\frac12$.", "solution": "We add.\n\nSo $\\boxed{\\frac32}$.",
            "answer": "\\frac{3}{2}", "subject": "Algebra", "level": 1, "unique_id": "test/x.json"}


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside a test, KAVA_DATA_DIR is unset: each test names the folder it means.
    monkeypatch.delenv("KAVA_DATA_DIR", raising=False)


@needs_data
def test_math500_rows_golds_subjects_and_levels() -> None:
    ds = load_dataset("math500", data_dir=DATA)
    raw = [json.loads(line) for line in (DATA / "math500/test.jsonl").read_text().splitlines() if line.strip()]
    assert (len(ds), ds.skipped, ds.split, Path(ds.source)) == (500, 0, "test", DATA / "math500/test.jsonl")
    assert [r.answer for r in ds] == [row["answer"].strip() for row in raw]
    assert all(r.answer_kind == "math" and parse_math(r.answer) for r in ds), "every gold answer parses"
    assert Counter(r.meta["subject"] for r in ds) == Counter(row["subject"] for row in raw)
    assert len({r.meta["subject"] for r in ds}) == 7
    assert sorted({r.meta["level"] for r in ds}) == ["1", "2", "3", "4", "5"]
    assert ds[0].question == raw[0]["problem"].strip()


@needs_data
@pytest.mark.parametrize(("split", "file"), [("test", "aqua/test.json"), ("dev", "aqua/dev.json")])
def test_aqua_rows_golds_and_options(split: str, file: str) -> None:
    ds = load_dataset("aqua", split, data_dir=DATA)
    raw = [json.loads(line) for line in (DATA / file).read_text().splitlines() if line.strip()]
    assert (len(ds), ds.skipped, Path(ds.source)) == (254, 0, DATA / file)
    assert [r.answer for r in ds] == [row["correct"] for row in raw]
    for record, row in zip(ds, raw):
        assert record.answer_kind == "choice" and len(record.options) == 5
        assert record.question.startswith(row["question"].strip())
        # the options a model must choose among are in its question, each with its letter
        assert all(f"({letter}) {text}" in record.question for letter, text in zip("ABCDE", record.options))


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({**AQUA_ROW, "options": ["A)4", "B)5"]}, "field 'options' must be a list of 5"),
        ({**AQUA_ROW, "options": ["A)4", "B)5", "X)6", "D)7", "E)8"]}, "expected option 'C\\)…'"),
        ({**AQUA_ROW, "correct": "F"}, "field 'correct' must be one of A, B, C, D, E"),
        ({k: v for k, v in AQUA_ROW.items() if k != "rationale"}, "missing field 'rationale'"),
        ('{"question": "cut', "invalid JSON"),
    ],
)
def test_malformed_aqua_row_names_file_and_line(tmp_path: Path, bad, message: str) -> None:
    path = _write_jsonl(tmp_path / "aqua.json", [AQUA_ROW, AQUA_ROW, bad])
    with pytest.raises(DatasetFormatError, match=f"{path}:3: .*{message}"):
        load_dataset(path)
    assert len(load_dataset(path, skip_bad=True)) == 2


def test_malformed_math_row_names_file_and_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "m.jsonl", [MATH_ROW, {**MATH_ROW, "answer": "@@@"}])
    with pytest.raises(DatasetFormatError, match=f"{path}:2: gold answer '@@@' cannot be parsed as math"):
        load_dataset(path)
    path = _write_jsonl(tmp_path / "m.jsonl", [{**MATH_ROW, "level": None}])
    with pytest.raises(DatasetFormatError, match=f"{path}:1: field 'level'"):
        load_dataset(path)


def test_file_rows_are_detected_as_math_or_aqua(tmp_path: Path) -> None:
    math = load_dataset(_write_jsonl(tmp_path / "m.jsonl", [MATH_ROW]))[0]
    assert (math.answer_kind, math.answer, dict(math.meta)) == ("math", "\\frac{3}{2}", {"subject": "Algebra", "level": "1"})
    aqua = load_dataset(_write_jsonl(tmp_path / "a.jsonl", [AQUA_ROW]))[0]
    assert (aqua.answer_kind, aqua.answer, aqua.options) == ("choice", "B", ("4", "5", "6", "7", "8"))
    assert aqua.question == "What is 2+3?\nAnswer Choices: (A) 4 (B) 5 (C) 6 (D) 7 (E) 8"


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tables: dict) -> list:
    calls: list = []

    def load(repo, config=None, split=None):
        calls.append((repo, config, split))
        if (repo, split) not in tables:
            raise ConnectionError(f"cannot reach {repo}")
        return tables[(repo, split)]

    module = types.ModuleType("datasets")
    module.load_dataset = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_ids_used_only_when_no_folder_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_hub(monkeypatch, {("HuggingFaceH4/MATH-500", "test"): [MATH_ROW],
                                    ("deepmind/aqua_rat", "validation"): [AQUA_ROW]})
    with pytest.raises(DatasetNotFoundError, match=f"data folder {tmp_path} .*has no math500/test.jsonl"):
        load_dataset("math500", data_dir=tmp_path)  # a named folder without the file: never the hub
    assert calls == []
    assert load_dataset("math500").source == "hub:HuggingFaceH4/MATH-500[test]"
    dev = load_dataset("aqua", "dev")
    assert dev.source == "hub:deepmind/aqua_rat/raw[validation]" and dev[0].answer == "B"
    assert calls == [("HuggingFaceH4/MATH-500", None, "test"), ("deepmind/aqua_rat", "raw", "validation")]
    # never a substitute: the test split is not on this fake hub, and dev is not taken for it
    with pytest.raises(DatasetNotFoundError, match="deepmind/aqua_rat: ConnectionError.*aqua/test.json"):
        load_dataset("aqua", "test")


# --------------------------------------------------------------------------- NL traces


def test_math_steps_are_sentences_never_cut_inside_math() -> None:
    from kava.data.convert import math_solution_steps

    solution = ("We have $a. B$ here, so $x = 1.$  Then \\[y = 2. Z\\] holds!  Is it?\n\n"
                "[asy]\ndraw((0,0)--(1,1));\n[/asy]\n\\begin{align*}\nu &= 1. \\\\ V &= 2.\n\\end{align*} "
                "Thus the total is \\$5.  So $\\boxed{5}$.")
    assert math_solution_steps(solution) == (
        "We have $a. B$ here, so $x = 1.$",  # the period inside "$a. B$" is math; "1.$" ends the sentence
        "Then \\[y = 2. Z\\] holds!",
        "Is it?",  # a paragraph break ends a step; the drawing is gone
        "\\begin{align*} u &= 1. \\\\ V &= 2. \\end{align*} Thus the total is \\$5.",  # "\$" is a dollar sign
        "So $\\boxed{5}$.",
    )


@needs_data
def test_real_traces_and_what_the_teacher_drops() -> None:
    """A MATH step is a sentence, an AQuA step a rationale line; the last step is what the teacher
    drops, and on the real sets it is the one that gives the answer (measured: MATH-500 475/500
    last sentences hold the \\boxed answer; AQuA test 243/254 last lines name the gold letter)."""
    import re

    from kava.config import preset
    from kava.model.kava_model import KavaModel

    from conftest import make_tokenizer, tiny_model

    math = load_dataset("math500", data_dir=DATA)
    assert math[0].steps == (
        "We have that $r = \\sqrt{0^2 + 3^2} = 3.$",
        "Also, if we draw the line connecting the origin and $(0,3),$ this line makes an angle of "
        "$\\frac{\\pi}{2}$ with the positive $x$-axis.",
        "Therefore, the polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    )
    assert sum("\\boxed" in r.steps[-1] for r in math) >= 470
    aqua = load_dataset("aqua", "test", data_dir=DATA)
    assert aqua[0].steps[-1] == "Answer : A" and aqua[0].answer == "A"
    assert sum(bool(re.search(rf"\b{r.answer}\b", r.steps[-1])) for r in aqua) >= 240
    # The teacher's trace is the steps but the last, in GSM8k-AUG-NL's sequence format.
    model = KavaModel(tiny_model(), make_tokenizer(), preset("kava", num_latents=2, lora_r=2, lora_dropout=0.0))
    records = [math[0], aqua[0]]
    batch = model.builder.training_batch(records)
    for b, record in enumerate(records):
        kept = model.builder.cot_ids(record.steps, drop_last=True)
        assert kept == model.builder.encode(" " + " ".join(record.steps[:-1]))
        assert int(batch["t_cot_mask"][b].sum()) == len(kept)
