"""An evaluation's output folder: nothing lost, nothing overwritten by surprise.

- ``eval_run.json``: the settings, written before the first batch; ``--resume`` must match them.
- ``predictions.jsonl``: one line per question, appended and flushed as each batch finishes, so
  an interrupted evaluation loses at most the batch in flight; rewritten in question order at
  the end. A write the disk refuses (`kava.runtime.disk.WriteFailed`) leaves the file ending
  with the last whole batch, so ``--resume`` continues from there once there is space.
- ``summary.json``: written last; its presence marks the evaluation complete.

A folder that holds an evaluation is refused unless the user says ``--resume`` (continue it)
or ``--overwrite`` (replace it), and that is decided before the model loads. With
``--overwrite`` the old files are removed only when the new evaluation starts writing, so a
start that fails while loading the model leaves them as they were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kava.data.records import Record
from kava.evaluation.evaluate import PREDICTIONS_FILE, SUMMARY_FILE, EvalResult, write_results
from kava.runtime.outputs import append_bytes, check_free, differences, write_atomic

SETTINGS_FILE = "eval_run.json"
RESULT_FILES = (SETTINGS_FILE, PREDICTIONS_FILE, SUMMARY_FILE)


class ResultsError(ValueError):
    """A refused start: the folder and the request do not go together; the message says what to do."""


def check_start(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse, without writing anything, a start that would mix or silently replace results."""
    if resume and overwrite:
        raise ResultsError("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out: {out} is a file, not a folder")
    check_free(out)
    if not (resume or overwrite) and any((out / name).exists() for name in RESULT_FILES):
        what = "a complete evaluation" if (out / SUMMARY_FILE).exists() else "an interrupted evaluation"
        raise ResultsError(f"--out: {out} already holds {what}; --resume to continue it, "
                           "--overwrite to replace it, or choose another --out")


def load_done(out: Path, settings: dict[str, Any], records: Sequence[Record]) -> dict[int, dict[str, Any]]:
    """The predictions an earlier run with the same settings wrote into ``out`` (none: a fresh start).

    A last line cut short by the interruption is dropped (its batch is decoded again); a line
    whose question is not the dataset's question at its index means the data changed: refused.
    """
    if not (out / SETTINGS_FILE).is_file():
        return {}
    saved = json.loads((out / SETTINGS_FILE).read_text())
    diffs = differences(saved, settings)
    if diffs:
        raise ResultsError(f"--resume: {out} was evaluated with other settings ({'; '.join(diffs)}); "
                           "resume with those, or --overwrite to start over")
    path = out / PREDICTIONS_FILE
    lines = path.read_text().split("\n") if path.is_file() else []
    done = {}
    for number, line in enumerate(lines, start=1):
        try:
            p = json.loads(line)
        except json.JSONDecodeError:
            if number >= len(lines) - 1:  # the torn tail of an interrupted write
                break
            raise ResultsError(f"--resume: {path}:{number} is not a prediction; --overwrite to start over") from None
        i = p.get("index") if isinstance(p, dict) else None
        if not isinstance(i, int) or not 0 <= i < len(records) or records[i].question != p.get("question"):
            raise ResultsError(f"--resume: {path}:{number} does not match the dataset's question {i}; "
                               "--overwrite to start over")
        done[i] = p
    return done


class ResultWriter:
    """Streams predictions into ``out`` as batches finish, then writes them in order with the summary."""

    def __init__(self, out: Path, settings: dict[str, Any], done: dict[int, dict[str, Any]]) -> None:
        self.out = out
        (out / SUMMARY_FILE).unlink(missing_ok=True)  # incomplete from here on
        # Each replaced whole: with --overwrite the old results go now, on resume the torn tail.
        write_atomic(out / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
        write_atomic(out / PREDICTIONS_FILE, "".join(json.dumps(done[i]) + "\n" for i in sorted(done)))

    def append(self, predictions: list[dict[str, Any]]) -> None:
        """One batch, on disk before the next one starts (flushed and synced). A batch the disk
        refuses is cut off again (`append_bytes`): the file ends with the last whole batch."""
        append_bytes(self.out / PREDICTIONS_FILE, "".join(json.dumps(p) + "\n" for p in predictions).encode(), sync=True)

    def finish(self, result: EvalResult) -> Path:
        return write_results(result, self.out)

