"""Smoke-run the paper's real model shapes end to end on this machine's CPU, and measure what it costs.

The demo and the SmolLM2 runs use a 1M-parameter model or SmolLM2-135M; the paper's Table 6 rows
are Qwen2.5-0.5B, Llama-3.2-1B and Llama-3.2-3B. This script builds each of those shapes with
random weights (``model.source.config``, the SmolLM2 tokenizer, as configs/tiny-cpu.yaml does:
speed and memory do not depend on the weights' values, and no checkpoint has to be downloaded)
under the row's own method settings (configs/<row>.yaml: LoRA r, M, T, eviction, loss weights),
and runs every stage a user would, each as its own ``kava`` process (``python -m kava.cli``):

1. ``kava train``, gradient checkpointing off, 3 steps planned at batch 4 / micro-batch 2 and
   stopped (SIGTERM, the engine's preemption path) during step 2: it checkpoints at step 2, exit 75;
2. ``kava train --resume``: step 3 from that checkpoint, then final/ (exit 0);
3. ``kava train`` into a fresh folder with gradient checkpointing on, 2 steps (exit 0);
4. ``kava train --export``: the LoRA merged into a standalone folder;
5. ``kava eval --limit 4`` on the export, on GSM8k-AUG's test questions.

Per stage it records the exit status, the child's peak RSS (``os.wait4``'s rusage of that very
process), wall time and ``os.getloadavg()``; per training run s/step (the engine's ``step_time_s``
from history.jsonl), checkpoint and final/ folder bytes; then the export's bytes and how many
questions the evaluation answered. Training data is GSM8k-AUG's validation split (the
385k-row train split is hub-only), the first ``--records`` records, read from ``--data-dir``, else
``$KAVA_DATA_DIR`` (e.g. ../shared/data), else the hub; checked before any shape runs, and the
folder is passed to every ``kava`` process as ``KAVA_DATA_DIR``.

A shape is run only when its estimated peak fits the memory available now (`free`'s "available"):
the estimate scales the fp32 weight bytes by the largest peak-RSS-to-weights ratio measured so far
(the JSON's earlier rows and this invocation's), or by ``PRIOR_PEAK_OVER_WEIGHTS`` before any
measurement. A shape that does not fit is recorded as skipped, with the estimate and the reason.
Shapes run one after another, never two at once; each work folder is under /tmp and deleted once
measured (checkpoints are gigabytes).

    python benchmarks/real_shape_smoke.py                         # all shapes -> docs/bench/real_shape_smoke.{json,md}
    python benchmarks/real_shape_smoke.py --shapes qwen2.5-0.5b   # one shape (its row replaces the JSON's)
    python benchmarks/real_shape_smoke.py --markdown-only         # the table again from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "bench" / "real_shape_smoke.json"
TOKENIZER = "smollm2"
BATCH_SIZE, MICRO_BATCH_SIZE = 4, 2
EVAL_LIMIT = 4
# Before any shape is measured, a shape's peak RSS is assumed to be at most this many times its
# fp32 weights (weights + LoRA/Adam state + activations at micro-batch 2); measured ratios replace it.
PRIOR_PEAK_OVER_WEIGHTS = 3.0
# Head-room left to the other processes of the machine when deciding whether a shape fits.
MEMORY_MARGIN_BYTES = 1 << 30

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}

# The published config.json values of the Instruct checkpoints the paper fine-tunes (weights tied).
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "config": "configs/qwen05b-aug.yaml",
        "model": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768),
    },
    "llama-3.2-1b": {
        "config": "configs/llama1b-aug.yaml",
        "model": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                      tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, rms_norm_eps=1e-5,
                      max_position_embeddings=131072),
    },
    "llama-3.2-3b": {
        "config": "configs/llama3b-aug.yaml",
        "model": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                      num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                      tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, rms_norm_eps=1e-5,
                      max_position_embeddings=131072),
    },
}
# A cut-down Qwen2.5-0.5B (2 layers, width 64, its vocabulary and head ratio) for the test suite.
TINY = {"config": "configs/qwen05b-aug.yaml",
        "model": {**SHAPES["qwen2.5-0.5b"]["model"], "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 7, "num_key_value_heads": 1, "head_dim": 16}}


# --------------------------------------------------------------------------- run configs

def run_config(shape: dict[str, Any], output_dir: Path, *, train: dict[str, Any], data: dict[str, Any],
               tokenizer: str = TOKENIZER, knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row's paper config (``shape["config"]``, a configs/ yaml) with a random model of
    ``shape``: its method section as written (plus ``knobs``), its train section with ``train``
    on top and no logging or periodic validation, ``data`` as the training records."""
    raw = yaml.safe_load((ROOT / shape["config"]).read_text())
    return {"output_dir": str(output_dir),
            "model": {"source": {"config": dict(shape["model"])}, "tokenizer": tokenizer},
            "method": {**raw["method"], **(knobs or {})},
            "data": data,
            "train": {**raw["train"], "report_to": [], "eval_every": None, **train}}


