"""``<run>/best/``: the model of the run's best validation evaluation, kept while it trains.

Why: the official protocols report the checkpoint with the best validation accuracy, not the
last one: Coconut's ``run.py`` with ``save_only_improve`` writes a checkpoint only when an epoch's
validation accuracy is strictly above the best so far (``cor / total > best_acc``), and the
Coconut and iCoT papers report the checkpoint chosen on validation; transformers' Trainer offers the
same (``load_best_model_at_end``). kava keeps ``final/`` as the last step and, with
``eval.keep_best``, writes ``best/`` whenever an evaluation beats every earlier one (ties keep
the earlier model, as Coconut's strict ``>`` does).

``best/selection.json`` records which evaluation it is; a resumed run reads it back, so the best
so far survives an interruption. It can be ahead of the checkpoint a run resumes from (the
interrupted run evaluated, wrote best/, and stopped before its next checkpoint): the resumed run
redoes those steps exactly (`kava.training.engine`'s exact resume) and so meets the same score at
the same step again, which as a tie keeps the folder that is there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kava.runtime.layout import BEST
from kava.runtime.outputs import write_atomic

SELECTION_FILE = "selection.json"
METRIC = "accuracy"  # the eval value that ranks the models (higher is better)


@dataclass(frozen=True)
class Selection:
    """Which evaluation ``best/`` holds."""

    step: int  # optimizer steps done when it was evaluated
    value: float  # its validation accuracy
    metric: str = METRIC
    eval_every: int | None = None  # how often the run validated
    data: str | None = None  # what the validation read

    def beaten_by(self, value: float) -> bool:
        """Whether a new evaluation's ``value`` replaces this one (strictly higher; ties keep the earlier)."""
        return value > self.value

    def describe(self, total_steps: int | None = None) -> str:
        """One line for the model card."""
        of = f" of {total_steps:,}" if total_steps else ""
        every = f", validated every {self.eval_every:,} steps" if self.eval_every else ""
        on = f" on {self.data}" if self.data else ""
        return f"the best validation {self.metric} ({100 * self.value:.1f} %{on}) at step {self.step:,}{of}{every}"

    def save(self, folder: Path) -> None:
        write_atomic(folder / SELECTION_FILE, json.dumps(asdict(self), indent=2) + "\n")


def read_selection(run_dir: str | Path) -> Selection | None:
    """The selection ``<run_dir>/best/`` holds; None when the run kept none yet. A damaged file
    is an error naming it (a resume must not silently forget the best so far)."""
    path = Path(run_dir) / BEST / SELECTION_FILE
    if not path.is_file():
        return None
    try:
        return Selection(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a best-model selection record ({' '.join(str(e).split())}); "
                         f"move {path.parent} aside to start the selection afresh") from None
