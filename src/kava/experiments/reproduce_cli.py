"""``kava reproduce``: a results table from one file (`kava.experiments.table`), run by the sweep.

    kava reproduce configs/table1-llama1b.yaml --out runs/table1 --dry-run         # runs, memory, GPU time
    kava reproduce configs/table1-llama1b.yaml --out runs/table1 --print-commands  # one launch per run
    kava reproduce configs/table1-llama1b.yaml --out runs/table1                   # everything, in order

Rows run in dependency order (a ``start_from`` row after the row it starts from); running the same
command again resumes. After a whole run the report goes to ``OUT/report/``: ``table.md`` (every
row on every test set, the paper's numbers beside) and one `kava report` folder per test set.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

# The GPU time estimate's assumptions (`gpu_seconds`): one H100 SXM's dense bf16 peak and the share
# of it a LoRA fine-tune of a 1B model reaches (model FLOPs utilisation). Both are assumptions, said
# with every estimate: the estimate is the arithmetic, not a measurement.
PEAK_FLOPS = 989e12
MFU = 0.35


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", type=Path, help="table YAML file (configs/table1-llama1b.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="folder: runs/<row>-seed<S>/ per run, report/")
    parser.add_argument("--only", action="append", metavar="RUN", help="run only this run (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs with their start, planned memory per device and estimated GPU time")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one `accelerate launch` command per run, with the run it must wait for")
    parser.add_argument("--processes", type=int, default=1, help="--dry-run: processes (GPUs) per run (default 1)")
    parser.add_argument("--gpu-memory", default="80GB", help="--dry-run: memory of one GPU (default 80GB)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from kava.experiments.sweep_cli import run_plan
    from kava.experiments.table import load_table
    from kava.training.plan import parse_bytes

    memory = parse_bytes(args.gpu_memory)
    hours: list[float] = []

    def lines(plan) -> list[str]:
        return launch_commands(plan, args.table, args.out)

    def described(spec) -> str:
        text, h = describe(spec, args.processes, memory)
        hours.append(h)
        return text

    status = run_plan(args, "kava reproduce", lambda: load_table(args.table), lines, lambda: report(args.out),
                      describe=described)
    if hours:
        print(f"~{sum(hours):.0f} GPU-hours of training in all (arithmetic at {MFU:.0%} of a {PEAK_FLOPS / 1e12:.0f} "
              "TFLOPS bf16 peak, one H100 SXM; evaluation not counted)", file=sys.stderr)
    return status


def launch_commands(plan, table: Path, out: Path) -> list[str]:
    """One ``accelerate launch`` per run, in dependency order; a run that starts from another says so."""
    lines = []
    for spec in plan.runs:
        command = shlex.join(["accelerate", "launch", "-m", "kava.cli", "reproduce", str(table), "--out", str(out),
                              "--only", spec.name, "--no-progress"])
        after = spec.config.get("start_from")
        lines.append(command + (f"  # after {after}" if after else ""))
    return lines


def describe(spec, processes: int, memory: int) -> tuple[str, float]:
    """``--dry-run``'s columns for one run (its start, planned peak per device, estimated GPU time)
    and the GPU-hours."""
    from kava.training.plan import plan as make_plan
    from kava.training.run_config import run_config_from_dict

    cfg = run_config_from_dict(dict(spec.config["run_config"], output_dir="unused"))
    p = make_plan(cfg, processes=processes, device_memory=memory)
    row = p.configured
    start = spec.config.get("start_from") or "-"
    hours = gpu_seconds(p, cfg) / 3600
    return (f"after {start}\t{row.strategy} x {row.processes}: {row.bytes / 1e9:.1f} GB per device "
            f"({'fits' if row.fits else 'does not fit'})\t~{hours:.1f} GPU-hours (all processes together)", hours)


def gpu_seconds(p, cfg) -> float:
    """Training time on GPUs, estimated from arithmetic: tokens through the model in every optimizer
    step (the planner's 95th-percentile lengths, every pass with gradient: `MemoryModel.passes`),
    2·N FLOPs per token forward and 2·N backward through the frozen base plus 2·N_trainable for the
    trained weights' gradients, at `MFU` of `PEAK_FLOPS`. Evaluation is not counted."""
    from kava.training.plan import MemoryModel

    passes = MemoryModel({}, cfg.method, act_bytes=2, weight_bytes=2, autocast_copies=False).passes(p.lengths)
    tokens = cfg.train.batch_size * sum(new for new, _, _ in passes) * p.total_steps
    flops = tokens * (4 * p.base_params + 2 * p.trainable_params)
    return flops / (PEAK_FLOPS * MFU)


def report(out: Path) -> int:
    """Every test set's `kava report` folder and the combined ``table.md``."""
    from kava.experiments.results import collect, write_report
    from kava.runtime import exits

    found = collect(out)
    tests = list(dict.fromkeys(t for r in found.runs for t in (r.summaries or {})))
    columns: dict[str, dict[str, Any]] = {}
    for test in tests:
        _, columns[test] = write_report(out, out / "report" / test, test=test)
    text = table_markdown(columns, found)
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "table.md").write_text(text)
    print(text)
    for problem in found.problems:
        print(f"kava reproduce: {problem}", file=sys.stderr)
    print(f"wrote {out / 'report'}", file=sys.stderr)
    return exits.OK


def table_markdown(columns: dict[str, dict[str, Any]], found) -> str:
    """Rows × test sets: accuracy mean ± std over seeds (the paper's beside, where it has the cell)."""
    rows = list(dict.fromkeys(r.row for r in found.runs))
    head = "| row | seeds | " + " | ".join(f"{t} % (paper)" for t in columns) + " | forward passes |"
    lines = ["# Results table", "", "Accuracy mean ± std over seeds on each test set; the paper's number beside it "
             "where docs/method.md §9 has the cell (GSM8k only).", "", head,
             "|---|---|" + "---|" * len(columns) + "---|"]
    for row in rows:
        cells, seeds, passes = [], "", ""
        for agg in columns.values():
            a = agg.get(row)
            if a is None:
                cells.append("—")
                continue
            acc = a["accuracy"]
            paper = a.get("paper_accuracy")
            cells.append(f"{100 * acc['mean']:.1f} ± {100 * (acc['std'] or 0):.1f}"
                         + (f" ({paper:.1f})" if paper is not None else ""))
            seeds, passes = str(len(a["seeds"])), f"{a['forward_passes']['mean']:.1f}"
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + f" | {passes} |")
    return "\n".join(lines) + "\n"
