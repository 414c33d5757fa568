"""Digit-sequence answers (iCoT's multiplication): the exact digits a model's output gives.

The gold answer is a digit sequence as the dataset writes it (``"5 5 6 0 8 2 0 1"``, the
product least significant digit first). The answer text is what follows the first answer
marker of the output (iCoT's ``####``, or ``answer is`` / ``answer:`` as in kava's answer
prompt ``The answer is:``), else the whole output (in CoT mode kava passes only the text after
its answer prompt). It is right only when it is nothing but digits and whitespace and its digits
equal the gold ones, in order and in number: whitespace is not significant (``55608201`` is
``5 5 6 0 8 2 0 1``), everything else is. The same product written most significant digit
first, with a digit missing, with an extra (even numerically neutral) zero, followed by any
other text (a period, a second marker and answer) or empty is wrong, as iCoT's own evaluation
(exact text after ``####``) counts it.
"""

from __future__ import annotations

import re

__all__ = ["MARKER", "read_digits", "normal_digits"]

MARKER = re.compile(r"####|\banswer\s+is\s*:?|\banswer\s*:", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9](?:\s*[0-9])*")


def normal_digits(text: str) -> str | None:
    """``text`` as single-spaced digits when it is nothing but digits and whitespace, else None."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        return None
    return " ".join(ch for ch in text if not ch.isspace())


def read_digits(text: str) -> tuple[str | None, str, str | None]:
    """(answer, rule, flag) read from `text`: the single-spaced digits (or, when the answer text
    holds anything else, that text with its whitespace collapsed and flag ``"unparseable"``), the
    rule (``after marker`` / ``whole text``; ``none`` when there is no answer text)."""
    m = MARKER.search(text)
    rule = "after marker" if m else "whole text"
    part = text[m.end():] if m else text
    if not part.strip():
        return None, "none", None
    digits = normal_digits(part)
    if digits is None:
        return " ".join(part.split()), rule, "unparseable"
    return digits, rule, None
