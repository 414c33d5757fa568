"""Synthetic GSM8k-AUG-like word problems for the CPU demo.

The demo trains a tiny model from scratch without hub access, so it needs a task that is
generated locally, small in vocabulary and numbers (a 4-layer model must learn it in minutes
with chain of thought), yet multi-step, so that reasoning — written out or latent — actually
helps over answering directly. Each problem chains 2–3 (``TaskConfig.max_ops``) of ``+ - * /`` on one running count:

    Tom has 12 apples. He gets 7 more. He gives away 5. Then he has 3 times as many.
    How many apples does he have now?

with one trace step per operation, either GSM8k-AUG equations (``<<12+7=19>>``) or sentences
(``Tom has 12 + 7 = 19 apples.``). Every intermediate value is an integer in
``[2, max_value]`` (so objects stay plural); division happens only when exact. Names, objects and several templates per
operation vary the surface so the model must read the question rather than memorise a layout.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Literal

from kava.data.records import Record

# Held-out splits are fixed so every run of the demo evaluates on the very same problems.
VALID_SIZE, TEST_SIZE = 200, 500
VALID_SEED, TEST_SEED = 10_007, 20_011

START_RANGE = (2, 30)  # the initial count
MIN_AMOUNT = 2  # amounts added or removed are never 1, so objects stay plural
MIN_VALUE = 2  # smallest running count: no "1 apples", and no zero that would void later steps
FACTORS = (2, 3, 4)  # multipliers and divisors

# name -> (subject, object) pronouns
NAMES: dict[str, tuple[str, str]] = {
    **{n: ("he", "him") for n in ("Tom", "Ben", "Sam", "Leo", "Max", "Omar", "Ravi", "Jack")},
    **{n: ("she", "her") for n in ("Anna", "Mia", "Lucy", "Emma", "Nora", "Aisha", "Zoe", "Lily")},
}
OBJECTS = (
    "apples", "marbles", "stickers", "cookies", "books", "pencils",
    "coins", "cards", "shells", "stamps", "balloons", "candies",
)  # fmt: skip
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}

# Templates use the fields of `_fields` plus {k} (the amount) and {frac} (division only).
OPENINGS = ("{Name} has {a} {obj}.", "{Name} starts with {a} {obj}.")
OP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": (
        "{He} gets {k} more.",
        "{He} buys {k} more {obj}.",
        "{Name} finds {k} more {obj}.",
        "A friend gives {him} {k} {obj}.",
    ),
    "-": (
        "{He} gives away {k}.",
        "{He} loses {k} {obj}.",
        "{Name} sells {k} of them.",
        "{He} gives {k} {obj} to a friend.",
    ),
    "*": (
        "Then {he} has {k} times as many.",
        "{Name} ends up with {k} times as many {obj}.",
        "{He} collects more until {he} has {k} times as many.",
    ),
    "/": (
        "{He} keeps only {frac} of them.",
        "{He} splits them into {k} equal piles and keeps one pile.",
    ),
}
QUESTIONS = (
    "How many {obj} does {he} have now?",
    "How many {obj} does {Name} have in the end?",
    "How many {obj} does {Name} have now?",
)
NL_FIRST_STEP = "{Name} has {a} {op} {k} = {c} {obj}."
NL_NEXT_STEP = "Then {he} has {a} {op} {k} = {c} {obj}."

Trace = Literal["equation", "nl"]


@dataclass(frozen=True)
class TaskConfig:
    """Problem shape: how many operations, how large values may grow, which trace style."""

    min_ops: int = 2
    # 2-3 operations: CoT 84 % vs No-CoT 4.5 % on validation, and within the demo's minutes the
    # latents can learn up to three chained operations (2-4: KaVa 17 % after 800 steps, 2-3: 22.5 %).
    max_ops: int = 3
    max_value: int = 100
    max_amount: int = 9  # largest amount added or removed: single digits, as in GSM8k's easy steps
    trace: Trace = "equation"

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.max_value < START_RANGE[1]:
            raise ValueError(f"max_value must be at least {START_RANGE[1]} (the largest start), got {self.max_value}")
        if self.max_amount < MIN_AMOUNT:
            raise ValueError(f"max_amount must be at least {MIN_AMOUNT}, got {self.max_amount}")
        if self.trace not in ("equation", "nl"):
            raise ValueError(f"trace must be 'equation' or 'nl', got {self.trace!r}")


@dataclass(frozen=True)
class _Step:
    op: str
    k: int
    before: int
    after: int


def _apply(op: str, a: int, k: int) -> int:
    return {"+": a + k, "-": a - k, "*": a * k, "/": a // k}[op]


def _legal_amounts(op: str, a: int, cfg: TaskConfig) -> list[int]:
    """Amounts that keep the result an integer in [MIN_VALUE, cfg.max_value]."""
    if op == "+":
        return list(range(MIN_AMOUNT, min(cfg.max_amount, cfg.max_value - a) + 1))
    if op == "-":
        return list(range(MIN_AMOUNT, min(cfg.max_amount, a - MIN_VALUE) + 1))
    if op == "*":
        return [f for f in FACTORS if a * f <= cfg.max_value]
    return [f for f in FACTORS if a % f == 0 and a // f >= MIN_VALUE]


def _fields(name: str, obj: str) -> dict[str, str]:
    he, him = NAMES[name]
    return {"Name": name, "obj": obj, "he": he, "He": he.capitalize(), "him": him}


def _sample(rng: random.Random, cfg: TaskConfig) -> Record:
    name, obj = rng.choice(tuple(NAMES)), rng.choice(OBJECTS)
    f = _fields(name, obj)
    value = rng.randint(*START_RANGE)
    sentences = [rng.choice(OPENINGS).format(a=value, **f)]
    steps: list[_Step] = []
    for _ in range(rng.randint(cfg.min_ops, cfg.max_ops)):
        # As max_value >= 30, every count can take +2 or -2 within bounds, so options is never empty.
        options = {op: ks for op in OP_TEMPLATES if (ks := _legal_amounts(op, value, cfg))}
        op = rng.choice(tuple(options))
        k = rng.choice(options[op])
        sentences.append(rng.choice(OP_TEMPLATES[op]).format(k=k, frac=FRACTIONS.get(k, ""), **f))
        steps.append(_Step(op, k, value, _apply(op, value, k)))
        value = steps[-1].after
    sentences.append(rng.choice(QUESTIONS).format(**f))
    return Record(question=" ".join(sentences), steps=_trace(steps, f, cfg.trace), answer=str(value))


def _trace(steps: list[_Step], f: dict[str, str], trace: Trace) -> tuple[str, ...]:
    """One trace step per operation; rendering draws no randomness, so both styles share problems."""
    if trace == "equation":
        return tuple(f"<<{s.before}{s.op}{s.k}={s.after}>>" for s in steps)
    return tuple(
        (NL_FIRST_STEP if i == 0 else NL_NEXT_STEP).format(a=s.before, op=s.op, k=s.k, c=s.after, **f)
        for i, s in enumerate(steps)
    )


def stream(seed: int, cfg: TaskConfig = TaskConfig()) -> Iterator[Record]:
    """An endless, seed-deterministic sequence of problems (repeats are possible, if rare)."""
    rng = random.Random(seed)
    while True:
        yield _sample(rng, cfg)


def generate(n: int, seed: int, cfg: TaskConfig = TaskConfig()) -> list[Record]:
    """The first ``n`` problems of ``stream(seed, cfg)``; a prefix of any longer call with the same seed."""
    return list(islice(stream(seed, cfg), n))


def vocabulary() -> frozenset[str]:
    """Every word (maximal run of letters) the generator can emit, for the demo tokenizer."""
    templates = (*OPENINGS, *QUESTIONS, NL_FIRST_STEP, NL_NEXT_STEP, *(t for ts in OP_TEMPLATES.values() for t in ts))
    literals = (re.sub(r"\{\w+\}", " ", t) for t in templates)
    values = (v for name in NAMES for obj in OBJECTS for v in _fields(name, obj).values())
    return frozenset(w for text in (*literals, *values, *FRACTIONS.values()) for w in re.findall(r"[A-Za-z]+", text))


def _distinct(records: Iterable[Record], n: int, exclude: frozenset[str]) -> list[Record]:
    """The first ``n`` records with new questions not in ``exclude``: a split never holds a problem twice."""
    seen = set(exclude)
    out: list[Record] = []
    for r in records:
        if len(out) == n:
            break
        if r.question not in seen:
            seen.add(r.question)
            out.append(r)
    return out


class SyntheticTask:
    """Fixed validation and test splits plus an endless training stream that never repeats them.

    The splits are disjoint by question text, and the training stream drops any problem whose
    question is held out, so held-out accuracy measures generalisation, not recall.
    """

    def __init__(self, cfg: TaskConfig = TaskConfig(), *, valid_size: int = VALID_SIZE, test_size: int = TEST_SIZE):
        self.cfg = cfg
        self._test = _distinct(stream(TEST_SEED, cfg), test_size, frozenset())
        self._valid = _distinct(stream(VALID_SEED, cfg), valid_size, frozenset(r.question for r in self._test))
        self.held_out_questions = frozenset(r.question for r in (*self._test, *self._valid))

    def test_set(self, n: int | None = None) -> list[Record]:
        """The first ``n`` (default: all) test problems; always the same ones for a config."""
        return _prefix(self._test, n, "test")

    def valid_set(self, n: int | None = None) -> list[Record]:
        """The first ``n`` (default: all) validation problems, disjoint from the test set."""
        return _prefix(self._valid, n, "valid")

    def train_stream(self, seed: int) -> Iterator[Record]:
        """Fresh problems forever, deterministic by ``seed``, skipping every held-out question."""
        return (r for r in stream(seed, self.cfg) if r.question not in self.held_out_questions)


def _prefix(split: list[Record], n: int | None, name: str) -> list[Record]:
    if n is None:
        return list(split)
    if not 0 <= n <= len(split):
        raise ValueError(f"{name} split holds {len(split)} problems; asked for {n}")
    return split[:n]
