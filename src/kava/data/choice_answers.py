"""Multiple-choice answers (AQuA-RAT): which of the options A–E a model's output picks.

Rules, in order; the first that finds something decides, and its name is recorded:

1. ``answer letter``: the letter after the last "answer is" / "answer:" / "option" / "choice"
   (``"The answer is (C) 12"``, ``"Answer: C"``, ``"option C"``);
2. ``leading letter``: otherwise a letter standing alone at the start of the text (``" E"``,
   ``"B."``): what a model writes right after the answer prompt, which is all the text that is
   checked in CoT and direct modes;
3. ``letter``: otherwise the last letter written as an option label, ``(C)`` or ``C)``;
4. ``option value``: otherwise the last number of the output, mapped back to the one option
   whose value it equals (an option's value is its only number: ``"$1,200"`` has one,
   ``"5(√3 + 1)"`` has none usable). A number that equals two or more options' values picks
   none (``ambiguous value``): guessing between them would credit chance.

A letter wins over a value when both appear: the letter is the model's explicit choice, and
in ``"(C) 12"`` the 12 may be a miscopied value or one of several numbers in the working.
Lower-case letters and bare capitals (``"A train …"``) are not read as choices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kava.data.answers import answers_match, extract_answer, numbers

__all__ = ["LETTERS", "parse_options", "option_value", "extract_choice"]

LETTERS = "ABCDE"

_OPTION = re.compile(r"\s*([A-E])\s*\)\s*(.*)", re.DOTALL)
_STATED = re.compile(r"(?:answer(?:\s+is)?|option|choice)\s*:?\s*(?:is\s*:?\s*)?[(\[]?([A-E])(?![A-Za-z])",
                     re.IGNORECASE)
_LEADING = re.compile(r"\s*([A-E])(?:[.,:;!]|\s*$|\s*\n)")
_LABEL = re.compile(r"\(([A-E])\)|(?<![A-Za-z(])([A-E])\)")


def parse_options(options: object) -> tuple[str, ...]:
    """AQuA's ``["A)21", …, "E)25"]`` as the five option texts, A first; ValueError naming what is wrong."""
    if not isinstance(options, list) or len(options) != len(LETTERS):
        raise ValueError(f"field 'options' must be a list of {len(LETTERS)} 'A)…'..'E)…' strings, got {options!r}")
    texts = []
    for letter, option in zip(LETTERS, options):
        m = _OPTION.fullmatch(option) if isinstance(option, str) else None
        if m is None or m.group(1) != letter:
            raise ValueError(f"field 'options': expected option '{letter})…', got {option!r}")
        texts.append(m.group(2).strip())
    return tuple(texts)


def option_value(option: str) -> float | None:
    """The option's value when it holds exactly one number (``"Rs. 1,200"`` -> 1200.0), else None."""
    found = numbers(option)
    return found[0] if len(found) == 1 else None


def extract_choice(text: str, options: Sequence[str]) -> tuple[str | None, str]:
    """The letter `text` picks among `options` and the rule that found it (module docstring);
    ``(None, "none")`` or ``(None, "ambiguous value")`` when it picks none."""
    stated = [m for m in _STATED.finditer(text) if m.group(1).isupper()]
    if stated:
        return stated[-1].group(1), "answer letter"
    leading = _LEADING.match(text)
    if leading:
        return leading.group(1), "leading letter"
    labels = list(_LABEL.finditer(text))
    if labels:
        last = labels[-1]
        return last.group(1) or last.group(2), "letter"
    value = extract_answer(text)
    if value is not None:
        hits = [letter for letter, option in zip(LETTERS, options)
                if (v := option_value(option)) is not None and answers_match(value, v)]
        if len(hits) == 1:
            return hits[0], "option value"
        if len(hits) > 1:
            return None, "ambiguous value"
    return None, "none"
