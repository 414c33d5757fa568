"""The unit of data every part of kava shares: one reasoning problem.

A record is what GSM8k-AUG calls a row: a question, the chain-of-thought steps (each a string,
e.g. ``"<<16-3-4=9>>"``) and the final answer as text. Loaders turn every dataset format into
records; the sequence builder turns records into teacher and student token sequences.

How the answer is checked depends on the dataset, so the record carries it: ``answer_kind``
names a checker of `kava.data.grading.ANSWER_KINDS` (``numeric``, the default and GSM8k's;
``math`` for MATH's LaTeX answers; ``choice`` for AQuA's letters), ``options`` holds a
multiple-choice question's option texts (A first), and ``meta`` the labels reports group by
(MATH's ``subject`` and ``level``). Their defaults leave a numeric record exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class RecordError(ValueError):
    """A record that cannot be used; the message names the field and, when known, the source."""


@dataclass(frozen=True)
class Record:
    question: str
    steps: tuple[str, ...] = field(default_factory=tuple)
    answer: str = ""
    answer_kind: str = "numeric"
    options: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Accept lists from JSON loaders but store an immutable tuple.
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "options", tuple(self.options))

    def validate(self, *, need_steps: bool = True, where: str = "record") -> "Record":
        """Raise a `RecordError` naming the bad field; returns self so it chains."""
        if not isinstance(self.question, str) or not self.question.strip():
            raise RecordError(f"{where}: field 'question' is empty")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise RecordError(f"{where}: field 'answer' is missing or empty")
        if need_steps:
            if len(self.steps) == 0:
                raise RecordError(f"{where}: field 'steps' is empty (this method needs a chain of thought)")
            for i, s in enumerate(self.steps):
                if not isinstance(s, str) or not s.strip():
                    raise RecordError(f"{where}: field 'steps'[{i}] is empty")
        return self
