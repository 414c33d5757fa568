"""``kava report``: tables (Markdown, CSV, LaTeX) and plots over a folder of runs — a sweep's or a demo's.

    kava report runs/ablation                  # writes runs/ablation/report/
    kava report outputs/demo-full --out /tmp/r --strict

A run folder with a missing or corrupt metrics file is named on stderr and in report.md; with
``--strict`` the exit status is then 3 (`kava.runtime.exits.INCOMPLETE`), the report written all the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", type=Path, help="a kava sweep --out or kava demo --out folder (holding runs/)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUNS_DIR/report)")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 if any run lacks valid metrics")


def run(args: argparse.Namespace) -> int:
    return report(args.runs_dir, args.out or args.runs_dir / "report", args.strict)


def report(runs_dir: Path, out: Path, strict: bool) -> int:
    """Write the report and print its table; problems go to stderr, one line per run."""
    from kava.runtime import exits
    from kava.experiments.results import write_report

    try:
        found, _ = write_report(runs_dir, out)
    except FileNotFoundError as e:
        print(f"kava report: error: {e}", file=sys.stderr)
        return exits.BAD_INPUT
    for problem in found.problems:
        print(f"kava report: {problem}", file=sys.stderr)
    print((out / "report.md").read_text().split("\n## ")[0].rstrip())
    print(f"wrote {out} ({len(found.runs)} runs, {len(found.problems)} without valid metrics)", file=sys.stderr)
    return exits.INCOMPLETE if strict and found.problems else exits.OK
