"""`kava bench`'s measuring pieces (the benchmark itself runs outside the suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from types import SimpleNamespace

import torch

from kava.benchmark.bench import (SpanTimer, curriculum_batches, flagged_rounds, paired_ratio, ratio_spread, rotated, step_table,
                                  time_training_steps, whole_rounds)

from conftest import build_model as build


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 2 is slow for both methods: the paired ratio ignores it, the ratio of medians would not.
    assert paired_ratio([1.0, 10.0, 1.1], [2.0, 20.0, 2.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


class FakeClock:
    """A clock that only moves when a fake step says so: timings exact, whatever the machine does."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_span_timer_accumulates_by_name():
    clock = FakeClock()
    t = SpanTimer(clock)
    for _ in range(2):
        with t("a"):
            clock.now += 1.5
    assert t.totals["a"] == 3.0
    assert {"a", "a_sys", "a_faults"} == set(t.totals)


def test_span_timer_counts_the_page_faults_of_its_span():
    t = SpanTimer(FakeClock())
    with t("idle"):
        pass
    with t("touch"):  # 64 MiB, above malloc's mmap threshold: fresh pages, each first written here
        buffer = bytearray(64 << 20)
        buffer[::4096] = b"\x01" * len(range(0, 64 << 20, 4096))
    # 16,384 pages of 4 KiB; 32 even where transparent huge pages map 2 MiB at a time
    assert t.totals["touch_faults"] >= 32 > t.totals["idle_faults"]


class FakeStep(torch.nn.Module):
    """A training step of fixed cost, plus what the old protocol charged to one method: the first
    step of a round (a new batch since the last call) and a step on a larger batch than any before
    (a new heap peak) each pay ``penalty`` more, whoever runs it."""

    def __init__(self, clock: FakeClock, machine: dict, cost: float = 1.0, penalty: float = 0.5) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.clock, self.machine, self.cost, self.penalty = clock, machine, cost, penalty
        self.spans = None

    def forward(self, batch):
        cost = self.cost
        if self.machine.get("batch") is not batch:
            self.machine["batch"] = batch
            cost += self.penalty
        size = batch["ids"].numel()
        if size > self.machine.get("peak", 0):
            self.machine["peak"] = size
            cost += self.penalty
        self.clock.now += cost
        return SimpleNamespace(loss=self.w.sum())


def test_a_slow_first_in_round_and_new_heap_peaks_leave_the_paired_ratio_at_one():
    """Four methods of equal cost: whoever runs first in a round pays a penalty, and so does whoever
    first reaches a new memory peak. With the order fixed and the warm-up on the first (smallest)
    batch, the first method paid both (kava / pccot 1.5–2.0 here); rotated, with the warm-up on the
    largest batch, no method is charged."""
    clock, machine = FakeClock(), {}
    models = {m: FakeStep(clock, machine) for m in ("kava", "pccot", "codi", "cot")}
    batches = [{"ids": torch.zeros(1, n)} for n in (1, 2, 4, 3)]  # growing: each round a new peak, unless warmed
    times = time_training_steps(models, batches, rounds=4, warmup=1, clock=clock)
    steps = {m: [row["step"] for row in rows] for m, rows in times.items()}
    firsts = [row["step"] for rows in times.values() for row in rows if row["position"] == 0]
    assert firsts == [1.5] * 4  # the first-in-round effect is there: each method paid it once
    assert max(max(s) for s in steps.values()) == 1.5  # and no round reached a new peak
    for other in ("pccot", "codi", "cot"):
        assert paired_ratio(steps["kava"], steps[other]) == pytest.approx(1.0)
    assert sorted(row["position"] for row in times["kava"]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="multiple of the 4 methods"):
        time_training_steps(models, batches, rounds=3, warmup=0, clock=clock)


