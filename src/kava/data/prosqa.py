"""ProsQA (Coconut, Hao et al. 2024): rows read and checked, and a seeded generator of new problems.

A ProsQA problem is a random DAG over made-up concept names (``wumpus``, ``lorpus``, …) with
people's names at its sources, stated as one sentence per edge ("Every wumpus is a lorpus.",
"Tom is a wumpus.") in random order, then asked as "Is Tom a A or B?": exactly one of A and B
is reachable from Tom. ``steps`` is a shortest path from Tom to the right concept, one edge
sentence a step, and ``answer`` is "Tom is a A.". A row of the public files (facebookresearch/
coconut ``data/prosqa_{valid,test}.json``) is ``{"question", "answer", "steps", "idx_to_symbol",
"edges", "root", "target", "neg_target"}``; node indices are topological (every edge goes from a
lower index to a higher one), the two question people are nodes 0 and 1.

`prosqa_record` reads a row into a `Record` and checks its meaning, not only its shape: the
question states exactly the edges, the steps walk edges from ``root`` to ``target``, ``target``
and ``neg_target`` are the two options, and ``neg_target`` is not reachable from ``root``. The
record keeps the official question, steps and answer sentence; ``options`` holds the two
concepts in the question's order and ``answer_kind`` is ``concept`` (`kava.data.concept_answers`:
an output is right when it names the right concept and not the wrong one).

`generate_rows` draws new problems in the same format. What the public splits show, and the
generator reproduces (``benchmarks/prosqa_stats.py`` prints both side by side):

- the two question people are nodes 0 and 1; ``target`` is reachable from ``root`` only and
  ``neg_target`` from the other person only, both leaves; 0-4 more people are extra sources
  with one or two out-edges each, placed in the first half of the node order;
- every concept has at least one parent (1 + Poisson, mean 1.8 parents), drawn mostly from
  its own side (the nodes reachable from the one person or the other) with a bias towards
  recent nodes, which makes the paths 3-6 edges long; a few cross edges make a node reachable
  from both people, as in the public graphs (about one node a problem);
- ``target`` is the root-only leaf farthest from the root (``steps``: a shortest path to it, 3-6
  edges), ``neg_target`` an other-only leaf no farther from its person than the target is from
  the root, rarely (weight 0.15) one exactly as far;
- names: 17 person names and 38 concept words, all read from the public files (every concept
  is a made-up word ending in "pus"), drawn without repetition within a problem;
- answer balance: the right concept comes first in the question half of the time.

A generated problem that equals a public one (the same facts and question, in any order) is
drawn again; `generate_rows` takes the public problems to exclude (`problem_key`).
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kava.data.grading import check_gold
from kava.data.records import Record

__all__ = [
    "CONCEPTS",
    "PEOPLE",
    "ProsQAKnobs",
    "prosqa_record",
    "check_row",
    "problem_key",
    "generate_rows",
    "reachable",
]

# The vocabulary of the public valid and test files: every person name and concept word they use.
PEOPLE = ("Alex", "Bob", "Carol", "Davis", "Eva", "Fae", "Gabriel", "Jack", "Max", "Oliver", "Polly",
          "Rex", "Sally", "Sam", "Stella", "Tom", "Wren")
CONCEPTS = ("bompus", "boompus", "brimpus", "chorpus", "dumpus", "felpus", "fompus", "gerpus", "gorpus",
            "grimpus", "gwompus", "hilpus", "impus", "jelpus", "jompus", "kerpus", "lempus", "lorpus",
            "numpus", "quimpus", "rempus", "rompus", "rorpus", "scrompus", "shumpus", "sterpus", "storpus",
            "terpus", "timpus", "tumpus", "vumpus", "worpus", "wumpus", "yerpus", "yimpus", "yumpus",
            "zhorpus", "zumpus")

FIELDS = ("question", "answer", "steps", "idx_to_symbol", "edges", "root", "target", "neg_target")
_QUESTION = re.compile(r"\s*Is (\S+) a (\S+) or (\S+)\?\s*$")


def _is_person(symbol: str) -> bool:
    return symbol[:1].isupper()


def fact(symbols: Sequence[str], a: int, b: int) -> str:
    """The sentence that states edge a -> b: "Tom is a wumpus." or "Every wumpus is a lorpus."."""
    return f"{symbols[a]} is a {symbols[b]}." if _is_person(symbols[a]) else f"Every {symbols[a]} is a {symbols[b]}."


def reachable(n: int, edges: Iterable[Sequence[int]], source: int) -> dict[int, int]:
    """Every node reachable from `source`, with its distance in edges (BFS)."""
    children: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        children[a].append(b)
    dist = {source: 0}
    queue = deque([source])
    while queue:
        x = queue.popleft()
        for y in children[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


# --------------------------------------------------------------------------- reading rows

def _int(row: Mapping[str, Any], key: str, n: int) -> int:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field '{key}' must be an integer node index, got {type(value).__name__}")
    if not 0 <= value < n:
        raise ValueError(f"field '{key}' = {value} is not a node index (0..{n - 1})")
    return value


def check_row(row: Any) -> tuple[str, str]:
    """Check one ProsQA row's shape and meaning; returns the two options in the question's order.

    Raises ValueError with a short reason (the loader prefixes file and row)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in FIELDS if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(repr(k) for k in missing)}")
    for key in ("question", "answer"):
        if not isinstance(row[key], str):
            raise ValueError(f"field '{key}' must be text, got {type(row[key]).__name__}")
    symbols, steps, edges = row["idx_to_symbol"], row["steps"], row["edges"]
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) and s.strip() for s in symbols):
        raise ValueError("field 'idx_to_symbol' must be a list of non-empty names")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError("field 'steps' must be a non-empty list of strings")
    n = len(symbols)
    if not isinstance(edges, list) or not all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n for v in e)
        for e in edges
    ):
        raise ValueError(f"field 'edges' must be a list of [from, to] node index pairs (0..{n - 1})")
    root, target, neg = (_int(row, k, n) for k in ("root", "target", "neg_target"))
    edge_set = {(a, b) for a, b in edges}

    m = _QUESTION.search(row["question"])
    if m is None:
        raise ValueError("field 'question' does not end with 'Is NAME a A or B?'")
    name, first, second = m.groups()
    if name != symbols[root]:
        raise ValueError(f"field 'question' asks about {name!r}, but root is {symbols[root]!r}")
    if {first, second} != {symbols[target], symbols[neg]} or first == second:
        raise ValueError(f"field 'question' offers {first!r} or {second!r}, not target {symbols[target]!r} "
                         f"and neg_target {symbols[neg]!r}")
    facts = sorted(s.strip() + "." for s in row["question"][: m.start()].split(".") if s.strip())
    if facts != sorted(fact(symbols, a, b) for a, b in edge_set) or len(edge_set) != len(edges):
        raise ValueError("field 'question' does not state exactly the edges of field 'edges'")
    if row["answer"].strip() != f"{symbols[root]} is a {symbols[target]}.":
        raise ValueError(f"field 'answer' is {row['answer']!r}, expected {symbols[root] + ' is a ' + symbols[target] + '.'!r}")

    at = root
    for i, step in enumerate(steps):
        hop = [b for (a, b) in edge_set if a == at and step.strip() == fact(symbols, a, b)]
        if not hop:
            raise ValueError(f"field 'steps'[{i}] {step!r} is not an edge from {symbols[at]!r}")
        at = hop[0]
    if at != target:
        raise ValueError(f"field 'steps' ends at {symbols[at]!r}, not at target {symbols[target]!r}")
    if neg in reachable(n, edge_set, root):
        raise ValueError(f"neg_target {symbols[neg]!r} is reachable from root {symbols[root]!r}")
    return first, second


