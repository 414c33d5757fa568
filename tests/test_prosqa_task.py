"""ProsQA (Coconut) in the dataset registry: the public rows and what they mean, the generated train
split, the concept answer check, malformed rows and generator knobs."""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections import deque
from pathlib import Path

import pytest

from kava.data.concept_answers import extract_concept
from kava.data.datasets import DatasetFormatError, DatasetNotFoundError, load_dataset
from kava.data.grading import check_gold, grade
from kava.data.prosqa import CONCEPTS, PEOPLE, ProsQAKnobs, generate_rows, problem_key, prosqa_record
from kava.data.records import Record

from conftest import DATA_DIR

DATA = DATA_DIR  # the folder conftest names in KAVA_DATA_DIR (../shared/data unless set), passed as data_dir=
needs_data = pytest.mark.skipif(not (DATA / "prosqa").is_dir(), reason=f"ProsQA not found at {DATA / 'prosqa'}")
SIZES = {"valid": 300, "test": 500}


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAVA_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def public() -> dict[str, list[dict]]:
    if not (DATA / "prosqa").is_dir():
        pytest.skip(f"ProsQA not found at {DATA / 'prosqa'}")
    return {s: json.loads((DATA / "prosqa" / f"{s}.json").read_text(encoding="utf-8")) for s in SIZES}


@pytest.fixture(scope="module")
def generated(public) -> list[dict]:
    return list(generate_rows(2000, seed=0, exclude=public["valid"] + public["test"]))


# ------------------------------------------------------------------ an independent reading of a row

_FACT = re.compile(r"^(?:Every (\w+)|([A-Z]\w*)) is a (\w+)\.$")


