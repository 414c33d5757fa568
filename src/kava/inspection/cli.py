"""``kava inspect``: what a latent model's latents say, what its teacher cache keeps, how close they are.

Prints a text report and writes into ``--out``: ``inspection.json`` (everything), ``report.txt``
(the printed report) and, with a reference trace (``--steps``), ``kept_tokens.html`` and
``kv_similarity.png``. With ``--dataset`` instead of ``--question`` it reads the latents of many
questions against their written traces (`kava.inspection.readout`): ``readout.json`` and
``latent_readout.png``. Files of an earlier inspection in ``--out`` are replaced. Bad input (a
missing or damaged model, a model without latents, an ``--out`` that is a file) is one line on
stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

JSON_FILE, REPORT_FILE, HTML_FILE, PNG_FILE = "inspection.json", "report.txt", "kept_tokens.html", "kv_similarity.png"
READOUT_JSON, READOUT_PNG = "readout.json", "latent_readout.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a trained latent model: a run folder, a checkpoint, or a "
                        "model / exported folder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--question", help="one question: its latents pass by pass, and with --steps the teacher's cache")
    which.add_argument("--dataset", help="a dataset name or file: each latent slot's reading against the written "
                       "traces of its questions, position by position (with a chance baseline)")
    parser.add_argument("--split", default=None, help="--dataset's split, e.g. valid (default: the dataset's "
                        "evaluation split; a file is one split)")
    parser.add_argument("--limit", type=int, default=500, help="--dataset: its first N questions (default 500)")
    parser.add_argument("--data-dir", default=None, help="--dataset: folder a registered dataset is read from "
                        "(default: $KAVA_DATA_DIR, else its hub id)")
    parser.add_argument("--steps", nargs="+", default=None, metavar="STEP",
                        help='a reference trace, one argument per step ("<<14/2=7>>" "<<7*3=21>>"): enables the '
                        "kept-token view and the K/V similarity")
    parser.add_argument("--answer", default=None, help="the answer the teacher sequence ends with (default: the "
                        "last number of the last step)")
    parser.add_argument("--top-k", type=int, default=5, help="tokens shown per latent slot and pass")
    parser.add_argument("--out", required=True, help="folder for the JSON, report, HTML and PNG")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from kava.runtime import exits

    try:
        out = _check_out(Path(args.out))
        model = _load(args)
        result = _readout(model, args) if args.dataset is not None else _inspect(model, args)
    except (ValueError, OSError) as exc:
        print(f"kava inspect: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    if args.dataset is not None:
        write_readout(result, out)
    else:
        write_outputs(result, out)
    return exits.OK


def write_outputs(result, out: Path) -> None:
    """Print the report and write the files (stale HTML / PNG of an earlier run with a trace go)."""
    from kava.inspection.heatmap import save_heatmap
    from kava.inspection.page import kept_page
    from kava.inspection.terminal import report

    text = report(result)
    print(text, end="")
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n")
    (out / REPORT_FILE).write_text(text)
    written = [JSON_FILE, REPORT_FILE]
    for name in (HTML_FILE, PNG_FILE):
        (out / name).unlink(missing_ok=True)
    if result.trace is not None:
        (out / HTML_FILE).write_text(kept_page(result))
        save_heatmap(result.similarity, out / PNG_FILE)
        written += [HTML_FILE, PNG_FILE]
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)


def _check_out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; give a folder")
    return out


def write_readout(result, out: Path) -> None:
    """Print each slot's best-read position and write the JSON and the figure."""
    from kava.inspection.readout import save_readout_figure

    print(f"latent read-out over {result.questions} questions (top-1 token after the {result.pass_label} pass)")
    print("slot  most common reading  best position above chance  match  chance  in own sequence  in next question's")
    for m, (p, rate, chance) in enumerate(result.best()):
        token, share = result.common[m]
        where = f"{p:>4} {result.labels[p]:>8}  {rate:5.3f}  {chance:6.3f}" if rate > chance else f"{'none':>13}  {'—':>5}  {'—':>6}"
        print(f"z{m + 1:<4} {token:>8} ({100 * share:5.1f} %)  {where:>27}  "
              f"{result.in_own[m].item():15.3f}  {result.in_other[m].item():18.3f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / READOUT_JSON).write_text(json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n")
    save_readout_figure(result, out / READOUT_PNG)
    print(f"wrote {READOUT_JSON}, {READOUT_PNG} to {out}", file=sys.stderr)


def _load(args: argparse.Namespace):
    from kava.config import ConfigError
    from kava.inspection.api import check_latent_model
    from kava.model.kava_model import KavaModel
    from kava.model.persistence import check_model_dir, find_model_dir

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.limit < 2:
        raise ValueError(f"--limit must be >= 2 (a read-out compares each question with the next), got {args.limit}")
    try:
        check_model_dir(find_model_dir(args.model))
        model = KavaModel.from_pretrained(args.model, device=args.device)
    except ConfigError as e:
        raise ValueError(f"--model {args.model}: {e}") from None
    check_latent_model(model)
    return model


def _inspect(model, args: argparse.Namespace):
    from kava.inspection.api import inspect_question

    return inspect_question(model, args.question, args.steps, args.answer, args.top_k)


def _readout(model, args: argparse.Namespace):
    from kava.data.datasets import load_dataset
    from kava.inspection.readout import latent_readout

    data = load_dataset(args.dataset, args.split, limit=args.limit, data_dir=args.data_dir)
    return latent_readout(model, data.records)
