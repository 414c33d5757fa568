"""``kava bench``: step and inference costs of KaVa beside the baselines (outside the test suite)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/bench", help="output folder (report.json, report.md)")
    parser.add_argument("--demo", default="outputs/demo", help="a finished `kava demo` folder: its trained models are "
                        "timed answering questions")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: under 10 minutes on 2 cores")
    parser.add_argument("--data-dir", default=None, help="folder holding gsm8k-aug/valid.txt (default: "
                        "$KAVA_DATA_DIR, else the hub id); a named folder without the file is an error")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    import torch

    from kava.benchmark.bench import BenchSettings, check_demo_dir, format_report, run_bench
    from kava.runtime import exits

    try:
        check_demo_dir(args.demo)
    except FileNotFoundError as e:
        print(f"kava bench: error: {e}", file=sys.stderr)
        return exits.BAD_INPUT
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_bench(args.out, args.demo, BenchSettings.quick() if args.quick else BenchSettings(),
                       data_dir=args.data_dir)
    print(format_report(report))
    print(f"report in {args.out}/report.json")
    return exits.OK
