"""The ``kava`` command: a thin dispatcher over the Python API.

Each subcommand lives next to the code it drives and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them up, importing lazily so ``kava --help`` is fast. Exit statuses are those of `kava.runtime.exits`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kava.runtime import exits

SUBCOMMANDS = {
    "train": ("kava.training.cli", "fine-tune a model with a KaVa method preset from a YAML config"),
    "eval": ("kava.evaluation.cli", "evaluate a trained model on a dataset (accuracy and cost)"),
    "lm-eval": ("kava.evaluation.harness_cli", "lm-evaluation-harness with the kava model type and kava's offline tasks"),
    "infer": ("kava.infer_cli", "ask a trained model questions: interactive, from a file, or from stdin"),
    "inspect": ("kava.inspection.cli", "look inside a latent model: latents read as tokens, kept trace tokens, K/V match"),
    "demo": ("kava.experiments.demo_cli", "train and compare KaVa, CoT and No-CoT on a small task from scratch, on CPU (a preset sweep)"),
    "demo-diagnose": ("kava.demo.diagnose_cli", "why a demo's latents help or not: latent ablation, teacher-cache oracle"),
    "bench": ("kava.benchmark.cli", "time training steps and answers of KaVa beside the baselines (paired medians)"),
    "sweep": ("kava.experiments.sweep_cli", "run a grid of runs (methods, ablation variants, knobs, seeds), resumable"),
    "reproduce": ("kava.experiments.reproduce_cli", "a results table from one file: rows, seeds, test sets, which row starts from which"),
    "plan": ("kava.training.plan_cli", "estimate a run config's memory per device, disk and steps without loading weights"),
    "report": ("kava.experiments.report_cli", "tables and plots over a folder of runs: mean ± std over seeds, paper beside"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kava", description="Latent reasoning via compressed KV-cache distillation")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        modules[name] = importlib.import_module(module)
        # A wrapper of another tool's command line (PASS_THROUGH) gets every argument, -h included.
        passes = getattr(modules[name], "PASS_THROUGH", False)
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=not passes)
        modules[name].add_arguments(p)
    args, rest = parser.parse_known_args(argv)
    if getattr(modules[args.command], "PASS_THROUGH", False):
        args.passed = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handler, or a second one: no traceback
        print(f"\nkava {args.command}: interrupted", file=sys.stderr)
        return exits.ABORTED


if __name__ == "__main__":
    sys.exit(main())