def test_rotation_and_whole_rounds():
    assert [rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert rotated("abc", -1) == list("cab")  # warm-up rounds rotate too
    assert (whole_rounds(6, 4), whole_rounds(8, 4), whole_rounds(1, 3)) == (8, 8, 3)


def test_ratio_spread_and_flagged_rounds():
    assert ratio_spread([1.0, 3.0, 2.0], [1.0, 1.0, 1.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": 3}
    times = {"kava": [{"round": 0, "position": 0, "step": 2.0, "step_sys": 0.5, "step_faults": 300000},
                      {"round": 1, "position": 1, "step": 1.0, "step_sys": 0.01, "step_faults": 10}],
             "cot": [{"round": 0, "position": 1, "step": 1.0, "step_sys": 0.0, "step_faults": 0},
                     {"round": 1, "position": 0, "step": 1.0, "step_sys": 0.06, "step_faults": 5000}]}
    flagged = flagged_rounds(times, 0.05)
    assert [(f["round"], f["method"], f["minor_faults"]) for f in flagged] == [(0, "kava", 300000), (1, "cot", 5000)]


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


@pytest.mark.slow  # another process
def test_bench_without_a_trained_demo_stops_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kava.cli", "bench", "--demo", str(tmp_path / "none"),
                           "--out", str(tmp_path / "bench")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "run `kava demo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bench").exists()


@pytest.mark.slow  # other processes: the demo's, kava train's, accelerate launch's
def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path, one_thread):
    """benchmarks/gpu_check.py is only measured on a GPU: this smoke run on a CPU keeps every part
    working — assets prepared, the shrunk demo trained and scored, the 1B
    configs' KaVa and CoT `kava train` steps, the launch of the FSDP part (without FSDP on a CPU:
    accelerate refuses it there), both methods trained and timed, answers generated."""
    import importlib.util
    import json
    from pathlib import Path

    from kava.methods import demo_methods

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    assets, out = tmp_path / "assets", tmp_path / "out"
    run = lambda *args: subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)  # noqa: E731
    prep = run("--prepare", str(assets), "--records", "32")
    assert prep.returncode == 0, prep.stderr
    proc = run("--assets", str(assets), "--out", str(out), "--device", "cpu", "--smoke", "--models", "llama-3.2-1b",
               "--batch", "4", "--rounds", "1", "--warmup", "0", "--cot-tokens", "3", "--batch1-questions", "1",
               "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    row = report["llama-3.2-1b"]
    kava = row["kava"]  # the rates are the median step's
    assert kava["examples_per_s"] == pytest.approx(4 / kava["step_s"])
    assert kava["teacher_tokens_per_s"] == pytest.approx(row["teacher_tokens_per_batch"] / kava["step_s"])
    assert row["inference_batch32"]["cot"]["tokens"] == 3  # a random model writes to the limit
    assert row["inference_batch1"]["kava"]["forward_passes"] == 4  # 1 + T (1) + 2, the smoke run's minimum
    demo = report["demo"]
    assert demo["settings"] == "smoke" and set(demo["accuracy"]) == set(demo_methods()) and demo["test_questions"] == 8
    assert demo["mean_forward_passes"]["kava"] < demo["mean_forward_passes"]["cot"]  # 1 + T + answer vs a trace
    planner = importlib.util.find_spec("kava.training.plan") is not None
    for method, config in (("kava", "configs/llama1b-aug.yaml"), ("cot", "configs/llama1b-aug-cot.yaml")):
        step = report["steps"][method]
        assert step["config"] == config and step["exit_status"] == 0 and step["steps"] == 2 and step["step_s"] > 0
        assert step["tokens_per_s"] > 0 and step["peak_memory_bytes"] > 0
        assert (step["planner_estimate_bytes"] is not None) == planner
    fsdp = report["fsdp"]
    assert fsdp["distributed_type"] == "NO" and fsdp["exit_status"] == 0 and fsdp["steps"] == 2 and fsdp["checkpoint_saved"]
    late = run("--assets", str(assets), "--out", str(tmp_path / "late"), "--device", "cpu", "--smoke",
               "--parts", "steps,fsdp", "--deadline-s", "0")
    assert late.returncode == 0, late.stderr
    assert set(json.loads((tmp_path / "late" / "gpu_check.json").read_text())) >= {"steps", "fsdp"}
    assert all("not_run" in json.loads((tmp_path / "late" / "gpu_check.json").read_text())[p] for p in ("steps", "fsdp"))
    no_gpu = run("--assets", str(assets), "--out", str(out), "--device", "cuda")
    assert no_gpu.returncode == 2 and "no GPU here" in no_gpu.stderr
    bad = run("--assets", str(assets), "--out", str(out), "--device", "cpu", "--parts", "demo,bogus")
    assert bad.returncode == 2 and "--parts" in bad.stderr


def test_a_curriculum_is_timed_across_its_stages(records):
    """Coconut at K = 3, c = 2, 2 steps a stage, from stage 1: it is complete (every step a thought)
    at step 6, so the 4 batches are built at steps 0, 2, 4, 6: stages 1, 2, 3 and the last."""
    coconut = build("coconut", num_latents=6, stage_steps=2)
    thoughts = curriculum_batches(coconut.builder, [records] * 4)
    assert [int(b["s_num_latents"]) for b in thoughts] == [2, 4, 6, 6]
    # iCoT loses one token every 3 steps until the longest trace is gone.
    icot = build("icot", stage_steps=3, removal_smoothing=None)
    batches = curriculum_batches(icot.builder, [records] * 4)
    full = [len(icot.builder.cot_ids(r.steps, drop_last=False)) for r in records]
    removed = [0, max(full) // 3, 2 * max(full) // 3, max(full)]
    assert [b["t_cot_mask"].sum(1).tolist() for b in batches] == [[max(0, n - k) for n in full] for k in removed]
    # Each method steps through its own batches in the rounds.
    times = time_training_steps({"coconut": coconut, "icot": icot}, {"coconut": thoughts, "icot": batches},
                                rounds=2, warmup=1)
    assert [row["round"] for row in times["icot"]] == [0, 1]