def prosqa_record(row: Any) -> Record:
    """A checked ProsQA row as a `Record`: the official question, steps and answer sentence,
    the two concepts (question order) as ``options``, answer kind ``concept``."""
    options = check_row(row)
    record = Record(question=row["question"].strip(), steps=tuple(s.strip() for s in row["steps"]),
                    answer=row["answer"].strip(), answer_kind="concept", options=options)
    check_gold(record)
    return record


def problem_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two problems the same: their fact sentences (any order) and their question."""
    question = row["question"]
    m = _QUESTION.search(question)
    head, tail = (question[: m.start()], m.group(0).strip()) if m else (question, "")
    return (*sorted(s.strip() for s in head.split(".") if s.strip()), tail)


# --------------------------------------------------------------------------- generating rows

# How many people besides the two of the question, as often as in the public splits (0: 58 %).
_EXTRA_PEOPLE = (0.58, 0.315, 0.085, 0.02)


@dataclass(frozen=True)
class ProsQAKnobs:
    """The generator's settings; the defaults match the public valid and test splits."""

    nodes_min: int = 14  # nodes of a problem (people and concepts), drawn ~ N(22.8, 2.0) within the range
    nodes_max: int = 28
    nodes_mean: float = 22.8
    steps_min: int = 3  # the length of the answer's path, in edges
    steps_max: int = 6
    edges_max: int = 54  # at most this many edges (facts)
    mean_parents: float = 1.8  # parents of a concept: 1 + Poisson(mean_parents - 1)
    cross: float = 0.03  # chance that a concept's second or later parent comes from the other side
    recency: float = 1.45  # bias of a parent choice towards recent nodes (0: uniform)

    def __post_init__(self) -> None:
        bad = None
        if self.nodes_min < 6:
            bad = f"nodes_min must be >= 6 (two people and four concepts), got {self.nodes_min}"
        elif self.nodes_max < self.nodes_min:
            bad = f"nodes_max must be >= nodes_min ({self.nodes_min}), got {self.nodes_max}"
        elif self.nodes_max - 2 > len(CONCEPTS):
            bad = f"nodes_max must be <= {len(CONCEPTS) + 2} (the vocabulary has {len(CONCEPTS)} concepts), got {self.nodes_max}"
        elif self.steps_min < 1:
            bad = f"steps_min must be >= 1, got {self.steps_min}"
        elif self.steps_max < self.steps_min:
            bad = f"steps_max must be >= steps_min ({self.steps_min}), got {self.steps_max}"
        elif self.steps_min > self.nodes_max - 3:
            bad = f"steps_min must be <= nodes_max - 3 ({self.nodes_max - 3}), got {self.steps_min}"
        elif self.edges_max < self.nodes_max:
            bad = f"edges_max must be >= nodes_max ({self.nodes_max}), got {self.edges_max}"
        elif not 1.0 <= self.mean_parents <= 4.0:
            bad = f"mean_parents must be in [1, 4], got {self.mean_parents}"
        elif not 0.0 <= self.cross <= 0.5:
            bad = f"cross must be in [0, 0.5], got {self.cross}"
        elif not 0.0 <= self.recency <= 5.0:
            bad = f"recency must be in [0, 5], got {self.recency}"
        elif not self.nodes_min <= self.nodes_mean <= self.nodes_max:
            bad = f"nodes_mean must be within [nodes_min, nodes_max], got {self.nodes_mean}"
        if bad is not None:
            raise ValueError(f"ProsQA generator: {bad}")


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _pick(rng: random.Random, pool: Sequence[int], recency: float) -> int:
    """One node of `pool` (in index order), later ones more likely."""
    weights = [(i + 1) ** recency for i in range(len(pool))]
    return rng.choices(pool, weights)[0]


