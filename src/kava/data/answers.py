"""Numeric answers: pull the final number out of generated text and compare it with the gold one.

Evaluation follows CODI's protocol, which KaVa reports against: strip thousands separators,
take the LAST number in the model's output, and compare it numerically with the gold answer.
Taking the last number matters because a chain of thought mentions many intermediate values and
the answer comes at the end; removing separators matters because GSM8K gold answers such as
``#### 2,125`` and model outputs such as ``$1,000.`` must compare equal to plain numbers.

Deliberately not handled (no dataset we use needs them, and guessing would mis-read text):
scientific notation (``1e5`` reads as 1 then 5), European decimal commas (``1.234,5``),
fractions (``3/4`` reads as 3 then 4) and number words (``eighteen``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["numbers", "extract_answer", "answers_match", "parse_gold", "format_number", "canonical_gold"]

# One number as it appears in prose. Pieces, in order:
# - an optional minus sign, ASCII "-" or Unicode "−" (U+2212, which typeset text and some models
#   write), only when it cannot be a subtraction: not right after a word character, ")" or "."
#   (so "10-4" yields 4, while "is -4" and "(−4" yield -4);
# - an optional currency symbol between the sign and the digits ("-$5");
# - digits with comma thousands separators in groups of three ("1,234,567"), or plain digits,
#   or a bare fraction (".5"), never preceded by a digit so "1.2.3" does not yield ".3";
# - an optional fractional part, which must have digits: in "18." the dot ends the sentence.
_NUMBER = re.compile(
    r"""
    (?P<sign>(?<![\w).])[-\u2212])?
    [$€£]?
    (?P<digits>
        (?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?   # 1,234 or 1,234.56
      | (?<![\d.])\d+(?:\.\d+)?                        # 1234 or 1234.56
      | (?<![\d.])\.\d+                                # .5
    )
    """,
    re.VERBOSE,
)

MINUS = "\u2212"  # the Unicode minus sign, read as "-"

# A gold answer is one number and nothing else, apart from a currency symbol or percent sign.
_GOLD = re.compile(r"[+\-\u2212]?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?%?")


def extract_answer(text: str) -> float | None:
    """Return the last number in `text` as a float, or None when the text has no number.

    ``"She makes $1,234.00 dollars."`` gives 1234.0, ``"50%"`` gives 50.0 (the percent sign is
    dropped, as the gold answers of GSM8K-style sets state percentages as plain numbers),
    ``"x = -3. So the answer is 18."`` gives 18.0.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects str, got {type(text).__name__}")
    found = numbers(text)
    return found[-1] if found else None


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order, read as `extract_answer` reads the last one."""
    values = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("digits").replace(",", ""))
        values.append(-value if m.group("sign") else value)
    return values


def answers_match(pred: float | None, gold: float, rel_tol: float = 1e-9, abs_tol: float = 0.01) -> bool:
    """True when the predicted number equals the gold one within `math.isclose` tolerances.

    A tolerance is needed because gold targets are floats (GSM-Hard stores 3244047.0999999996
    for 3244047.1) and models round (14053029.67 for 14053029.666666666). The default accepts a
    difference below 0.01 (a number rounded to cents) at any magnitude and nothing more, so an
    off-by-one integer is always wrong, even at GSM-Hard's 322,886,700. A missing prediction
    (None) never matches.
    """
    if pred is None:
        return False
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    return math.isclose(pred, gold, rel_tol=rel_tol, abs_tol=abs_tol)


def parse_gold(text: str | int | float) -> float:
    """Parse a dataset's gold answer, which must be exactly one number, into a float.

    Strings may carry thousands separators, a sign, a currency symbol or a percent sign
    (``"2,125"``, ``"-$5"``, ``"50%"``); numbers must be finite. Anything else raises ValueError,
    because a gold answer we cannot read would silently count every prediction as wrong.
    """
    if isinstance(text, bool):
        raise ValueError(f"gold answer must be a number, got boolean {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"gold answer must be a finite number, got {text!r}")
        return value
    if not isinstance(text, str):
        raise ValueError(f"gold answer must be text or a number, got {type(text).__name__}")
    stripped = text.strip()
    if not any(c.isdigit() for c in stripped) or not _GOLD.fullmatch(stripped):
        raise ValueError(f"gold answer {text!r} is not a number")
    cleaned = stripped.replace(",", "").replace(MINUS, "-").translate(str.maketrans("", "", "$€£%"))
    return float(cleaned)


def format_number(value: float) -> str:
    """Write a number the way gold answers are stored: ``43.0`` -> ``"43"``, ``0.5`` -> ``"0.5"``.

    Integers lose the ``.0`` so that the text a model is trained to emit matches GSM8K's
    ``#### 43``; other values use the shortest decimal that round-trips (no exponent), so
    ``float(format_number(x)) == x``.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot format non-finite number {value!r}")
    if value == 0:
        return "0"  # also turns -0.0 into "0"
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def canonical_gold(text: str | int | float) -> str:
    """The stored form of a gold answer: parsed (raising ValueError if not a number) and re-written."""
    return format_number(parse_gold(text))
