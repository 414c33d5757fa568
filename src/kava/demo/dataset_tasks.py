"""The demo on a registered reasoning task instead of its synthetic word problems: ``kava demo --task``.

``mult4`` / ``mult5`` (iCoT's multiplication, `kava.data.multiplication`) and ``prosqa`` (Coconut's
ProsQA, `kava.data.prosqa`) come from the dataset registry (`kava.data.datasets`) and the data
folder (``$KAVA_DATA_DIR`` or ``--data-dir``'s folder): what the demo trains and scores is

- training: the registry's generated ``train`` split (seeded, without any valid/test problem),
  read in a fresh seeded order each epoch, reproducible from (seed, position) (`DatasetTask.stream`);
- learning curves: the first questions of the ``valid`` split;
- test: the first questions of the ``test`` split. A task without a test split here (``mult5``:
  iCoT's test set is held back) is refused (`check_task`); the valid split never stands in for it;
- the tokenizer: the demo's word-level one (`kava.demo.tokenizer.build_tokenizer`), with the words
  and punctuation of the task's valid and test records (and, for ProsQA, every name and concept word
  the generator can draw); digits are single tokens, as in the synthetic task;
- the trace length iCoT's demo schedule spreads over (`DatasetTask.trace_tokens`): the longest
  valid trace in that tokenizer's tokens, instead of the synthetic task's 30;
- grading: by each record's ``answer_kind`` (``digits`` for multiplication, ``concept`` for ProsQA).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from functools import cached_property, lru_cache

from kava.data.records import Record

SYNTHETIC = "synthetic"  # the demo's own word problems (`kava.demo.task`): DemoSettings.dataset None
DATASET_TASKS = ("mult4", "mult5", "prosqa")
TASK_CHOICES = (SYNTHETIC, *DATASET_TASKS)


def dataset_of(task: str) -> str | None:
    """The `DemoSettings.dataset` of a ``--task`` name (None: the synthetic task); ValueError if unknown."""
    if task not in TASK_CHOICES:
        raise ValueError(f"unknown demo task {task!r}; choose one of {', '.join(TASK_CHOICES)}")
    return None if task == SYNTHETIC else task


def check_task(dataset: str | None) -> None:
    """ValueError (one line) unless the demo can run on ``dataset``: a known task whose valid and
    test files are in the data folder. Cheap (no file is read); called before any run starts."""
    if dataset is None:
        return
    from kava.data.datasets import ENV_DATA_DIR, REGISTRY, named_data_dir

    if dataset not in DATASET_TASKS:
        raise ValueError(f"unknown demo task {dataset!r}; choose one of {', '.join(TASK_CHOICES)}")
    folder = named_data_dir()
    if folder is None:
        raise ValueError(f"the demo task {dataset!r} reads its valid and test splits from the data folder: "
                         f"set {ENV_DATA_DIR} to it")
    splits = REGISTRY[dataset].splits
    for split in ("valid", "test"):
        path = folder / splits[split].local
        if path.is_file():
            continue
        if split == "test" and splits[split].held_back:
            raise ValueError(f"the demo task {dataset!r} has no test split ({splits[split].local} is held back and not "
                             f"in {folder}): the demo scores every model on a test set and never substitutes the valid "
                             f"split; put the file there, or choose another task")
        raise ValueError(f"the demo task {dataset!r} needs {path} (its {split} split); set {ENV_DATA_DIR} to the "
                         "folder that holds it")


class DatasetTask:
    """One registered task as the demo reads it (module docstring); built once per process."""

    def __init__(self, name: str):
        check_task(name)
        self.name = name

    def _split(self, split: str, limit: int | None = None) -> list[Record]:
        from kava.data.datasets import load_dataset

        return load_dataset(self.name, split, limit=limit).records

    @cached_property
    def valid(self) -> list[Record]:
        return self._split("valid")

    @cached_property
    def test(self) -> list[Record]:
        return self._split("test")

    @cached_property
    def train(self) -> list[Record]:
        """The registry's generated train split (its default size; loaded on first use)."""
        return self._split("train")

    def valid_set(self, n: int) -> list[Record]:
        return _prefix(self.valid, n, self.name, "valid")

    def test_set(self, n: int) -> list[Record]:
        return _prefix(self.test, n, self.name, "test")

    def words(self) -> set[str]:
        """Every word of the task: those of its valid and test records, and for ProsQA every name
        and concept its generator draws (the training problems use no other)."""
        words = {w for r in (*self.valid, *self.test) for w in re.findall(r"[A-Za-z]+", _text(r))}
        if self.name == "prosqa":
            from kava.data.prosqa import CONCEPTS, PEOPLE

            words |= {*PEOPLE, *CONCEPTS}
        return words

    def punctuation(self) -> tuple[str, ...]:
        """Every other non-space character of the valid and test records (``(`` ``)`` in multiplication)."""
        return tuple(sorted({c for r in (*self.valid, *self.test) for c in _text(r)
                             if not c.isalnum() and not c.isspace()}))

    def new_tokenizer(self):
        """A fresh tokenizer of the task (each model gets its own: kava adds its special tokens to it)."""
        from kava.demo.tokenizer import build_tokenizer

        return build_tokenizer(words=self.words(), punctuation=self.punctuation())

    @cached_property
    def tokenizer(self):
        """The task's tokenizer, for measuring (never handed to a model)."""
        return self.new_tokenizer()

    @cached_property
    def trace_tokens(self) -> int:
        """The longest trace of the valid split in this task's tokens (as the sequence builder writes it)."""
        return max(len(self.tokenizer.encode(" " + " ".join(s.strip() for s in r.steps), add_special_tokens=False))
                   for r in self.valid)

    def stream(self) -> Callable[[int, int], Iterator[Record]]:
        """The engine's record stream: the train split in a seeded order per epoch (a new order each
        pass), reproducible from (seed, position)."""
        records = self.train

        def stream(seed: int, start: int) -> Iterator[Record]:
            epoch, offset = divmod(start, len(records))
            while True:
                order = list(range(len(records)))
                random.Random(f"kava-demo-{self.name}-{seed}-{epoch}").shuffle(order)
                for i in order[offset:]:
                    yield records[i]
                epoch, offset = epoch + 1, 0

        return stream


def dataset_task(name: str) -> DatasetTask:
    """The task ``name`` (cached per data folder: its splits, tokenizer and trace length are read once)."""
    from kava.data.datasets import named_data_dir

    return _cached(name, named_data_dir())


@lru_cache(maxsize=None)
def _cached(name: str, folder) -> DatasetTask:
    return DatasetTask(name)


def _text(r: Record) -> str:
    return " ".join((r.question, *r.steps, r.answer))


def _prefix(records: list[Record], n: int, name: str, split: str) -> list[Record]:
    if not 0 <= n <= len(records):
        raise ValueError(f"{name}'s {split} split holds {len(records)} problems; asked for {n}")
    return records[:n]
