"""``kava eval``: score a trained kava checkpoint on a dataset and write its predictions.

The inference mode (latent, CoT or direct) comes from the checkpoint's own config, so a model
is always evaluated the way it was trained to answer.

Nothing is lost and nothing surprising happens to the output folder (``results``): predictions
are streamed to ``--out`` as batches finish, SIGINT / SIGTERM stop after the batch in flight
(exit status 75) and ``--resume`` continues from what was written; a folder that holds results
is refused unless ``--resume`` or ``--overwrite`` is given. Every bad input is one line on
stderr (exit status 2) before the model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import asdict
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a trained model: a run folder (its final/ or newest checkpoint), "
                        "a checkpoint, or a model / exported folder")
    parser.add_argument("--dataset", required=True, help="registered dataset name (gsm8k, svamp, ...) or a file")
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
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from kava import exits
    from kava.config import ConfigError
    from kava.data.datasets import DatasetError, load_dataset
    from kava.evaluation.evaluate import EvaluationStopped, evaluate
    from kava.evaluation.results import ResultWriter, check_start, load_done
    from kava.model.kava_model import KavaModel
    from kava.model.persistence import check_model_dir, find_model_dir
    from kava.outputs import hold
    from kava.stop import StopSignal

    out = Path(args.out)
    with contextlib.ExitStack() as owned:
        try:
            _check_counts(args)
            sampling = _sampling(args)
            check_start(out, resume=args.resume, overwrite=args.overwrite)
            _check_device(args.device)
            check_model_dir(find_model_dir(args.model))
            data = load_dataset(args.dataset, args.split, skip_bad=args.skip_bad, limit=args.limit)
            if not data.records:
                raise DatasetError(f"--dataset: no questions left in {data.source}")
            settings = _settings(args, data, sampling)
            done = load_done(out, settings, data.records) if args.resume else {}
            owned.enter_context(hold(out))
            model = KavaModel.from_pretrained(args.model, device=args.device)
        except (ValueError, OSError, DatasetError, ConfigError) as exc:  # OSError: a missing or unreadable file
            print(f"kava eval: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return exits.BAD_INPUT

        if data.skip_notice():
            print(data.skip_notice(), file=sys.stderr)
        writer = ResultWriter(out, settings, done)
        try:
            with StopSignal("stopping after this batch (predictions so far are kept)") as stop:
                result = evaluate(model, data, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  sampling=sampling, progress=not args.no_progress, done=done,
                                  on_batch=writer.append, should_stop=lambda: stop.requested)
        except EvaluationStopped as e:
            writer.close()
            print(f"{e}; predictions so far in {out}; continue with --resume", file=sys.stderr)
            return exits.INTERRUPTED
        writer.finish(result)
    s = result.summary
    lo, hi = s["accuracy_ci95"]
    print(f"{data.name} ({s['mode']}, {s['n']} questions): accuracy {s['accuracy']:.1%} "
          f"[95% CI {lo:.1%}-{hi:.1%}], mean forward passes {s['mean_forward_passes']:.1f}, "
          f"mean generated tokens {s['mean_generated_tokens']:.1f}, {s['questions_per_s']:.2f} questions/s")
    print(f"wrote {out}")
    return exits.OK


def _check_counts(args: argparse.Namespace) -> None:
    """Reject bad counts before the (slow) model load rather than after it."""
    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                        ("--limit", args.limit)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")


def _check_device(name: str) -> None:
    """A device this torch build and machine have; found out now, not after loading the model onto it."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch build has no CUDA support or sees no GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")


def _settings(args: argparse.Namespace, data, sampling) -> dict:
    """What decides the predictions, recorded with them: a resumed evaluation must match it.

    The batch size is left out: a question's result does not depend on its batch (``decoding``).
    """
    return {
        "model": str(Path(args.model).resolve()),
        "dataset": data.name,
        "split": data.split,
        "source": data.source,
        "questions": len(data),
        "skip_bad": args.skip_bad,
        "max_new_tokens": args.max_new_tokens,
        "sampling": None if sampling is None else asdict(sampling),
        "device": args.device,
    }


def _sampling(args: argparse.Namespace):
    """Greedy unless --temperature is given; --top-p / --seed alone are an error, not ignored."""
    from kava.evaluation.decoding import Sampling

    if args.temperature is None:
        if args.top_p is not None or args.seed is not None:
            raise ValueError("--top-p and --seed apply to sampling only; add --temperature")
        return None
    top_p = 1.0 if args.top_p is None else args.top_p
    return Sampling(args.temperature, top_p, 0 if args.seed is None else args.seed)
