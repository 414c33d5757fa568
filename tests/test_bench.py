"""`kava bench`'s measuring pieces (the benchmark itself runs outside the suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kava.benchmark.bench import SpanTimer, paired_ratio, step_table, time_training_steps

from conftest import build_model as build


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 2 is slow for both methods: the paired ratio ignores it, the ratio of medians would not.
    assert paired_ratio([1.0, 10.0, 1.1], [2.0, 20.0, 2.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_span_timer_accumulates_by_name():
    t = SpanTimer()
    for _ in range(2):
        with t("a"):
            pass
    assert set(t.totals) == {"a"} and t.totals["a"] >= 0


def test_a_kava_step_splits_into_teacher_eviction_student(records):
    models = {"kava": build("kava"), "cot": build("cot")}
    batches = [models["kava"].builder.training_batch(records)]
    times = time_training_steps(models, batches, rounds=2, warmup=0)
    table = step_table(times)
    kava, cot = table["kava"], table["cot"]
    assert all(kava[k] > 0 for k in ("teacher", "eviction", "student", "backward"))
    assert kava["teacher"] + kava["eviction"] + kava["student"] <= kava["forward"]
    assert cot["eviction"] == 0 and cot["student"] == 0 and cot["teacher"] > 0  # CoT has no student
    assert all(m.spans is None for m in models.values())  # instrumentation is removed afterwards


def test_bench_without_a_trained_demo_stops_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kava.cli", "bench", "--demo", str(tmp_path / "none"),
                           "--out", str(tmp_path / "bench")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "run `kava demo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bench").exists()
