"""``kava eval``: score a trained kava checkpoint on a dataset and write its predictions.

The inference mode (latent, CoT or direct) comes from the checkpoint's own config, so a model
is always evaluated the way it was trained to answer.

Nothing is lost and nothing surprising happens to the output folder (``results``): predictions
are streamed to ``--out`` as batches finish, SIGINT / SIGTERM stop after the batch in flight
(exit status 75) and ``--resume`` continues from what was written; a folder that holds results
is refused unless ``--resume`` or ``--overwrite`` is given. Every bad input is one line on
stderr (exit status 2) before the model loads; a full or read-only disk is one line too (status 74).

All of it is `kava.evaluation.resumable.evaluate_checkpoint`; this module only maps the flags onto
its arguments and its exceptions onto exit statuses.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a trained model: a run folder (its final/ or newest checkpoint), "
                        "a checkpoint, or a model / exported folder")
    parser.add_argument("--dataset", required=True, help="registered dataset name (gsm8k, svamp, math500, aqua, ...) or a file")
    parser.add_argument("--split", default=None, help="split of a registered dataset (default: its test split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="outputs/eval", help="folder for predictions.jsonl and summary.json")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted evaluation in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="token limit per question (default: 256 for CoT, 32 otherwise)")
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (needs --temperature)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (needs --temperature; default 0)")
    parser.add_argument("--skip-bad", action="store_true", help="skip malformed dataset rows instead of stopping")
    parser.add_argument("--data-dir", default=None, help="folder a registered dataset is read from (default: "
                        "$KAVA_DATA_DIR, else its hub id); a named folder without the file is an error")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """``kava eval``: `evaluate_checkpoint` with the flags as its arguments; a refusal is one line on
    stderr and status 2, a signal status 75 (the predictions so far are kept), a write the disk
    refuses one line and status 74 (the predictions so far are kept too)."""
    from kava.runtime import exits
    from kava.runtime.disk import WriteFailed
    from kava.evaluation.resumable import EvaluationInterrupted, EvaluationRefused, evaluate_checkpoint, summary_line

    try:
        summary = evaluate_checkpoint(
            args.model, args.dataset, split=args.split, limit=args.limit, batch_size=args.batch_size, out=args.out,
            resume=args.resume, overwrite=args.overwrite, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_p=args.top_p, seed=args.seed, skip_bad=args.skip_bad,
            device=args.device, progress=not args.no_progress, data_dir=args.data_dir)
    except EvaluationRefused as exc:
        print(f"kava eval: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    except EvaluationInterrupted as exc:
        print(f"{exc}; continue with --resume", file=sys.stderr)
        return exits.INTERRUPTED
    except WriteFailed as exc:
        print(f"kava eval: error: {exc}; the predictions so far are kept: free space (or make it writable), "
              "then continue with --resume", file=sys.stderr)
        return exits.WRITE_FAILED
    print(summary_line(summary))
    print(f"wrote {args.out}")
    return exits.OK
