"""``kava eval``: score a trained kava checkpoint on a dataset and write its predictions.

The inference mode (latent, CoT or direct) comes from the checkpoint's own config, so a model
is always evaluated the way it was trained to answer.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="kava checkpoint folder (written by training)")
    parser.add_argument("--dataset", required=True, help="registered dataset name (gsm8k, svamp, ...) or a file")
    parser.add_argument("--split", default=None, help="split of a registered dataset (default: its test split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="outputs/eval", help="folder for predictions.jsonl and summary.json")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="token limit per question (default: 256 for CoT, 32 otherwise)")
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (needs --temperature)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (needs --temperature; default 0)")
    parser.add_argument("--skip-bad", action="store_true", help="skip malformed dataset rows instead of stopping")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from kava.config import ConfigError
    from kava.data.datasets import DatasetError, load_dataset
    from kava.evaluation.evaluate import evaluate, write_results
    from kava.model.kava_model import KavaModel

    try:
        _check_counts(args)
        sampling = _sampling(args)
        data = load_dataset(args.dataset, args.split, skip_bad=args.skip_bad, limit=args.limit)
        model = KavaModel.from_pretrained(args.model, device=args.device)
    except (ValueError, FileNotFoundError, DatasetError, ConfigError) as exc:
        print(f"kava eval: error: {exc}", file=sys.stderr)
        return 2
    if data.skip_notice():
        print(data.skip_notice(), file=sys.stderr)
    result = evaluate(model, data, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                      sampling=sampling, progress=not args.no_progress)
    out = write_results(result, args.out)
    s = result.summary
    lo, hi = s["accuracy_ci95"]
    print(f"{data.name} ({s['mode']}, {s['n']} questions): accuracy {s['accuracy']:.1%} "
          f"[95% CI {lo:.1%}-{hi:.1%}], mean forward passes {s['mean_forward_passes']:.1f}, "
          f"mean generated tokens {s['mean_generated_tokens']:.1f}, {s['questions_per_s']:.2f} questions/s")
    print(f"wrote {out}")
    return 0


def _check_counts(args: argparse.Namespace) -> None:
    """Reject bad counts before the (slow) model load rather than after it."""
    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")


def _sampling(args: argparse.Namespace):
    """Greedy unless --temperature is given; --top-p / --seed alone are an error, not ignored."""
    from kava.evaluation.decoding import Sampling

    if args.temperature is None:
        if args.top_p is not None or args.seed is not None:
            raise ValueError("--top-p and --seed apply to sampling only; add --temperature")
        return None
    top_p = 1.0 if args.top_p is None else args.top_p
    return Sampling(args.temperature, top_p, 0 if args.seed is None else args.seed)