def _distances(n: int, edges, source: int) -> dict[int, int]:
    children = [[] for _ in range(n)]
    for a, b in edges:
        children[a].append(b)
    dist, queue = {source: 0}, deque([source])
    while queue:
        x = queue.popleft()
        for y in children[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


def assert_problem(row: dict) -> None:
    """What a ProsQA problem means, checked without `kava.data.prosqa`: the steps walk edges of the
    row's graph from root to target (a shortest path); target is reachable from root, neg_target
    is not, but from the other question person; the question states the edges and offers both."""
    sym, edges, root, target, neg = (row[k] for k in ("idx_to_symbol", "edges", "root", "target", "neg_target"))
    n = len(sym)
    index = {s: i for i, s in enumerate(sym)}
    assert len(index) == n  # no name twice
    edge_set = {tuple(e) for e in edges}
    assert len(edge_set) == len(edges) and all(a < b for a, b in edge_set)  # topological indices
    at = root
    for step in row["steps"]:
        m = _FACT.match(step)
        assert m, step
        src, dst = index[m.group(1) or m.group(2)], index[m.group(3)]
        assert src == at and (src, dst) in edge_set, (step, row["question"])
        at = dst
    assert at == target
    from_root = _distances(n, edge_set, root)
    assert from_root[target] == len(row["steps"])
    assert neg not in from_root
    assert root in (0, 1) and neg in _distances(n, edge_set, 1 - root) and target not in _distances(n, edge_set, 1 - root)
    head, _, tail = row["question"].rpartition(" Is ")
    assert tail in (f"{sym[root]} a {sym[target]} or {sym[neg]}?", f"{sym[root]} a {sym[neg]} or {sym[target]}?")
    stated = set()
    for sentence in re.findall(r"[^.]+\.", head):
        m = _FACT.match(sentence.strip())
        stated.add((index[m.group(1) or m.group(2)], index[m.group(3)]))
    assert stated == edge_set
    assert row["answer"] == f"{sym[root]} is a {sym[target]}."


# ------------------------------------------------------------------ public rows

@needs_data
@pytest.mark.parametrize("split", sorted(SIZES))
def test_every_public_row_loads_through_the_registry(split: str, public) -> None:
    data = load_dataset("prosqa", split, data_dir=DATA)
    assert len(data) == SIZES[split] and data.skipped == 0
    for record, row in zip(data, public[split]):
        assert record.question == row["question"] and record.steps == tuple(row["steps"])
        assert record.answer == row["answer"] and record.answer_kind == "concept"
        target, neg = row["idx_to_symbol"][row["target"]], row["idx_to_symbol"][row["neg_target"]]
        assert set(record.options) == {target, neg} and record.question.endswith(f"{record.options[0]} or {record.options[1]}?")
        assert grade(record, record.answer).correct and grade(record, target).correct and not grade(record, neg).correct


@needs_data
def test_every_public_row_means_what_prosqa_says(public) -> None:
    rows = public["valid"] + public["test"]
    for row in rows:
        assert_problem(row)
    assert len(rows) == 800


# ------------------------------------------------------------------ generator

def test_generated_rows_are_problems_and_never_public(public, generated) -> None:
    for row in generated:
        assert_problem(row)
        prosqa_record(row)  # and the loader's own check
    keys = {problem_key(r) for r in public["valid"] + public["test"]}
    questions = {r["question"] for r in public["valid"] + public["test"]}
    assert all(problem_key(r) not in keys and r["question"] not in questions for r in generated)
    assert len({problem_key(r) for r in generated}) == len(generated)
    people = {s for r in generated for s in r["idx_to_symbol"] if s[0].isupper()}
    concepts = {s for r in generated for s in r["idx_to_symbol"] if not s[0].isupper()}
    public_words = {s for r in public["valid"] + public["test"] for s in r["idx_to_symbol"]}
    assert people == set(PEOPLE) and concepts == set(CONCEPTS) and people | concepts == public_words


def test_generated_statistics_fall_within_the_public_ranges(public, generated) -> None:
    def numbers(rows):
        return {"nodes": [len(r["idx_to_symbol"]) for r in rows], "edges": [len(r["edges"]) for r in rows],
                "steps": [len(r["steps"]) for r in rows],
                "people": [sum(s[0].isupper() for s in r["idx_to_symbol"]) for r in rows]}
    pub, gen = numbers(public["valid"] + public["test"]), numbers(generated)
    for key in pub:
        assert min(pub[key]) <= min(gen[key]) and max(gen[key]) <= max(pub[key]), key
    assert abs(statistics.fmean(gen["nodes"]) - statistics.fmean(pub["nodes"])) < 0.5
    assert abs(statistics.fmean(gen["edges"]) - statistics.fmean(pub["edges"])) < 2.0
    assert abs(statistics.fmean(gen["steps"]) - statistics.fmean(pub["steps"])) < 0.15
    assert abs(statistics.fmean(gen["people"]) - statistics.fmean(pub["people"])) < 0.15
    first = [r["question"].endswith(f"a {r['idx_to_symbol'][r['target']]} or {r['idx_to_symbol'][r['neg_target']]}?")
             for r in generated]
    assert 0.46 < statistics.fmean(first) < 0.54
    assert set(gen["steps"]) == set(pub["steps"]) == {3, 4, 5, 6}


def test_generator_is_seeded_and_leaves_out_what_it_is_told() -> None:
    a = list(generate_rows(30, seed=7))
    assert a == list(generate_rows(30, seed=7)) and a != list(generate_rows(30, seed=8))
    without_first = list(generate_rows(29, seed=7, exclude=[a[0]]))
    assert without_first[:28] == a[1:29]
    # A public problem stated in another fact order is the same problem.
    shuffled = copy.deepcopy(a[3])
    head, _, tail = shuffled["question"].rpartition(" Is ")
    facts = re.findall(r"[^.]+\.", head)
    shuffled["question"] = " ".join(f.strip() for f in reversed(facts)) + " Is " + tail
    assert problem_key(shuffled) == problem_key(a[3])
    assert problem_key(a[3]) not in {problem_key(r) for r in generate_rows(30, seed=7, exclude=[shuffled])}


@needs_data
def test_the_train_split_is_generated_without_public_problems(public) -> None:
    data = load_dataset("prosqa", "train", data_dir=DATA, limit=200)
    assert len(data) == 200 and "generated ProsQA (seed 0)" in data.source
    assert [r.question for r in data] == [r["question"] for r in generate_rows(200, 0, exclude=public["valid"] + public["test"])]
    assert all(r.answer_kind == "concept" and len(r.steps) >= 3 for r in data)
    with pytest.raises(DatasetNotFoundError, match="needs the data folder"):
        load_dataset("prosqa", "train", limit=5)


@pytest.mark.parametrize("knob, value", [("nodes_min", 2), ("nodes_max", 41), ("steps_min", 0), ("steps_max", 2),
                                         ("mean_parents", 0.5), ("cross", 0.9), ("recency", -1.0), ("edges_max", 10)])
def test_a_knob_out_of_range_is_one_line_naming_it(knob: str, value) -> None:
    with pytest.raises(ValueError) as info:
        ProsQAKnobs(**{knob: value})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"ProsQA generator: {knob} must be")
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        list(generate_rows(-1))


def test_other_knobs_change_the_problems() -> None:
    rows = list(generate_rows(100, seed=1, knobs=ProsQAKnobs(nodes_min=10, nodes_max=12, nodes_mean=11, steps_min=2,
                                                                  steps_max=3)))
    assert all(10 <= len(r["idx_to_symbol"]) <= 12 and 2 <= len(r["steps"]) <= 3 for r in rows)
    for row in rows:
        prosqa_record(row)


# ------------------------------------------------------------------ answer check

RECORD = Record("Every wumpus is a rompus. Tom is a wumpus. Is Tom a rompus or scrompus?",
                ("Tom is a wumpus.", "Every wumpus is a rompus."), "Tom is a rompus.", "concept",
                options=("rompus", "scrompus"))


