"""The data and scoring behind kava's offline lm-eval tasks (`kava.evaluation.harness.TASKS_DIR`).

The tasks read their data through `kava.data.datasets.load_dataset` (the folder in
``$KAVA_DATA_DIR``, else the hub id; never a substitute) and score an answer with the rule ``kava eval``
uses, so the two agree question by question. Kept apart from `kava.evaluation.harness` because
lm-eval imports a task's functions from its folder by file, without the model.
"""

from __future__ import annotations

from typing import Any

from kava.data.answers import answers_match, extract_answer, parse_gold
from kava.data.datasets import load_dataset
from kava.data.grading import grade
from kava.data.records import Record


def load(name: str, split: str | None = None, limit: int | None = None, **_metadata: Any) -> Any:
    """A registered kava dataset split as a ``datasets.DatasetDict`` with one ``test`` split of
    ``{"index", "question", "answer", "answer_kind", "options"}`` rows (lm-eval also passes its
    metadata, not used here)."""
    import datasets  # lm-eval's own dependency: this module is only imported through it

    data = load_dataset(name, split, limit=None if limit is None else int(limit))
    rows = [{"index": i, "question": r.question, "answer": r.answer, "answer_kind": r.answer_kind,
             "options": list(r.options)} for i, r in enumerate(data.records)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """exact_match by the dataset's answer kind, as ``kava eval`` scores it: the last number within
    0.01 (numeric), LaTeX equivalence (MATH), the option letter (AQuA)."""
    kind = doc.get("answer_kind", "numeric")
    if kind == "numeric":
        return {"exact_match": float(answers_match(extract_answer(results[0]), parse_gold(doc["answer"])))}
    record = Record(doc["question"], answer=doc["answer"], answer_kind=kind, options=tuple(doc.get("options") or ()))
    return {"exact_match": float(grade(record, results[0]).correct)}
