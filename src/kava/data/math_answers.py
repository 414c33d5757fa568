"""MATH answers: read a LaTeX answer out of generated text and decide whether it equals the gold one.

MATH's gold answers are LaTeX (``\\frac{14}{3}``, ``3\\sqrt{13}``, ``\\left( 3, \\frac{\\pi}{2}
\\right)``, ``\\text{Evelyn}``), so "the last number" cannot score them. Equivalence is decided by
math-verify (Hugging Face's checker, the one lm-eval and open-r1 score MATH with): it parses
both sides into sympy and compares them as numbers, sets, intervals, tuples, matrices or
equations, with the normalisations the field agreed on (``\\dfrac``, ``^\\circ``, ``\\%``, units
in ``\\text{…}``, thousands separators, mixed numbers). Writing our own sympy + latex2sympy
pipeline would re-implement exactly that and score differently from published numbers.

Which text is the answer, in this order (the rule that matched is recorded with each prediction):

1. ``boxed``: the content of the LAST ``\\boxed{…}`` (or ``\\fbox{…}``), braces matched, since
   MATH solutions and instruct models mark the final answer that way;
2. ``answer is``: otherwise the text after the last "answer is" up to the end of its line;
3. ``last expression``: otherwise the last ``$…$`` / ``\\(…\\)`` / ``\\[…\\]`` math segment
   (one that is only spaced words is taken for prose between wrongly paired ``$``), or else
   the last number.

Timeouts: math-verify guards sympy with ``signal.alarm``, which only works in the main thread
(elsewhere it raises and the comparison reads as false). In the main thread we keep its
guard; in any other thread we turn it off (math-verify's documented switch) rather than score
every answer wrong. An answer it cannot parse never raises: it is counted wrong and flagged.
"""

from __future__ import annotations

import re
import threading
from typing import Any

__all__ = ["TIMEOUT_S", "extract_math_answer", "parse_math", "math_equal"]

TIMEOUT_S = 5  # per parse or comparison, as math-verify's default

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
_MATH_SEGMENT = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
# Words between two math segments, paired up wrongly when a "$" is missing ("$p$ and $q$ as $1$"
# with one "$" too few reads " as " as math): spaced text with no digit, command or operator.
_PROSE = re.compile(r"\s+[A-Za-z ,.;']*[A-Za-z][A-Za-z ,.;']*\s+")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _braced(text: str, start: int) -> str | None:
    """The content of the ``{…}`` group opening at ``text[start]``, or None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _last_boxed(text: str) -> str | None:
    for m in reversed(list(_BOXED.finditer(text))):
        end = m.end()
        if end < len(text) and text[end] == "{":
            content = _braced(text, end)
            if content is not None:
                return content
        elif end < len(text):  # "\boxed 5": the token after it
            token = re.match(r"[^\s$.,]+", text[end:])
            if token:
                return token.group(0)
    return None


def _clean(answer: str) -> str:
    """Strip the sentence and math-mode wrapping around an answer: ``" $\\frac12$."`` -> ``\\frac12``."""
    answer = answer.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right):
            answer = answer[len(left) : -len(right)].strip()
    return answer.rstrip(".").strip()


def extract_math_answer(text: str) -> tuple[str | None, str]:
    """The answer text in a model's output and the rule that found it (see the module docstring).

    Returns ``(None, "none")`` when the text has no boxed answer, no "answer is", no math and no number.
    """
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    stated = list(_ANSWER_IS.finditer(text))
    if stated:
        line = text[stated[-1].end() :].split("\n", 1)[0]
        if _clean(line):
            return _clean(line), "answer is"
    for segment in reversed(list(_MATH_SEGMENT.finditer(text))):
        inner = next(g for g in segment.groups() if g is not None)
        if inner.strip() and not _PROSE.fullmatch(inner):
            return _clean(inner), "last expression"
    found = _NUMBER.findall(text)
    if found:
        return found[-1], "last expression"
    return None, "none"


def parse_math(answer: str) -> list[Any]:
    """math-verify's parse of one answer (given without ``$`` or ``\\boxed``): a sympy object and the
    answer's text; ``[]`` when it finds no math in it (then the answer is counted wrong and flagged).

    math-verify (and sympy behind it) is imported here, not with the module: it takes a second
    to import, which every ``kava`` command would otherwise pay for datasets without LaTeX."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse("\\boxed{" + answer + "}", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                   parsing_timeout=_timeout())
    # Unreadable LaTeX comes back as its own text only (``"\\frac{"`` -> ``["{\\frac{}"]``): no math in it.
    return parsed if any(not isinstance(part, str) for part in parsed) else []


def math_equal(gold: list[Any], pred: list[Any]) -> bool:
    """Whether two parsed answers are equal (math-verify's `verify`; the gold one first, as it expects)."""
    from math_verify import verify

    if not gold or not pred:
        return False
    return verify(gold, pred, timeout_seconds=_timeout())
