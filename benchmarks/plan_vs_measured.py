"""`kava plan`'s CPU estimate against the measured peak RSS of 2-step `kava train` runs.

The plan is `kava plan`'s one-process peak: the counted tensors (weights, gradients, AdamW, one
micro-batch's activations) with its allowance for what they miss, the runtime included
(`kava.training.plan.per_device`). The runtime's fixed part is also measured here, for reference,
as the peak RSS of a process that imports torch and transformers and loads the run's tokenizer
and records (the rest of `kava train` before the model). Each measurement runs in a fresh child
process and reads its own ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end.

Rows of docs/bench/real_shape_smoke.json (another benchmark's 1B-shape runs), when present,
are added with the planner's estimate for the same settings.

    python benchmarks/plan_vs_measured.py            # writes docs/bench/plan_vs_measured.json
    python benchmarks/plan_vs_measured.py --replan   # the planner's side again, the measurements kept

The configs' data is read from ``--data-dir``, else ``$KAVA_DATA_DIR`` (e.g. ../shared/data): the
planner reads local data only. The folder is passed to every child process as ``KAVA_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench" / "plan_vs_measured.json"
SMOKE = ROOT / "docs" / "bench" / "real_shape_smoke.json"
# (config, overrides): two optimizer steps on the CPU, no evaluation, no tracker.
RUNS = [
    ("configs/tiny-cpu.yaml", ["train.max_steps=2", "train.save_every=2"]),
    ("configs/smollm2-135m.yaml", ["train.cpu=true", "train.max_steps=2", "train.batch_size=8",
                                   "train.micro_batch_size=8", "data.limit=64", "train.save_every=2", "eval=null"]),
]
COMMON = ["train.report_to=[]"]

_TRAIN = """
import resource, sys
from kava.cli import main
status = main(["train", "--config", sys.argv[1], "--no-progress", *sys.argv[2:]])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, status)
"""
_OVERHEAD = """
import resource, sys
import torch, transformers
from kava.training.run_config import load_run_config
from kava.training.from_config import load_records
from kava.model.loading import ModelSource
cfg = load_run_config(sys.argv[1], sys.argv[2:])
ModelSource.parse(cfg.model.tokenizer or cfg.model.source).load_tokenizer()
load_records(cfg)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 0)
"""


def _child(code: str, config: str, overrides: list[str]) -> int:
    """Peak RSS (bytes) of a child running `code`; its failure stops the benchmark with its output."""
    proc = subprocess.run([sys.executable, "-c", code, config, *overrides], cwd=ROOT, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("PEAK ")]
    if proc.returncode or not lines or lines[-1].split()[2] != "0":
        raise SystemExit(f"{config}: the child failed (status {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return int(lines[-1].split()[1])


def measure(config: str, overrides: list[str]) -> dict:
    from kava.training.plan import plan
    from kava.training.run_config import load_run_config

    with tempfile.TemporaryDirectory() as tmp:
        ov = [*overrides, *COMMON, f"output_dir={tmp}/run"]
        row = plan(load_run_config(ROOT / config, ov)).configured
        overhead = _child(_OVERHEAD, config, ov)
        peak = _child(_TRAIN, config, ov)
    return _compared({
        "config": config, "overrides": overrides, "device": "cpu", "micro_batch_size": row.micro_batch_size,
        "gradient_checkpointing": row.gradient_checkpointing, "runtime_overhead_bytes": overhead,
        "measured_peak_rss_bytes": peak,
        "compared": "kava plan's one-process peak vs the peak RSS (ru_maxrss) of a 2-step kava train child process",
    })


def _compared(row: dict) -> dict:
    """``row`` with the current planner's peak for its config and overrides, and plan ÷ measured."""
    from kava.training.plan import planned_peak

    planned = planned_peak(ROOT / row["config"], row["overrides"])
    return {**row, "planned_bytes": planned, "plan_over_measured": round(planned / row["measured_peak_rss_bytes"], 3)}


def smoke_rows(overhead: int) -> list[dict]:
    """The measured rows of real_shape_smoke.json (the Table 6 shapes, random weights) beside the
    planner's peak. Their runtime overhead is not measured there: the SmolLM2 run's (``overhead``)
    is recorded for reference, the same tokenizer and data loaded by the same command."""
    if not SMOKE.is_file():
        return []
    out = []
    for r in json.loads(SMOKE.read_text())["runs"]:
        if r.get("skipped") or not r.get("peak_rss_bytes"):
            continue
        overrides = [f"train.gradient_checkpointing={str(bool(r['gradient_checkpointing'])).lower()}",
                     f"train.micro_batch_size={r['micro_batch_size']}", f"train.batch_size={r['micro_batch_size']}",
                     "train.cpu=true"]
        out.append(_compared({
            "config": r["config"], "overrides": overrides, "source": str(SMOKE.relative_to(ROOT)), "device": "cpu",
            "micro_batch_size": r["micro_batch_size"], "gradient_checkpointing": r["gradient_checkpointing"],
            "runtime_overhead_bytes": overhead, "measured_peak_rss_bytes": r["peak_rss_bytes"],
            "compared": "kava plan's one-process peak vs the smoke run's peak RSS (its kava train process, gradient "
                        "accumulation 2; runtime overhead: the SmolLM2 run's, for reference)"}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replan", action="store_true", help="the planner's side again, the measurements kept")
    parser.add_argument("--data-dir", default=None, help="folder holding the configs' data (default: $KAVA_DATA_DIR)")
    args = parser.parse_args()
    from kava.data.datasets import ENV_DATA_DIR, named_data_dir

    folder = named_data_dir(args.data_dir)
    if folder is None:
        parser.error(f"no data folder named: pass --data-dir or set {ENV_DATA_DIR} (e.g. ../shared/data); "
                     "the planner reads local data only")
    os.environ[ENV_DATA_DIR] = str(folder)  # the planner here and each child process read this folder
    if args.replan:
        rows = [_compared(r) for r in json.loads(OUT.read_text())["rows"] if "source" not in r]
    else:
        rows = [measure(c, o) for c, o in RUNS]
    rows += smoke_rows(next(r["runtime_overhead_bytes"] for r in rows if "smollm2" in r["config"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    for r in rows:
        print(f"{r['config']} (gradient checkpointing {r['gradient_checkpointing']}): planned "
              f"{r['planned_bytes'] / 1e6:.0f} MB vs measured {r['measured_peak_rss_bytes'] / 1e6:.0f} MB "
              f"(plan / measured {r['plan_over_measured']:.3f})")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
