"""`evaluate_checkpoint`: score a saved kava model on a dataset into an output folder, resumably.

This is ``kava eval`` as a Python function, for the sweep and for scripts: the command is a thin
wrapper that maps its flags onto the keyword arguments and the exceptions below onto exit
statuses (`kava.runtime.exits`). The inference mode (latent, CoT or direct) comes from the checkpoint's
own config, so a model is always evaluated the way it was trained to answer.

Nothing is lost and nothing surprising happens to the output folder (`kava.evaluation.results`):
predictions are streamed to ``out`` as batches finish, SIGINT / SIGTERM stop after the batch in
flight (`EvaluationInterrupted`) and ``resume=True`` continues from what was written; a folder
that holds results is refused unless ``resume`` or ``overwrite`` is given. Every bad input is
refused (`EvaluationRefused`, one line) before the model loads. A write the disk refuses (full,
read-only) is `kava.runtime.disk.WriteFailed`, raised as it is: the predictions so far stay whole
and ``resume=True`` continues once there is space (``kava eval`` exits with status 74).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kava.config import ConfigError
from kava.data.datasets import DatasetError, LoadedDataset, load_dataset
from kava.evaluation.decoding import Sampling
from kava.evaluation.evaluate import EvaluationStopped, breakdown_lines, evaluate
from kava.evaluation.results import ResultWriter, check_start, load_done
from kava.model.card import write_card
from kava.model.kava_model import KavaModel
from kava.model.persistence import check_model_dir, find_model_dir
from kava.runtime.outputs import hold
from kava.runtime.stop import StopSignal, StoppedAfterSaving


class EvaluationRefused(ValueError):
    """A start refused before any slow work and before anything is written: bad options, a
    dataset or model that cannot be read, an output folder that holds other results or is busy.
    The message is one line naming the problem (what ``kava eval`` prints, exit status 2)."""


class EvaluationInterrupted(StoppedAfterSaving):
    """SIGINT / SIGTERM stopped the evaluation after a batch; the predictions so far are kept in
    the output folder and ``resume=True`` continues (``kava eval`` exits with status 75). The
    message says how far it got and where the predictions are; the caller says how to resume."""


def evaluate_checkpoint(
    model_dir: str | Path,
    dataset: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    out: str | Path = "outputs/eval",
    resume: bool = False,
    overwrite: bool = False,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    skip_bad: bool = False,
    device: str = "cpu",
    progress: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the model in ``model_dir`` (a run folder, a checkpoint, or a model / exported
    folder) on ``dataset`` (a registered name or a file) and write ``predictions.jsonl`` and
    ``summary.json`` into ``out``; returns the summary.

    The arguments are ``kava eval``'s flags (``--batch-size`` is ``batch_size``; ``progress`` is
    ``not --no-progress``). Greedy unless ``temperature``; ``top_p`` and ``seed`` need it.
    ``data_dir`` (``--data-dir``) is the folder a registered ``dataset`` is read from; else
    ``$KAVA_DATA_DIR``, else its hub id (`kava.data.datasets.named_data_dir`).
    Raises `EvaluationRefused` before the model loads when the inputs do not go together, and
    `EvaluationInterrupted` when stopped by a signal (the predictions so far are kept), and
    `kava.runtime.disk.WriteFailed` when the disk refuses a write. A notice of
    skipped dataset rows (``skip_bad``) goes to stderr.
    """
    out = Path(out)
    with contextlib.ExitStack() as owned:
        try:
            _check_counts(batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit)
            sampling = _sampling(temperature, top_p, seed)
            check_start(out, resume=resume, overwrite=overwrite)
            _check_device(device)
            check_model_dir(find_model_dir(model_dir))
            data = load_dataset(dataset, split, data_dir=data_dir, skip_bad=skip_bad, limit=limit)
            if not data.records:
                raise DatasetError(f"--dataset: no questions left in {data.source}")
            settings = _settings(model_dir, data, sampling, skip_bad=skip_bad, max_new_tokens=max_new_tokens,
                                 device=device)
            done = load_done(out, settings, data.records) if resume else {}
            owned.enter_context(hold(out))
            model = KavaModel.from_pretrained(model_dir, device=device)
        except (ValueError, OSError, DatasetError, ConfigError) as exc:  # OSError: a missing or unreadable file
            raise EvaluationRefused(" ".join(str(exc).split())) from exc

        if data.skip_notice():
            print(data.skip_notice(), file=sys.stderr)
        writer = ResultWriter(out, settings, done)
        try:
            with StopSignal("stopping after this batch (predictions so far are kept)") as stop:
                result = evaluate(model, data, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                  sampling=sampling, progress=progress, done=done,
                                  on_batch=writer.append, should_stop=lambda: stop.requested)
        except EvaluationStopped as e:
            raise EvaluationInterrupted(f"{e}; predictions so far in {out}") from e
        writer.finish(result)
        _add_to_card(find_model_dir(model_dir), {**result.summary, "limit": limit})
    return result.summary


def _add_to_card(folder: Path, summary: dict[str, Any]) -> None:
    """Put the result on the evaluated model's card (`kava.model.card`). A folder that cannot be
    written (read-only, a shared copy) keeps its card: the results are in ``out`` either way."""
    try:
        write_card(folder, result=summary)
    except OSError as e:
        print(f"kava eval: note: the model card in {folder} was not updated ({e.strerror or e})", file=sys.stderr)


def summary_line(summary: dict[str, Any]) -> str:
    """What ``kava eval`` prints for a finished evaluation: one line with accuracy, its interval, cost
    and speed; for MATH and AQuA indented lines after it with accuracy per subject and level, the
    predicted and gold option counts, and how the answers were read (`breakdown_lines`)."""
    s = summary
    lo, hi = s["accuracy_ci95"]
    return "\n".join([
        f"{s['dataset']} ({s['mode']}, {s['n']} questions): accuracy {s['accuracy']:.1%} "
        f"[95% CI {lo:.1%}-{hi:.1%}], mean forward passes {s['mean_forward_passes']:.1f}, "
        f"mean generated tokens {s['mean_generated_tokens']:.1f}, {s['questions_per_s']:.2f} questions/s",
        *breakdown_lines(s)])


def _check_counts(**counts: int | None) -> None:
    """Reject bad counts before the (slow) model load rather than after it."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


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


def _settings(model_dir: str | Path, data: LoadedDataset, sampling: Sampling | None, *, skip_bad: bool,
              max_new_tokens: int | None, device: str) -> dict[str, Any]:
    """What decides the predictions, recorded with them: a resumed evaluation must match it.

    The batch size is left out: a question's result does not depend on its batch (``decoding``).
    """
    return {
        "model": str(Path(model_dir).resolve()),
        "dataset": data.name,
        "split": data.split,
        "source": data.source,
        "questions": len(data),
        "skip_bad": skip_bad,
        "max_new_tokens": max_new_tokens,
        "sampling": None if sampling is None else asdict(sampling),
        "device": device,
    }


def _sampling(temperature: float | None, top_p: float | None, seed: int | None) -> Sampling | None:
    """Greedy unless a temperature is given; a top-p or seed alone is an error, not ignored."""
    if temperature is None:
        if top_p is not None or seed is not None:
            raise ValueError("--top-p and --seed apply to sampling only; add --temperature")
        return None
    return Sampling(temperature, 1.0 if top_p is None else top_p, 0 if seed is None else seed)
