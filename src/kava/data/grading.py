"""Answer checking by kind: the record's ``answer_kind`` picks how a prediction is read and scored.

- ``numeric`` (GSM8k and the other word-problem sets): CODI's last number within 0.01
  (`kava.data.answers`); the prediction row keeps its historical form (a float ``answer``).
- ``math`` (MATH-500): LaTeX equivalence through math-verify (`kava.data.math_answers`).
- ``choice`` (AQuA-RAT): the option letter (`kava.data.choice_answers`).
- ``concept`` (ProsQA): the one of the question's two concepts the output names
  (`kava.data.concept_answers`).
- ``digits`` (iCoT multiplication): the exact digit sequence after the answer marker
  (`kava.data.digit_answers`).

For ``math`` and ``choice`` a `Graded` holds the extracted answer text, whether it is right,
the extraction rule that matched, and a flag when the answer was found but could not be read
(``unparseable``): such an answer is counted wrong and shown, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from kava.data.answers import parse_gold
from kava.data.choice_answers import LETTERS, extract_choice
from kava.data.concept_answers import extract_concept
from kava.data.digit_answers import normal_digits, read_digits
from kava.data.math_answers import extract_math_answer, math_equal, parse_math
from kava.data.records import Record

__all__ = ["ANSWER_KINDS", "Graded", "check_gold", "grade"]

ANSWER_KINDS = ("numeric", "math", "choice", "concept", "digits")


@dataclass(frozen=True)
class Graded:
    answer: str | None  # the answer text read from the output (a letter for choice); None: none found
    correct: bool
    rule: str  # which extraction rule found it ("boxed", "answer letter", ..., "none")
    flag: str | None = None  # "unparseable": found but not readable as math


def check_gold(record: Record) -> None:
    """Raise ValueError unless the record's gold answer can be scored by its kind's checker,
    since an unreadable gold answer would count every prediction for it as wrong."""
    kind = record.answer_kind
    if kind == "numeric":
        parse_gold(record.answer)
    elif kind == "math":
        if not parse_math(record.answer):
            raise ValueError(f"gold answer {record.answer!r} cannot be parsed as math")
    elif kind == "choice":
        if record.answer not in LETTERS or len(record.options) != len(LETTERS):
            raise ValueError(f"gold answer {record.answer!r} must be one of {', '.join(LETTERS)} "
                             f"with {len(LETTERS)} options (got {len(record.options)})")
    elif kind == "digits":
        if normal_digits(record.answer) != record.answer:
            raise ValueError(f"gold answer {record.answer!r} must be digits separated by single spaces")
    elif kind == "concept":
        if len(record.options) != 2 or extract_concept(record.answer, record.options)[0] is None:
            raise ValueError(f"gold answer {record.answer!r} must name exactly one of two concepts "
                             f"(options {list(record.options)})")
    else:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")


def grade(record: Record, text: str) -> Graded:
    """Read the answer out of `text` (the part after the answer prompt in CoT) and score it
    against a ``math`` or ``choice`` record (numeric records are scored by `kava.data.answers`)."""
    if record.answer_kind == "math":
        answer, rule = extract_math_answer(text)
        if answer is None:
            return Graded(None, False, rule)
        parsed = parse_math(answer)
        if not parsed:
            return Graded(answer, False, rule, "unparseable")
        return Graded(answer, math_equal(parse_math(record.answer), parsed), rule)
    if record.answer_kind == "choice":
        letter, rule = extract_choice(text, record.options)
        return Graded(letter, letter == record.answer, rule)
    if record.answer_kind == "digits":
        digits, rule, flag = read_digits(text)
        return Graded(digits, flag is None and digits == record.answer, rule, flag)
    if record.answer_kind == "concept":
        concept, rule = extract_concept(text, record.options)
        gold, _ = extract_concept(record.answer, record.options)
        return Graded(concept, concept is not None and concept == gold, rule)
    raise ValueError(f"grade() scores math and choice records, not {record.answer_kind!r}")