def smoke_run_config(shape: dict[str, Any], output_dir: Path, *, gradient_checkpointing: bool, max_steps: int,
                     records: int, knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """`run_config` for this script's CPU runs: batch 4 / micro-batch 2, fp32, a checkpoint every
    step, the first ``records`` GSM8k-AUG validation records."""
    train = {"batch_size": BATCH_SIZE, "micro_batch_size": MICRO_BATCH_SIZE, "max_steps": max_steps,
             "gradient_checkpointing": gradient_checkpointing, "mixed_precision": "no", "cpu": True, "save_every": 1}
    return run_config(shape, output_dir, train=train, data={"name": "gsm8k-aug", "split": "valid", "limit": records},
                      knobs=knobs)


def weight_bytes(shape: dict[str, Any]) -> int:
    """fp32 bytes of the shape's weights, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**shape["model"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return 4 * sum(p.numel() for p in model.parameters())


def available_memory_bytes() -> int:
    """``free -b``'s "available": what a new process can take without swapping others out."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def dir_bytes(path: Path) -> int | None:
    """Bytes of the files under ``path`` (None when it does not exist)."""
    if not path.exists():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- one kava process

@dataclass
class Stage:
    """One ``kava`` process: what it was, how it ended and what it cost."""

    name: str
    argv: list[str]
    exit_status: int
    peak_rss_bytes: int
    wall_s: float
    loadavg: list[float]  # 1, 5, 15 minutes, when it ended: the machine is shared


def run_kava(name: str, args: list[str], log: Path, poll: Callable[[subprocess.Popen], None] | None = None,
             launcher: list[str] | None = None, threads: int | None = None,
             extra_env: dict[str, str] | None = None) -> Stage:
    """Run ``python -m kava.cli ARGS`` (``launcher`` before ``-m kava.cli``, e.g. accelerate's) to its
    end; its peak RSS is its own (``os.wait4``), not the maximum over every child this process
    ever waited for (what RUSAGE_CHILDREN would give). Under a launcher it is the launcher's
    process tree's largest (``ru_maxrss`` covers the children it waited for). ``threads`` sets the
    child's OMP_NUM_THREADS (torch's intra-op threads); ``extra_env`` is added to its environment."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    argv = [sys.executable, *(launcher or []), "-m", "kava.cli", *args]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if poll is not None:
                poll(proc)
            time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Stage(name, args, proc.returncode, usage.ru_maxrss * 1024, time.perf_counter() - t0, list(os.getloadavg()))


# Seconds each checkpoint write of the stopped run stalls (kava's test hook): the poll, every 0.5 s,
# then sends its signal while step 1's checkpoint is written, before step 2 starts, however fast a
# step is (a cut-down shape ran steps 2 and 3 within one poll interval). Not in s/step.
STOP_STALL_S = "2"


def stop_after_first_step(history: Path) -> Callable[[subprocess.Popen], None]:
    """A poll that sends SIGTERM once step 1 is logged: the engine finishes step 2 (the signal is
    read at a step's end), checkpoints it and exits 75 — a preemption mid-run. Use with
    ``extra_env={TEST_DELAY_ENV: STOP_STALL_S}``."""
    sent = []

    def poll(proc: subprocess.Popen) -> None:
        if not sent and history.is_file() and history.read_text().count("\n") >= 1:
            proc.send_signal(signal.SIGTERM)
            sent.append(True)

    return poll


def steps(history: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in history.read_text().splitlines() if line] if history.is_file() else []


# --------------------------------------------------------------------------- one shape

class StageFailed(RuntimeError):
    """A stage ended otherwise than it should have; the message names it and its log."""


def expect(stage: Stage, status: int, log: Path) -> None:
    if stage.exit_status != status:
        tail = log.read_text()[-2000:] if log.is_file() else ""
        raise StageFailed(f"{stage.name}: exit status {stage.exit_status}, expected {status}; log tail:\n{tail}")


def measure_shape(name: str, shape: dict[str, Any], work: Path, records: int,
                  knobs: dict[str, Any] | None = None, threads: int | None = None) -> list[dict[str, Any]]:
    """Every stage of one shape in ``work``; two rows (gradient checkpointing off, on)."""
    from kava.runtime import exits
    from kava.runtime.layout import CHECKPOINT_PREFIX, CHECKPOINTS, FINAL
    from kava.training.engine import HISTORY_FILE
    from kava.training.checkpoint import TEST_DELAY_ENV

    rows = []
    for gc in (False, True):
        run_dir = work / f"run-gc-{'on' if gc else 'off'}"
        # Off: 3 steps planned, stopped after 2, resumed for the 3rd. On: 2 steps straight.
        cfg = smoke_run_config(shape, run_dir, gradient_checkpointing=gc, max_steps=2 if gc else 3, records=records, knobs=knobs)
        cfg_file = work / f"{run_dir.name}.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        history = run_dir / HISTORY_FILE
        stages = []
        log = work / f"{run_dir.name}-train.log"
        train = run_kava("train", ["train", "--config", str(cfg_file), "--no-progress"], log,
                         None if gc else stop_after_first_step(history), threads=threads,
                         extra_env=None if gc else {TEST_DELAY_ENV: STOP_STALL_S})
        stages.append(train)
        expect(train, exits.OK if gc else exits.INTERRUPTED, log)
        trained = steps(history)
        if len(trained) != 2:
            raise StageFailed(f"{name}: the first run logged {len(trained)} steps, not 2 ({log})")
        ckpts = sorted(p.name for p in (run_dir / CHECKPOINTS).iterdir())
        row: dict[str, Any] = {
            "shape": name, "config": shape["config"], "model": shape["model"], "gradient_checkpointing": gc,
            "batch_size": BATCH_SIZE, "micro_batch_size": MICRO_BATCH_SIZE, "records": records,
            "torch_threads": threads,
            "steps_timed": len(trained),
            "s_per_step": sum(s["step_time_s"] for s in trained) / len(trained),
            "step_time_s": [s["step_time_s"] for s in trained],
            "tokens_per_s": sum(s["tokens_per_s"] for s in trained) / len(trained),
            "loadavg_during_steps": train.loadavg,
            "checkpoints": ckpts,
            "checkpoint_bytes": dir_bytes(run_dir / CHECKPOINTS),
            "checkpoint_bytes_each": dir_bytes(run_dir / CHECKPOINTS / f"{CHECKPOINT_PREFIX}2"),
        }
        if not gc:
            log = work / f"{run_dir.name}-resume.log"
            resume = run_kava("resume", ["train", "--config", str(cfg_file), "--resume", "--no-progress"], log,
                              threads=threads)
            stages.append(resume)
            expect(resume, exits.OK, log)
            row["resumed_to_step"] = steps(history)[-1]["step"]
            row["checkpoint_bytes_after_resume"] = dir_bytes(run_dir / CHECKPOINTS)
            export_dir = work / "export"
            log = work / "export.log"
            export = run_kava("export", ["train", "--config", str(cfg_file), "--export", str(export_dir)], log,
                              threads=threads)
            stages.append(export)
            expect(export, exits.OK, log)
            row["export_bytes"] = dir_bytes(export_dir)
            log = work / "eval.log"
            evaluation = run_kava("eval", ["eval", "--model", str(export_dir), "--dataset", "gsm8k-aug", "--split", "test",
                                           "--limit", str(EVAL_LIMIT), "--batch-size", str(EVAL_LIMIT),
                                           "--out", str(work / "eval"), "--no-progress"], log, threads=threads)
            stages.append(evaluation)
            expect(evaluation, exits.OK, log)
            summary = json.loads((work / "eval" / "summary.json").read_text())
            row.update(eval_answered=summary["n"], eval_mode=summary["mode"],
                       eval_mean_forward_passes=summary["mean_forward_passes"])
            shutil.rmtree(export_dir)
        else:
            row.update(export_bytes=None, eval_answered=None)  # measured once per shape, on the other row
        row["final_bytes"] = dir_bytes(run_dir / FINAL)
        training = [s for s in stages if s.name in ("train", "resume")]
        row["peak_rss_bytes"] = max(s.peak_rss_bytes for s in training)
        row["stages"] = [asdict(s) for s in stages]
        rows.append(row)
        shutil.rmtree(run_dir)
    return rows


# --------------------------------------------------------------------------- the report

def machine() -> dict[str, Any]:
    import accelerate
    import peft
    import torch
    import transformers

    return {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__}


def peak_ratio(rows: list[dict[str, Any]]) -> float | None:
    """The largest peak RSS of any stage (training, export, eval) over the shape's fp32 weight
    bytes, over the measured rows (None before any measurement)."""
    ratios = [s["peak_rss_bytes"] / r["weight_bytes"] for r in rows for s in r["stages"]]
    return max(ratios) if ratios else None


def gib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**30:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    """docs/bench/real_shape_smoke.md: the JSON as a table, with where it came from."""
    m = report["machine"]
    lines = [
        "# Real-shape smoke runs (CPU)",
        "",
        "Generated by `benchmarks/real_shape_smoke.py` from `real_shape_smoke.json`; reproduce with",
        "",
        "    python benchmarks/real_shape_smoke.py --threads 1",
        "",
        f"Machine: {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, torch {m['torch']}, "
        f"transformers {m['transformers']}, peft {m['peft']}, accelerate {m['accelerate']}.",
        "",
        report["note"],
        "",
        "Random weights of each shape, the row's paper method settings, GSM8k-AUG valid records, fp32 on CPU, "
        f"batch {BATCH_SIZE} / micro-batch {MICRO_BATCH_SIZE}. Sizes in GiB; peak RSS is the larger of the "
        "training and resumed-training processes'; export and eval are measured once per shape (GC-off row).",
        "",
        "| shape | GC | threads | s/step | load avg (1 min) | peak RSS | checkpoints | final/ | export | eval answered | export RSS | eval RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        stages = {s["name"]: s for s in r["stages"]}
        rss = lambda n: gib(stages[n]["peak_rss_bytes"]) if n in stages else "—"  # noqa: E731
        answered = "—" if r["eval_answered"] is None else f"{r['eval_answered']}/{EVAL_LIMIT}"
        lines.append(f"| {r['shape']} | {'on' if r['gradient_checkpointing'] else 'off'} | "
                     f"{r['torch_threads'] or 'default'} | {r['s_per_step']:.1f} | "
                     f"{r['loadavg_during_steps'][0]:.2f} | {gib(r['peak_rss_bytes'])} | {gib(r['checkpoint_bytes'])} | "
                     f"{gib(r['final_bytes'])} | {gib(r['export_bytes'])} | {answered} | {rss('export')} | {rss('eval')} |")
    for s in report.get("skipped", []):
        lines += ["", f"Skipped {s['shape']} ({s['config']}): {s['reason']}"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(report))


NOTE = ("Timings were taken on a shared machine: other jobs ran on its cores at the same time (the load "
        "average beside each timing says how busy it was), so s/step is an upper bound; the memory and "
        "size numbers are what this run is for.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--out", type=Path, default=DEFAULT_JSON, help="the JSON (the .md goes beside it)")
    p.add_argument("--records", type=int, default=16, help="training records (GSM8k-AUG valid, first N)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()), help="where the work folders go")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each kava process (OMP_NUM_THREADS; on a busy machine 1 beats 2)")
    p.add_argument("--tiny", action="store_true", help="a cut-down Qwen2.5-0.5B and M 4, T 1, r 8 (the test's run)")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON, measure nothing")
    p.add_argument("--data-dir", default=None, help="folder holding gsm8k-aug/ (default: $KAVA_DATA_DIR, else the hub)")
    a = p.parse_args(argv)
    if a.markdown_only:
        if not a.out.is_file():
            p.error(f"--markdown-only: no such file {a.out}")
        a.out.with_suffix(".md").write_text(render_markdown(json.loads(a.out.read_text())))
        print(f"wrote {a.out.with_suffix('.md')}")
        return 0
    names = [n.strip() for n in a.shapes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        p.error(f"--shapes: {', '.join(unknown)} not among {', '.join(SHAPES)}")
    if a.records < BATCH_SIZE * 3:
        p.error(f"--records {a.records}: 3 steps of batch {BATCH_SIZE} need at least {BATCH_SIZE * 3}")
    from kava.data.datasets import ENV_DATA_DIR, DatasetError, load_dataset, named_data_dir

    try:  # the data of every stage, before any work: a missing folder or file is one line now
        for split in ("valid", "test"):
            load_dataset("gsm8k-aug", split, data_dir=a.data_dir, limit=1)
    except DatasetError as e:
        p.error(str(e))
    if named_data_dir(a.data_dir) is not None:  # each kava process (run_kava) reads the same folder
        os.environ[ENV_DATA_DIR] = str(named_data_dir(a.data_dir))
    shapes = {"tiny-qwen2": TINY} if a.tiny else {n: SHAPES[n] for n in names}
    knobs = {"num_latents": 4, "num_iterations": 1, "lora_r": 8} if a.tiny else None
    earlier = json.loads(a.out.read_text()) if a.out.is_file() else {"runs": [], "skipped": []}
    runs = [r for r in earlier["runs"] if r["shape"] not in shapes]
    skipped = [s for s in earlier.get("skipped", []) if s["shape"] not in shapes]
    failed = False
    order = list(SHAPES) + ["tiny-qwen2"]
    for name, shape in shapes.items():
        weights = weight_bytes(shape)
        ratio = peak_ratio(runs)
        estimate = int(weights * (ratio or PRIOR_PEAK_OVER_WEIGHTS))
        available = available_memory_bytes()
        basis = f"{ratio:.2f}x measured" if ratio else f"{PRIOR_PEAK_OVER_WEIGHTS}x prior"
        print(f"{name}: fp32 weights {gib(weights)} GiB, estimated peak {gib(estimate)} GiB ({basis}), "
              f"available {gib(available)} GiB", flush=True)
        if estimate + MEMORY_MARGIN_BYTES > available:
            skipped.append({"shape": name, "config": shape["config"], "weight_bytes": weights, "estimate_bytes": estimate,
                            "available_bytes": available,
                            "reason": f"estimated peak RSS {gib(estimate)} GiB (fp32 weights {gib(weights)} GiB × {basis} "
                                      f"peak/weights) + {gib(MEMORY_MARGIN_BYTES)} GiB margin exceeds the "
                                      f"{gib(available)} GiB available when it was to start"})
            print(f"{name}: skipped ({skipped[-1]['reason']})", flush=True)
            continue
        work = Path(tempfile.mkdtemp(prefix=f"kava-smoke-{name}-", dir=a.work))
        try:
            rows = measure_shape(name, shape, work, a.records, knobs, a.threads)
        except StageFailed as e:
            print(f"{name}: {e}", file=sys.stderr)
            failed = True
            continue
        finally:
            shutil.rmtree(work)
        for row in rows:
            row["weight_bytes"] = weights
            print(f"{name} GC {'on' if row['gradient_checkpointing'] else 'off'}: {row['s_per_step']:.1f} s/step "
                  f"(load {row['loadavg_during_steps'][0]:.2f}), peak RSS {gib(row['peak_rss_bytes'])} GiB, "
                  f"checkpoints {gib(row['checkpoint_bytes'])} GiB, final {gib(row['final_bytes'])} GiB, "
                  f"export {gib(row['export_bytes'])} GiB, answered {row['eval_answered']}", flush=True)
        runs.extend(rows)
        runs.sort(key=lambda r: (order.index(r["shape"]), r["gradient_checkpointing"]))
        write_report({"machine": machine(), "note": NOTE, "runs": runs, "skipped": skipped}, a.out)  # after each shape
    write_report({"machine": machine(), "note": NOTE, "runs": runs, "skipped": skipped}, a.out)
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
