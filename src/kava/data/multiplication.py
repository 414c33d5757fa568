"""iCoT's multi-digit multiplication (Deng et al. 2024, da03/Internalize_CoT_Step_by_Step): the
row format, a generator that writes exactly the official line for any n×n problem, and records.

One row: ``a * b||trace #### product``, every number digit by digit with single spaces, **least
significant digit first**. For n-digit operands a and b (b's digits b_0, b_1, … from the least
significant):

- partial product i is a × b_i written with n + 1 digits (zero-padded at its most significant
  end), after i shift zeros: n + 1 + i digits;
- after the second partial product, each running sum (partial products 0…i added up) follows in
  parentheses, written with n + 1 + i digits; the last partial product has none (its sum is the
  product);
- the product is written with 2n digits (a leading zero of the product is kept, as the last digit).

Operands have exactly n digits (no leading zero), as in every public row. `mult_line` reproduces
every row of the public 4×4 valid/test and 5×5 valid files byte for byte.

As a `Record`: the question is ``a * b`` as written (``"5 6 3 2 * 7 4 3 4"``), the answer is the
product as written (``"5 5 6 0 8 2 0 1"``, answer kind ``digits``: `kava.data.digit_answers`),
and the steps are one per digit of b: the first partial product, then ``"+ partial ( sum )"``
for the middle ones and ``"+ partial"`` for the last, so that the steps joined with single
spaces (as the sequence builder writes a trace) are the official trace exactly, and the
teacher's last-step drop leaves out the last partial product.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

from kava.data.records import Record

__all__ = [
    "MIN_DIGITS",
    "ANSWER_KIND",
    "check_digits",
    "written",
    "mult_trace_steps",
    "mult_line",
    "mult_record",
    "parse_mult_line",
    "looks_like_mult",
    "problem_key",
    "generate_problems",
    "write_mult_file",
]

MIN_DIGITS = 2
ANSWER_KIND = "digits"

_NUMBER = r"[0-9](?: [0-9])*"
_QUESTION = re.compile(rf"\s*({_NUMBER}) \* ({_NUMBER})\s*")


def check_digits(n: object) -> int:
    """`n` (the operands' digit count) as an int; ValueError naming the knob when out of range."""
    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_DIGITS:
        raise ValueError(f"digits (the n of n×n multiplication) must be an integer >= {MIN_DIGITS}, got {n!r}")
    return n


def written(value: int, width: int) -> str:
    """`value` least significant digit first, zero-padded to `width` digits, digits spaced."""
    text = str(value).zfill(width)
    if len(text) != width:
        raise ValueError(f"{value} has more than {width} digits")
    return " ".join(reversed(text))


def _operands(a: int, b: int, n: int) -> None:
    check_digits(n)
    low, high = 10 ** (n - 1), 10**n
    for name, x in (("a", a), ("b", b)):
        if isinstance(x, bool) or not isinstance(x, int) or not low <= x < high:
            raise ValueError(f"operand {name} must be an integer of exactly {n} digits, got {x!r}")


def mult_trace_steps(a: int, b: int, n: int) -> tuple[str, ...]:
    """The trace of a × b as steps (module docstring); ``" ".join`` of them is the official trace."""
    _operands(a, b, n)
    steps = []
    total = 0
    for i in range(n):
        digit = (b // 10**i) % 10
        partial = a * digit * 10**i
        total += partial
        text = written(partial, n + 1 + i)
        if i == 0:
            steps.append(text)
        elif i < n - 1:
            steps.append(f"+ {text} ( {written(total, n + 1 + i)} )")
        else:
            steps.append(f"+ {text}")
    return tuple(steps)


def mult_line(a: int, b: int, n: int) -> str:
    """The official row for a × b with n-digit operands: ``a * b||trace #### product``."""
    steps = mult_trace_steps(a, b, n)
    return f"{written(a, n)} * {written(b, n)}||{' '.join(steps)} #### {written(a * b, 2 * n)}"


def mult_record(a: int, b: int, n: int) -> Record:
    """a × b as a `Record` (module docstring)."""
    return Record(
        question=f"{written(a, n)} * {written(b, n)}",
        steps=mult_trace_steps(a, b, n),
        answer=written(a * b, 2 * n),
        answer_kind=ANSWER_KIND,
    )


def _value(digits: str) -> int:
    return int("".join(reversed(digits.split())))


def looks_like_mult(line: str) -> bool:
    """Whether an iCoT text line's question is ``digits * digits`` (a multiplication row)."""
    question = line.partition("||")[0]
    return _QUESTION.fullmatch(question) is not None


def parse_mult_line(line: str) -> Record:
    """One official row as a `Record`; ValueError with a short reason unless the line is exactly
    the official line for its operands (its trace and product are regenerated and compared)."""
    if "||" not in line:
        raise ValueError("expected 'a * b||trace #### product', found no '||'")
    question, _, rest = line.partition("||")
    m = _QUESTION.fullmatch(question)
    if m is None:
        raise ValueError(f"question {question.strip()!r} is not 'a * b' written digit by digit with single spaces")
    a_text, b_text = m.group(1), m.group(2)
    n = len(a_text.split())
    if len(b_text.split()) != n:
        raise ValueError(f"operands have {n} and {len(b_text.split())} digits; expected n×n")
    if n < MIN_DIGITS:
        raise ValueError(f"operands have {n} digit(s); expected at least {MIN_DIGITS}")
    a, b = _value(a_text), _value(b_text)
    for name, text, value in (("a", a_text, a), ("b", b_text, b)):
        if value < 10 ** (n - 1):
            raise ValueError(f"operand {name} {text!r} has a leading zero (its last digit); operands have exactly {n} digits")
    if "####" not in rest:
        raise ValueError("expected 'a * b||trace #### product', found no '####'")
    trace, _, product = rest.rpartition("####")
    record = mult_record(a, b, n)
    if product.strip() != record.answer:
        raise ValueError(f"product {product.strip()!r} is not a × b = {record.answer!r}")
    expected = " ".join(record.steps)
    if trace.strip() != expected:
        raise ValueError(f"trace {trace.strip()!r} is not the partial products of a × b ({expected!r})")
    if line.strip() != mult_line(a, b, n):
        raise ValueError("spacing differs from the official line (single spaces, ' #### ' before the product)")
    return record


def problem_key(record: Record) -> tuple[int, int]:
    """The problem a record poses, order-free: a × b and b × a are one problem (same product; a
    generated training problem equal to a held-out one in either order is left out)."""
    m = _QUESTION.fullmatch(record.question)
    if m is None:
        raise ValueError(f"question {record.question!r} is not 'a * b' written digit by digit")
    a, b = _value(m.group(1)), _value(m.group(2))
    return (a, b) if a <= b else (b, a)


def generate_problems(n: int, *, seed: int = 0, exclude: Iterable[tuple[int, int]] = ()) -> Iterator[tuple[int, int]]:
    """Endless seeded stream of distinct n×n problems (a, b), both operands uniform over the
    n-digit numbers, none equal to another or to an `exclude` key (`problem_key`) in either
    order. The stream for a seed is fixed: the first k problems of a longer run are the k of a
    shorter one. Ends when every problem is used (n = 2 has 4,095 order-free problems)."""
    check_digits(n)
    low, high = 10 ** (n - 1), 10**n
    used = set(exclude)
    space = (high - low) * (high - low + 1) // 2  # order-free pairs
    rng = random.Random(f"kava-mult-{n}x{n}-{seed}")
    if space <= 2_000_000:  # small n: enumerate and shuffle, so the stream ends instead of stalling
        pairs = [(a, b) for a in range(low, high) for b in range(a, high)]
        rng.shuffle(pairs)
        for a, b in pairs:
            if (a, b) not in used:
                yield (a, b) if rng.random() < 0.5 else (b, a)
        return
    while True:
        a, b = rng.randrange(low, high), rng.randrange(low, high)
        key = (a, b) if a <= b else (b, a)
        if key in used:
            continue
        used.add(key)
        yield a, b


def write_mult_file(path, n: int, count: int, *, seed: int = 0, exclude: Iterable[tuple[int, int]] = ()) -> int:
    """Write `count` generated n×n problems to `path` in the official format (any kava command
    reads such a ``.txt`` file as multiplication records); returns how many were written (fewer
    only when n×n has fewer problems)."""
    check_digits(n)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    lines = []
    for a, b in generate_problems(n, seed=seed, exclude=exclude):
        if len(lines) >= count:
            break
        lines.append(mult_line(a, b, n))
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return len(lines)
