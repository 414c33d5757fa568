"""``kava demo-diagnose``: why the demo's latents help or not (latent ablation, teacher-cache oracle)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="a folder written by `kava demo`")
    parser.add_argument("--seed", type=int, default=0, help="which seed's runs to diagnose")
    parser.add_argument("--questions", type=int, default=200, help="validation questions (at most 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    import torch

    from kava.demo.diagnose import diagnose, format_diagnostics
    from kava.runtime import exits

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = diagnose(args.out, seed=args.seed, questions=args.questions)
    except (FileNotFoundError, ValueError) as e:
        print(f"kava demo-diagnose: error: {' '.join(str(e).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    print(format_diagnostics(result))
    return exits.OK
