"""KaVa − PCCoT / KaVa − CODI paired by seed and question (`kava.experiments.method_pairs`):
hand-computed differences and t intervals, the bootstrap's corner cases, pairing, and the report's
handling of runs without predictions."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from kava.experiments.method_pairs import method_pairs, paired_difference, scores, section, t975


def answers(*bits: str) -> dict[int, float]:
    """``"1101"`` → question index → score (1: correct)."""
    return {i: float(c == "1") for i, c in enumerate(bits[0])}


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    assert abs(t975(31) - 2.0395) < 0.001 and abs(t975(120) - 1.9799) < 0.001  # exact: 2.0395, 1.9799


def test_per_seed_differences_and_the_t_interval_by_hand():
    a = {0: answers("1111"), 1: answers("1100"), 2: answers("1110")}
    b = {0: answers("1100"), 1: answers("1100"), 2: answers("1000")}
    p = paired_difference(a, b)
    assert p["per_seed"] == {0: 0.5, 1: 0.0, 2: 0.5}
    mean = 1 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 * 2 + mean ** 2) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert p["mean"] == pytest.approx(mean)
    assert p["ci95_seeds"] == pytest.approx([mean - half, mean + half])
    assert p["questions"] == [4, 4, 4] and p["seeds"] == [0, 1, 2]


def test_bootstrap_corner_cases_and_determinism():
    same = {0: answers("1010"), 1: answers("0110")}
    assert paired_difference(same, same)["ci95_bootstrap"] == [0.0, 0.0]
    right, wrong = {0: answers("1111")}, {0: answers("0000")}
    one = paired_difference(right, wrong)
    assert one["ci95_bootstrap"] == [1.0, 1.0] and one["ci95_seeds"] is None  # one seed: no t interval
    a, b = {0: answers("1" * 60 + "0" * 40)}, {0: answers("1" * 50 + "0" * 50)}
    first, again = paired_difference(a, b), paired_difference(a, b)
    assert first == again and first["ci95_bootstrap"][0] <= 0.1 <= first["ci95_bootstrap"][1]


def test_pairing_by_question_narrows_the_interval():
    """b answers 50 questions, a the same 50 and 10 more: every paired difference is 0 or +1, so the
    interval stays above 0, where two independent 60 % vs 50 % samples of 100 would straddle it."""
    a, b = {0: answers("1" * 60 + "0" * 40)}, {0: answers("1" * 50 + "0" * 50)}
    assert paired_difference(a, b)["ci95_bootstrap"][0] > 0


def test_only_shared_seeds_and_questions_are_compared():
    a = {0: {0: 1.0, 1: 1.0, 7: 1.0}, 3: {0: 1.0}}
    b = {0: {0: 0.0, 1: 1.0}, 5: {0: 0.0}}
    p = paired_difference(a, b)
    assert p["seeds"] == [0] and p["per_seed"] == {0: 0.5} and p["questions"] == [2]
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({0: {0: 1.0}}, {1: {0: 1.0}})


def _run(root, name, method, seed, bits=None):
    folder = root / name
    (folder / "eval").mkdir(parents=True)
    if bits is not None:
        (folder / "eval" / "predictions.jsonl").write_text(
            "".join(json.dumps({"index": i, "correct": c == "1"}) + "\n" for i, c in enumerate(bits)))
    return SimpleNamespace(name=name, method=method, seed=seed, variant="base")


def test_method_pairs_reads_each_runs_predictions_and_names_missing_ones(tmp_path):
    runs = [_run(tmp_path, "kava-seed0", "kava", 0, "1110"), _run(tmp_path, "pccot-seed0", "pccot", 0, "1000"),
            _run(tmp_path, "codi-seed0", "codi", 0), _run(tmp_path, "nocot-seed0", "nocot", 0, "0000")]
    pairs = method_pairs(tmp_path, runs)
    assert list(pairs) == ["kava − pccot", "kava − codi"]
    assert pairs["kava − pccot"]["mean"] == 0.5
    assert pairs["kava − codi"] == {"missing": ["runs/codi-seed0"]}
    text = "\n".join(section(pairs))
    assert "| kava − pccot | 1 | 4 | +50.0 | — (one seed) |" in text
    assert "not paired: no test predictions in runs/codi-seed0" in text


def test_a_damaged_prediction_line_names_file_and_line(tmp_path):
    folder = tmp_path / "run"
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "predictions.jsonl").write_text('{"index": 0, "correct": true}\n{"index": 1}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl: line 2 is not a prediction"):
        scores(folder)


def test_digit_tasks_are_also_paired_on_the_digits_right(tmp_path):
    """Exact match is 0 for both; the digits say KaVa got 3 of 4 at their place where PCCoT got 1."""
    def run(name, method, said):
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        row = {"index": 0, "gold": "1 2 3 4", "answer": said, "answer_kind": "digits", "correct": said == "1 2 3 4"}
        (folder / "eval" / "predictions.jsonl").write_text(json.dumps(row) + "\n")
        return SimpleNamespace(name=name, method=method, seed=0, variant="base")

    pairs = method_pairs(tmp_path, [run("kava-seed0", "kava", "1 2 3 9"), run("pccot-seed0", "pccot", "1 9 9")])
    assert pairs["kava − pccot"]["mean"] == 0.0
    assert pairs["kava − pccot (digits)"]["mean"] == 0.5  # 3/4 − 1/4; a missing digit counts wrong