def _draw(rng: random.Random, k: ProsQAKnobs) -> dict[str, Any] | None:
    """One problem, or None when the drawn graph has no fitting target (the caller draws again)."""
    n = min(k.nodes_max, max(k.nodes_min, round(rng.gauss(k.nodes_mean, 2.0))))
    extra = min(rng.choices(range(len(_EXTRA_PEOPLE)), _EXTRA_PEOPLE)[0], n - 6)
    slots = list(range(2, n))
    half = slots[: max(1, len(slots) // 2)]
    extras = set(rng.sample(half[:-1] or half, min(extra, max(0, len(half) - 1))))
    side = {0: 0, 1: 1}  # 0: the root's side, 1: the other person's
    pools: list[list[int]] = [[0], [1]]
    edges: list[tuple[int, int]] = []
    waiting: list[int] = []  # extra people still without an out-edge
    for i in slots:
        if i in extras:
            waiting.append(i)
            continue
        s = 0 if rng.random() < 0.58 else 1
        wanted = 1 + _poisson(rng, k.mean_parents - 1.0)
        parents = {_pick(rng, pools[s], k.recency)}
        crossed = False
        for _ in range(8 * wanted):  # distinct parents, as many as the pools allow
            if len(parents) >= wanted:
                break
            t = 1 - s if rng.random() < k.cross else s
            p = _pick(rng, pools[t], k.recency)
            crossed |= t != s and p not in parents
            parents.add(p)
        if waiting and rng.random() < 0.5:
            parents.add(waiting.pop(0))
        edges.extend((p, i) for p in parents)
        side[i] = s
        if not crossed:  # a node reachable from both people stays a leaf, as nearly always in the public graphs
            pools[s].append(i)
    for p in waiting:  # an extra person states at least one fact
        later = [i for i in side if i > p]
        if not later:
            return None
        edges.append((p, rng.choice(later)))
    if len(edges) > k.edges_max:
        return None
    people = [0, 1, *sorted(extras)]
    used = {v for e in edges for v in e}
    if len(used) != n:
        return None
    root = rng.choices((0, 1), (0.36, 0.64))[0]  # the public files ask about node 1 in 64 % of rows
    other = 1 - root
    from_root, from_other = reachable(n, edges, root), reachable(n, edges, other)
    has_child = {a for a, _ in edges}
    leaves_root = [v for v, d in from_root.items()
                   if v not in has_child and v not in from_other and k.steps_min <= d <= k.steps_max]
    if not leaves_root:
        return None
    depth = max(from_root[v] for v in leaves_root)
    target = rng.choice([v for v in leaves_root if from_root[v] == depth])
    leaves_other = [v for v, d in from_other.items()
                    if v not in has_child and v not in from_root and v not in people and d <= depth]
    if not leaves_other:
        return None
    # As far from its person as the target from the root in only 11 % of the public problems.
    neg = rng.choices(leaves_other, [0.15 if from_other[v] == depth else 1.0 for v in leaves_other])[0]

    names = rng.sample(PEOPLE, len(people))
    concepts = iter(rng.sample(CONCEPTS, n - len(people)))
    symbols = [names[people.index(i)] if i in people else next(concepts) for i in range(n)]
    path = _shortest_path(n, edges, root, target, rng)
    facts = [fact(symbols, a, b) for a, b in edges]
    rng.shuffle(facts)
    first, second = (target, neg) if rng.random() < 0.5 else (neg, target)
    edges.sort(key=lambda e: (e[1], rng.random()))
    return {
        "question": " ".join(facts) + f" Is {symbols[root]} a {symbols[first]} or {symbols[second]}?",
        "answer": f"{symbols[root]} is a {symbols[target]}.",
        "steps": [fact(symbols, a, b) for a, b in zip(path, path[1:])],
        "idx_to_symbol": symbols,
        "edges": [list(e) for e in edges],
        "root": root,
        "target": target,
        "neg_target": neg,
    }


def _shortest_path(n: int, edges: Sequence[tuple[int, int]], source: int, target: int,
                   rng: random.Random) -> list[int]:
    """One shortest path from `source` to `target`, ties broken at random."""
    dist = reachable(n, edges, source)
    path = [target]
    while path[-1] != source:
        here = path[-1]
        before = [a for a, b in edges if b == here and dist.get(a) == dist[here] - 1]
        path.append(rng.choice(sorted(before)))
    return path[::-1]


def generate_rows(count: int, seed: int = 0, *, knobs: ProsQAKnobs | None = None,
                  exclude: Iterable[Mapping[str, Any]] = ()) -> Iterator[dict[str, Any]]:
    """`count` new ProsQA rows in the public format, the same for the same seed and knobs.

    No row equals (`problem_key`) one of `exclude` (the public problems) or an earlier row."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"ProsQA generator: count must be an integer >= 0, got {count!r}")
    knobs = ProsQAKnobs() if knobs is None else knobs
    rng = random.Random(seed)
    seen = {problem_key(row) for row in exclude}
    made = tries = 0
    while made < count:
        tries += 1
        if tries > 1000 + 200 * count:
            raise ValueError(f"ProsQA generator: the knobs {knobs} yield almost no valid problem "
                             f"({made} of {count} after {tries - 1} draws)")
        row = _draw(rng, knobs)
        if row is None:
            continue
        key = problem_key(row)
        if key in seen:
            continue
        seen.add(key)
        made += 1
        yield row


# --------------------------------------------------------------------------- statistics

def row_stats(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers `benchmarks/prosqa_stats.py` compares between public and generated problems."""
    symbols, edges, root = row["idx_to_symbol"], row["edges"], row["root"]
    n = len(symbols)
    other = 1 - root if root in (0, 1) else None
    from_root = reachable(n, edges, root)
    from_other = reachable(n, edges, other) if other is not None else {}
    first = _QUESTION.search(row["question"]).group(2)
    people = [s for s in symbols if _is_person(s)]
    has_child = {a for a, _ in edges}
    deepest = max(from_root.values())
    return {
        "nodes": n,
        "edges": len(edges),
        "steps": len(row["steps"]),
        "people": len(people),
        "concepts": n - len(people),
        "parents per concept": len(edges) / max(1, n - len(people)),
        "reachable from root": len(from_root) - 1,
        "reachable from both people": len(set(from_root) & set(from_other)),
        "leaves": n - len(has_child),
        "target is deepest": float(from_root[row["target"]] == deepest),
        "neg_target distance - steps": (from_other[row["neg_target"]] - len(row["steps"])
                                        if row["neg_target"] in from_other else float("nan")),
        "root is node 1": float(root == 1),
        "right option first": float(first == symbols[row["target"]]),
        "concept word length": sum(len(s) for s in symbols if not _is_person(s)) / max(1, n - len(people)),
    }
