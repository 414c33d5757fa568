"""Turn GSM8K training rows into the two chain-of-thought styles KaVa trains on.

The paper trains on GSM8k-AUG (385,620 rows, equation-only CoT such as ``<<16-3-4=9>>
<<9*2=18>>``) and GSM8k-AUG-NL (same problems, natural-language CoT). Both live only on the hub.
GSM8K's own ``train.jsonl`` (7,473 rows) carries the same information in one solution text:
calculator annotations ``<<a*b=c>>`` give the equation-only steps and the solution lines give the
natural-language steps. Converting it gives a small, real training set that works offline. It is
not GSM8k-AUG: the registry exposes it under its own names (``gsm8k-train-aug``,
``gsm8k-train-aug-nl``) so that it is never mistaken for, or substituted for, the hub dataset.

The conversion reproduces iCoT's format exactly: applied to GSM8K's test split it gives the
same steps as iCoT's ``gsm8k-aug/test.txt`` for every one of its 1,319 rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kava.data.answers import canonical_gold
from kava.data.records import Record

__all__ = [
    "Style",
    "Conversion",
    "split_gsm8k_solution",
    "gsm8k_record",
    "to_aug",
    "to_aug_nl",
    "convert_gsm8k",
    "write_jsonl",
    "math_solution_steps",
    "rationale_steps",
]

Style = Literal["aug", "aug-nl"]

# GSM8K's calculator annotations; they never contain "<" or ">" inside, so non-greedy is exact.
_ANNOTATION = re.compile(r"<<.*?>>")
_FINAL = "####"


def split_gsm8k_solution(solution: str) -> tuple[list[str], str]:
    """Split a GSM8K ``answer`` field into its solution lines and the text after ``####``.

    Blank lines are dropped; the lines keep their ``<<…>>`` annotations (callers choose the
    style). Raises ValueError when the ``#### N`` line is missing or repeated, because then the
    gold answer is unknown.
    """
    if not isinstance(solution, str):
        raise ValueError(f"field 'answer' must be text, got {type(solution).__name__}")
    count = solution.count(_FINAL)
    if count != 1:
        raise ValueError(f"field 'answer' must contain exactly one '{_FINAL} N' line, found {count}")
    body, _, final = solution.partition(_FINAL)
    if not final.strip():
        raise ValueError(f"field 'answer' has nothing after '{_FINAL}'")
    # "\n" only: GSM8K text holds U+2028 inside lines, which str.splitlines would break at.
    lines = [line.strip() for line in body.split("\n") if line.strip()]
    return lines, final.strip()


def gsm8k_record(row: Mapping[str, Any]) -> Record:
    """A GSM8K row (``{"question", "answer"}``) as a Record in GSM8K's own style.

    Steps are the raw solution lines, annotations included, so that no information is lost and
    either training style can be derived from the record. Raises ValueError on a malformed row.
    """
    for key in ("question", "answer"):
        if key not in row:
            raise ValueError(f"missing field '{key}'")
    question = row["question"]
    if not isinstance(question, str):
        raise ValueError(f"field 'question' must be text, got {type(question).__name__}")
    lines, final = split_gsm8k_solution(row["answer"])
    return Record(question=question.strip(), steps=tuple(lines), answer=canonical_gold(final))


_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# Where a sentence may end: ".", "!" or "?", possibly inside the math that closes right after it
# ("$r = 3.$  Also"), then whitespace and a capital letter or new math.
_SENTENCE_END = re.compile(r"[.!?](?:\$\$|\$)?\s+(?=[A-Z$\\])")
_MATH_TOGGLE = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\\begin\{|\\end\{")


def _outside_math(text: str) -> list[bool]:
    """For each position of `text`, whether it lies outside math (``$…$``, ``$$…$$``, ``\\[…\\]``,
    ``\\(…\\)``, ``\\begin{…}…\\end{…}``); an escaped ``\\$`` is a dollar sign, not math."""
    outside = [True] * (len(text) + 1)
    depth, dollars, pos = 0, "", 0
    for m in _MATH_TOGGLE.finditer(text):
        token = m.group(0)
        if token == "\\$":
            continue
        state = depth == 0 and not dollars
        outside[pos : m.start()] = [state] * (m.start() - pos)
        if token in ("$", "$$"):
            dollars = "" if dollars == token else (dollars or token)
        elif token in ("\\[", "\\(", "\\begin{"):
            depth += 1
        else:
            depth = max(0, depth - 1)
        outside[m.start() : m.end()] = [False] * (m.end() - m.start())
        pos = m.end()
    state = depth == 0 and not dollars
    outside[pos:] = [state] * (len(outside) - pos)
    return outside


def _sentences(paragraph: str) -> list[str]:
    outside = _outside_math(paragraph)
    cuts = [m.end() for m in _SENTENCE_END.finditer(paragraph) if outside[m.end() - 1]]
    return [paragraph[a:b].strip() for a, b in zip([0, *cuts], [*cuts, len(paragraph)]) if paragraph[a:b].strip()]


def math_solution_steps(solution: str) -> tuple[str, ...]:
    """A MATH solution as NL CoT steps: one step per sentence, as GSM8K's solution lines are.

    A sentence ends at ".", "!" or "?" followed by whitespace and a capital letter or new math,
    but never inside math: ``$…$``, ``$$…$$``, ``\\[…\\]`` and ``\\begin{align*}…\\end{align*}``
    stay whole however many lines or periods they hold (MATH often writes the period inside
    the math that ends a sentence, ``$r = 3.$  Also``, which counts as the end). Paragraph
    breaks end a step too; whitespace is collapsed to single spaces (steps are joined by spaces
    in the sequence anyway); Asymptote drawings (``[asy]…[/asy]``) are removed: they are
    pictures, not reasoning. The last sentence usually states the ``\\boxed{…}`` answer, so the
    teacher's last-step drop (``teacher_drop_last_step``) leaves out what GSM8k's does: the
    sentence that gives the result.
    """
    paragraphs = _PARAGRAPH_BREAK.split(_ASY.sub("", solution))
    return tuple(" ".join(sentence.split()) for p in paragraphs for sentence in _sentences(p))


def rationale_steps(rationale: str) -> tuple[str, ...]:
    """An AQuA rationale as NL CoT steps: its non-blank lines, as GSM8K's solution lines.

    AQuA rationales end with a line naming the option (``"Answer: C"``, ``"ANSWER:A"``) in most
    rows, which is the last step the teacher leaves out.
    """
    return tuple(line.strip() for line in rationale.split("\n") if line.strip())


def to_aug(record: Record) -> Record | None:
    """GSM8k-AUG style: the steps are the ``<<expr=result>>`` annotations, in order.

    Returns None when the solution has no annotation (95 of GSM8K's 7,473 training rows): an
    empty chain of thought cannot supervise the teacher, so such rows are skipped, not kept.
    """
    steps = tuple(m.group(0) for line in record.steps for m in _ANNOTATION.finditer(line))
    if not steps:
        return None
    return Record(question=record.question, steps=steps, answer=record.answer)


def to_aug_nl(record: Record) -> Record:
    """GSM8k-AUG-NL style: the solution lines with the calculator annotations removed.

    ``"She makes 9 * 2 = $<<9*2=18>>18 every day."`` becomes ``"She makes 9 * 2 = $18 every
    day."``: the annotation duplicates the number written right after it.
    """
    steps = tuple(s for s in (_ANNOTATION.sub("", line).strip() for line in record.steps) if s)
    return Record(question=record.question, steps=steps, answer=record.answer)


@dataclass
class Conversion:
    """The converted records and, for each row left out, a reason naming its 1-based row number."""

    records: list[Record]
    skip_reasons: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.skip_reasons)


def convert_gsm8k(rows: Iterable[Mapping[str, Any]], style: Style) -> Conversion:
    """Convert GSM8K rows (as read from ``train.jsonl``) to GSM8k-AUG or GSM8k-AUG-NL style.

    A malformed row raises ValueError naming its 1-based row number; rows without annotations
    are skipped (``aug`` style only) and listed in ``skip_reasons``.
    """
    if style not in ("aug", "aug-nl"):
        raise ValueError(f"style must be 'aug' or 'aug-nl', got {style!r}")
    out = Conversion(records=[])
    for number, row in enumerate(rows, start=1):
        try:
            native = gsm8k_record(row)
        except ValueError as exc:
            raise ValueError(f"row {number}: {exc}") from exc
        converted = to_aug(native) if style == "aug" else to_aug_nl(native)
        if converted is None:
            out.skip_reasons.append(f"row {number}: no <<…>> annotation in the solution")
        else:
            out.records.append(converted)
    return out


def write_jsonl(records: Iterable[Record], path: str | Path) -> int:
    """Write records as plain JSONL (``{"question", "steps", "answer"}`` per line); return the count.

    This is the neutral format `kava.data.datasets.load_dataset` reads from any path, so a
    converted set can be saved once and loaded like any other file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            row = {"question": record.question, "steps": list(record.steps), "answer": record.answer}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