@pytest.mark.parametrize("text, right, read", [
    ("Tom is a rompus.", True, "rompus"),
    ("rompus", True, "rompus"),
    (" Rompus", True, "rompus"),
    ("TOM IS A ROMPUS.", True, "rompus"),
    ("Tom is a rompus. ### garbage 42 <eos>", True, "rompus"),
    ("Tom is a rompus.\nEvery rompus is a zumpus.", True, "rompus"),
    ("Tom is a scrompus.", False, "scrompus"),  # the wrong one; it ends with the right one's letters
    ("Tom is a rompus or scrompus.", False, None),  # both named
    ("Tom is a scrompus, not a rompus.", False, None),
    ("Tom is a rompuses.", False, None),  # a longer word sharing the right one's prefix
    ("Tom is a xrompus.", False, None),  # and one sharing its suffix
    ("rompus_2", False, None),
    ("", False, None),
    ("   ", False, None),
    ("Tom is a wumpus.", False, None),  # a concept of the graph that is not an option
])
def test_concept_answers(text: str, right: bool, read) -> None:
    graded = grade(RECORD, text)
    assert graded.correct is right and graded.answer == read
    assert graded.rule == {"rompus": "concept", "scrompus": "concept"}.get(read, graded.rule)


def test_concept_answer_rules_and_gold() -> None:
    assert extract_concept("rompus and scrompus", ("rompus", "scrompus")) == (None, "both")
    assert extract_concept("nothing", ("rompus", "scrompus")) == (None, "none")
    check_gold(RECORD)
    for bad in (Record("q?", answer="Tom is a zumpus.", answer_kind="concept", options=("rompus", "scrompus")),
                Record("q?", answer="Tom is a rompus or scrompus.", answer_kind="concept", options=("rompus", "scrompus")),
                Record("q?", answer="Tom is a rompus.", answer_kind="concept", options=("rompus",))):
        with pytest.raises(ValueError, match="must name exactly one of two concepts"):
            check_gold(bad)


# ------------------------------------------------------------------ malformed rows

GOOD = {"question": "Every wumpus is a rompus. Tom is a wumpus. Every yumpus is a scrompus. Bob is a yumpus. "
                    "Is Tom a rompus or scrompus?",
        "answer": "Tom is a rompus.", "steps": ["Tom is a wumpus.", "Every wumpus is a rompus."],
        "idx_to_symbol": ["Bob", "Tom", "wumpus", "yumpus", "rompus", "scrompus"],
        "edges": [[1, 2], [0, 3], [2, 4], [3, 5]], "root": 1, "target": 4, "neg_target": 5}


def _without(key: str) -> dict:
    row = dict(GOOD)
    del row[key]
    return row


@pytest.mark.parametrize("bad, message", [
    (_without("steps"), "missing field(s) 'steps'"),
    (_without("neg_target"), "missing field(s) 'neg_target'"),
    ({**GOOD, "root": "1"}, "field 'root' must be an integer node index, got str"),
    ({**GOOD, "target": 9}, "field 'target' = 9 is not a node index"),
    ({**GOOD, "steps": "Tom is a wumpus."}, "field 'steps' must be a non-empty list of strings"),
    ({**GOOD, "edges": [[1, 2], [0]]}, "field 'edges' must be a list of [from, to] node index pairs"),
    ({**GOOD, "steps": ["Tom is a wumpus.", "Every wumpus is a scrompus."]}, "field 'steps'[1] 'Every wumpus is a scrompus.' is not an edge"),
    ({**GOOD, "steps": ["Tom is a yumpus.", "Every yumpus is a rompus."]}, "field 'steps'[0] 'Tom is a yumpus.' is not an edge from 'Tom'"),
    ({**GOOD, "steps": ["Tom is a wumpus."]}, "field 'steps' ends at 'wumpus', not at target 'rompus'"),
    ({**GOOD, "answer": "Tom is a scrompus."}, "field 'answer' is 'Tom is a scrompus.'"),
    ({**GOOD, "question": GOOD["question"].replace("Is Tom", "Is Bob")}, "asks about 'Bob', but root is 'Tom'"),
    ({**GOOD, "question": GOOD["question"].replace(" Bob is a yumpus.", "")}, "does not state exactly the edges"),
    ({**GOOD, "question": GOOD["question"][:-1]}, "does not end with 'Is NAME a A or B?'"),
    ({**GOOD, "edges": GOOD["edges"] + [[2, 5]],
      "question": "Every wumpus is a scrompus. " + GOOD["question"]}, "neg_target 'scrompus' is reachable from root 'Tom'"),
])
def test_a_malformed_row_names_file_and_row(tmp_path: Path, bad: dict, message: str) -> None:
    path = tmp_path / "prosqa.json"
    path.write_text(json.dumps([GOOD, bad]), encoding="utf-8")
    with pytest.raises(DatasetFormatError) as info:
        load_dataset(str(path))
    assert str(info.value).startswith(f"{path} item 2: ") and message in str(info.value)
    kept = load_dataset(str(path), skip_bad=True)
    assert len(kept) == 1 and kept.skip_reasons[0].startswith(f"{path} item 2")


def test_a_good_row_file_is_detected_as_prosqa(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    (record,) = load_dataset(str(path))
    assert record.answer_kind == "concept" and record.options == ("rompus", "scrompus")
    assert record.steps == tuple(GOOD["steps"])
