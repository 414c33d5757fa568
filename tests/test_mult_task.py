"""iCoT's multi-digit multiplication: every public row regenerated exactly, the registered
datasets (mult4, mult5), the generated train split's disjointness, and the digits answer rule."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kava.data.datasets import DatasetFormatError, DatasetNotFoundError, dataset_entry, load_dataset
from kava.data.grading import check_gold, grade
from kava.data.multiplication import (
    generate_problems,
    mult_line,
    mult_record,
    parse_mult_line,
    problem_key,
    write_mult_file,
)
from kava.data.records import Record

from conftest import DATA_DIR

PUBLIC = {"4x4/valid.txt": 4, "4x4/test.txt": 4, "5x5/valid.txt": 5}


def _rows(name: str) -> list[str]:
    return [line for line in (DATA_DIR / "mult" / name).read_text(encoding="utf-8").split("\n") if line.strip()]


def _operands(line: str) -> tuple[int, int]:
    a, b = line.partition("||")[0].split(" * ")
    return int("".join(reversed(a.split()))), int("".join(reversed(b.split())))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_row_is_regenerated_exactly(name: str) -> None:
    rows = _rows(name)
    assert len(rows) == 1000
    n = PUBLIC[name]
    for line in rows:
        a, b = _operands(line)
        assert mult_line(a, b, n) == line
        record = parse_mult_line(line)
        # kava writes a trace as its steps joined by single spaces (SequenceBuilder.cot_ids)
        assert f"{record.question}||{' '.join(record.steps)} #### {record.answer}" == line
        assert len(record.steps) == n and record.answer_kind == "digits"
        assert int("".join(reversed(record.answer.split()))) == a * b
        check_gold(record)


def test_record_shape() -> None:
    record = mult_record(2365, 4347, 4)  # the first 4x4 valid row
    assert record.question == "5 6 3 2 * 7 4 3 4"
    assert record.steps == ("5 5 5 6 1", "+ 0 0 6 4 9 0 ( 5 5 1 1 1 1 )", "+ 0 0 5 9 0 7 0 ( 5 5 6 0 2 8 0 )",
                            "+ 0 0 0 0 6 4 9 0")
    assert record.answer == "5 5 6 0 8 2 0 1"


def test_digit_knob_and_operands_out_of_range() -> None:
    for bad in (1, 0, -3, 2.0, True, "4"):
        with pytest.raises(ValueError, match=r"^digits \(the n of n×n multiplication\) must be an integer >= 2, got "):
            next(generate_problems(bad))
    with pytest.raises(ValueError, match="digits"):
        mult_line(12, 34, 1)
    with pytest.raises(ValueError, match="operand a must be an integer of exactly 4 digits"):
        mult_line(123, 4567, 4)


def test_generator_any_n_is_distinct_seeded_and_readable(tmp_path: Path) -> None:
    two = list(generate_problems(2))
    assert len(two) == 90 * 91 // 2  # every order-free 2x2 problem once, then the stream ends
    assert len({(min(p), max(p)) for p in two}) == len(two)
    first = [p for p, _ in zip(generate_problems(6, seed=3), range(50))]
    assert first == [p for p, _ in zip(generate_problems(6, seed=3), range(50))]
    assert first[:10] == [p for p, _ in zip(generate_problems(6, seed=3), range(10))]
    assert first != [p for p, _ in zip(generate_problems(6, seed=4), range(50))]
    assert all(10**5 <= x < 10**6 for p in first for x in p)
    path = tmp_path / "6x6.txt"
    assert write_mult_file(path, 6, 20, seed=3) == 20
    data = load_dataset(str(path))  # a .txt of multiplication rows reads as multiplication records
    assert [r.question for r in data] == [mult_record(a, b, 6).question for a, b in first[:20]]
    assert all(r.answer_kind == "digits" and len(r.steps) == 6 for r in data)


def test_registered_splits_load_from_the_local_files() -> None:
    for name, split, n in (("mult4", "valid", 4), ("mult4", "test", 4), ("mult5", "valid", 5)):
        data = load_dataset(name, split)
        assert len(data) == 1000 and data.skipped == 0
        assert data.source.endswith(f"mult/{n}x{n}/{split}.txt")
        assert all(r.answer_kind == "digits" and len(r.steps) == n and len(r.answer.split()) == 2 * n for r in data)
    assert load_dataset("mult4").split == "test" and load_dataset("mult5").split == "valid"


def test_mult5_test_is_refused_as_held_back(tmp_path: Path) -> None:
    dataset_entry("mult5", "test")  # a known split ...
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'mult5' split 'test' is held back: it is not among "
                                                  r"the public files .*no other split stands in for it"):
        load_dataset("mult5", "test")  # ... that the public files lack, and nothing replaces it
    folder = tmp_path / "data"
    (folder / "mult/5x5").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="held back"):
        load_dataset("mult5", "test", data_dir=folder)


def test_generated_train_never_equals_a_valid_or_test_problem() -> None:
    held = {problem_key(r) for split in ("valid", "test") for r in load_dataset("mult4", split)}
    assert len(held) == 2000
    train = load_dataset("mult4", "train", limit=20_000)
    assert len(train) == 20_000 and train.source.startswith("generated 4x4 multiplication (seed 0)")
    keys = [problem_key(r) for r in train]
    assert len(set(keys)) == len(keys) and not set(keys) & held
    for r in train.records[:200]:
        a, b = problem_key(r)
        assert parse_mult_line(f"{r.question}||{' '.join(r.steps)} #### {r.answer}") == r
    # The collision check is live: the seeded stream does meet held-out problems, which are left out.
    stream = [(min(p), max(p)) for p, _ in zip(generate_problems(4), range(100_000))]
    met = [k for k in stream if k in held]
    assert met, "the first 100,000 generated 4x4 problems meet no valid/test problem"
    full = load_dataset("mult4", "train")
    assert len(full) == 100_000 and full.left_out and not {problem_key(r) for r in full} & held
    assert len(full.left_out) == len([k for k in stream[: 100_000 + len(full.left_out)] if k in held])
    assert "same operands as a valid/test problem" in full.skip_notice()
    # The first records do not depend on the size asked for.
    assert [r.question for r in full.records[:20_000]] == [r.question for r in train]
    five = load_dataset("mult5", "train", limit=5_000)
    five_held = {problem_key(r) for r in load_dataset("mult5", "valid")}
    assert len(five) == 5_000 and not {problem_key(r) for r in five} & five_held


def test_generated_train_needs_the_held_out_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "mult/4x4").mkdir(parents=True)
    shutil.copy(DATA_DIR / "mult/4x4/valid.txt", folder / "mult/4x4/valid.txt")
    with pytest.raises(DatasetNotFoundError, match="without any problem of split 'test'.*has no mult/4x4/test.txt"):
        load_dataset("mult4", "train", data_dir=folder)


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    rows = _rows("4x4/valid.txt")[:5]
    good = rows[2]
    cases = [
        (good.replace("#### 5", "#### 6", 1) if "#### 5" in good else good[:-1] + ("1" if good[-1] != "1" else "2"),
         "product .* is not a × b"),
        (good.replace(" ( ", " ( 1 ", 1), "trace .* is not the partial products"),
        (good.replace(" * ", " x ", 1), "is not 'a \\* b' written digit by digit"),
        (good.split("||")[0], "found no '\\|\\|'"),
        ("5 6 3 2 * 7 4 3||1 #### 1", "operands have 4 and 3 digits"),
        (good.replace("||", "  ||", 1).replace(" #### ", "  #### ", 1), "spacing differs"),
    ]
    folder = tmp_path / "data"
    (folder / "mult/4x4").mkdir(parents=True)
    path = folder / "mult/4x4/valid.txt"
    for bad, message in cases:
        path.write_text("\n".join(rows[:3] + [bad] + rows[3:]) + "\n", encoding="utf-8")
        with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(path))}:4: .*{message}"):
            load_dataset("mult4", "valid", data_dir=folder)
        skipped = load_dataset("mult4", "valid", data_dir=folder, skip_bad=True)
        assert len(skipped) == 5 and skipped.skip_reasons[0].startswith(f"{path}:4: ")


GOLD = Record("5 6 3 2 * 7 4 3 4", answer="5 5 6 0 8 2 0 1", answer_kind="digits")


@pytest.mark.parametrize("text, correct, answer, rule, flag", [
    (" 5 5 6 0 8 2 0 1", True, "5 5 6 0 8 2 0 1", "whole text", None),
    ("5 5 6 0 8 2 0 1\n", True, "5 5 6 0 8 2 0 1", "whole text", None),
    ("55608201", True, "5 5 6 0 8 2 0 1", "whole text", None),  # whitespace is not significant
    ("5  5 6\t0 8 2 0 1", True, "5 5 6 0 8 2 0 1", "whole text", None),
    ("5 5 5 6 1 + 0 0 6 4 9 0 ( 5 5 1 1 1 1 ) #### 5 5 6 0 8 2 0 1", True, "5 5 6 0 8 2 0 1", "after marker", None),
    ("+ 0 0 0 0 6 4 9 0 The answer is: 5 5 6 0 8 2 0 1", True, "5 5 6 0 8 2 0 1", "after marker", None),
    ("1 0 2 8 0 6 5 5", False, "1 0 2 8 0 6 5 5", "whole text", None),  # most significant digit first
    ("5 5 6 0 8 2 0", False, "5 5 6 0 8 2 0", "whole text", None),  # a digit missing
    ("5 5 6 0 8 2 1", False, "5 5 6 0 8 2 1", "whole text", None),  # a middle digit missing
    ("5 5 6 0 8 2 0 1 0", False, "5 5 6 0 8 2 0 1 0", "whole text", None),  # extra trailing zero (same value)
    ("0 5 5 6 0 8 2 0 1", False, "0 5 5 6 0 8 2 0 1", "whole text", None),  # extra leading zero
    ("5 5 6 0 8 2 0 1.", False, "5 5 6 0 8 2 0 1.", "whole text", "unparseable"),  # junk after
    ("5 5 6 0 8 2 0 1 is the product", False, "5 5 6 0 8 2 0 1 is the product", "whole text", "unparseable"),
    ("#### 5 5 6 0 8 2 0 1 #### 5 5 6 0 8 2 0 1", False, "5 5 6 0 8 2 0 1 #### 5 5 6 0 8 2 0 1", "after marker",
     "unparseable"),  # two answers
    ("#### 1 2 3 #### 5 5 6 0 8 2 0 1", False, "1 2 3 #### 5 5 6 0 8 2 0 1", "after marker", "unparseable"),
    ("5 5 6 0 8 2 0 1 5 5 6 0 8 2 0 1", False, "5 5 6 0 8 2 0 1 5 5 6 0 8 2 0 1", "whole text", None),  # twice
    ("5 5 6 0 8 2 0 1 ####", False, None, "none", None),  # nothing after the marker
    ("", False, None, "none", None),
    ("   \n", False, None, "none", None),
    ("####", False, None, "none", None),
    ("5 5 6 0 8 2 0 ١", False, "5 5 6 0 8 2 0 ١", "whole text", "unparseable"),  # a non-ASCII digit
    ("55,608,201", False, "55,608,201", "whole text", "unparseable"),
])
def test_digits_answer_rule(text: str, correct: bool, answer, rule: str, flag) -> None:
    graded = grade(GOLD, text)
    assert (graded.correct, graded.answer, graded.rule, graded.flag) == (correct, answer, rule, flag)


def test_kava_eval_and_lm_eval_score_with_the_digits_rule() -> None:
    from kava.evaluation.evaluate import _scored, summarize
    from kava.evaluation.harness_tasks import process_results

    record = load_dataset("mult4", "test")[0]
    right, wrong = f" {record.answer}", " " + " ".join(reversed(record.answer.split()))
    row = _scored(record, None, right)
    assert row["answer_kind"] == "digits" and row["correct"] is True and row["answer"] == record.answer
    assert _scored(record, None, wrong)["correct"] is False
    base = {"finished": True, "forward_passes": 1, "generated_tokens": 1, "cache_tokens": 1, "cache_entries": 1,
            "latency_s": 0.1}
    summary = summarize([{**base, **row}, {**base, **_scored(record, None, " 1 2 x")}])
    assert summary["accuracy"] == 0.5 and summary["unparseable"] == 1
    doc = {"question": record.question, "answer": record.answer, "answer_kind": "digits", "options": []}
    assert process_results(doc, [right]) == {"exact_match": 1.0}
    assert process_results(doc, [wrong]) == {"exact_match": 0.0}


def test_digits_gold_must_be_spaced_digits() -> None:
    for bad in ("55608201", "5 5 6 x", "5  5", ""):
        with pytest.raises(ValueError, match="digits separated by single spaces"):
            check_gold(Record("1 2 * 3 4", answer=bad, answer_kind="digits"))
