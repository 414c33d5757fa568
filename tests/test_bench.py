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


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path, one_thread):
    """benchmarks/gpu_check.py is only measured on a GPU machine (when one is lent): its smoke run
    here keeps it working — assets prepared, both methods trained and timed, answers generated."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    assets, out = tmp_path / "assets", tmp_path / "out"
    run = lambda *args: subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)  # noqa: E731
    prep = run("--prepare", str(assets), "--records", "32")
    assert prep.returncode == 0, prep.stderr
    proc = run("--assets", str(assets), "--out", str(out), "--device", "cpu", "--smoke", "--models", "llama-3.2-1b",
               "--batch", "4", "--rounds", "1", "--warmup", "0", "--cot-tokens", "3", "--batch1-questions", "1")
    assert proc.returncode == 0, proc.stderr
    row = json.loads((out / "gpu_check.json").read_text())["llama-3.2-1b"]
    assert row["kava"]["step_s"] > 0 and row["cot"]["step_s"] > 0
    assert row["inference_batch32"]["cot"]["tokens"] == 3  # a random model writes to the limit
    assert row["inference_batch1"]["kava"]["forward_passes"] == 4  # 1 + T (1) + 2, the smoke run's minimum
    no_gpu = run("--assets", str(assets), "--out", str(out), "--device", "cuda")
    assert no_gpu.returncode == 2 and "no GPU here" in no_gpu.stderr
