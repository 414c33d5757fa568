"""ProsQA's public splits beside a generated sample: the statistics the generator is matched to.

Prints one Markdown table (mean, min-max) of every number `kava.data.prosqa.row_stats` reads
from a problem, for the public valid and test splits and for `--count` problems of the generator
(seed `--seed`, the public problems left out), then the distributions of the path length, the
number of people and nodes, and the vocabulary (names and concept words, and how the words are
formed).

    python benchmarks/prosqa_stats.py --data-dir ../shared/data          # prints the tables
    python benchmarks/prosqa_stats.py --out docs/bench/prosqa_stats.md    # and writes them

The public files are read from ``--data-dir``, else ``$KAVA_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from kava.data.datasets import named_data_dir
from kava.data.prosqa import check_row, generate_rows, row_stats


def _summary(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    lo, hi = min(values), max(values)
    fmt = (lambda v: f"{v:.0f}") if all(float(v).is_integer() for v in values) else (lambda v: f"{v:.2f}")
    return f"{statistics.fmean(values):.2f} ({fmt(lo)} to {fmt(hi)})"


def _distribution(values: list[float]) -> str:
    counts = Counter(int(v) for v in values if not math.isnan(v))
    return ", ".join(f"{k}: {100 * c / len(values):.1f} %" for k, c in sorted(counts.items()))


def _words(rows: list[dict]) -> tuple[set[str], set[str]]:
    people, concepts = set(), set()
    for row in rows:
        for s in row["idx_to_symbol"]:
            (people if s[:1].isupper() else concepts).add(s)
    return people, concepts


def tables(splits: dict[str, list[dict]]) -> str:
    names = list(splits)
    stats = {name: [row_stats(r) for r in rows] for name, rows in splits.items()}
    keys = list(next(iter(stats.values()))[0])
    lines = ["| statistic | " + " | ".join(f"{n} ({len(splits[n]):,})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_summary([s[key] for s in stats[n]]) for n in names) + " |")
    lines += ["", "Distributions (share of problems):", "",
              "| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ("steps", "people", "nodes", "neg_target distance - steps"):
        lines.append(f"| {key} | " + " | ".join(_distribution([s[key] for s in stats[n]]) for n in names) + " |")
    lines += ["", "Vocabulary:", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    words = {n: _words(rows) for n, rows in splits.items()}
    public_people = set().union(*(words[n][0] for n in names if n != "generated"))
    public_concepts = set().union(*(words[n][1] for n in names if n != "generated"))
    rows_out = {
        "person names": lambda p, c: f"{len(p)}",
        "names outside the public files": lambda p, c: f"{len(p - public_people)}",
        "concept words": lambda p, c: f"{len(c)}",
        "words outside the public files": lambda p, c: f"{len(c - public_concepts)}",
        "words ending in 'pus'": lambda p, c: f"{sum(w.endswith('pus') for w in c)}",
        "word length": lambda p, c: f"{min(map(len, c))}–{max(map(len, c))}",
        "onsets (letters before the first vowel)":
            lambda p, c: f"{len({re.match(r'[^aeiou]*', w).group(0) for w in c})}",
    }
    for label, fn in rows_out.items():
        lines.append(f"| {label} | " + " | ".join(fn(*words[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding prosqa/{valid,test}.json (else $KAVA_DATA_DIR)")
    parser.add_argument("--count", type=int, default=2000, help="generated problems (default 2,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    folder = named_data_dir(args.data_dir)
    if folder is None:
        parser.error("name the data folder: --data-dir or $KAVA_DATA_DIR")
    splits = {name: json.loads((folder / "prosqa" / f"{name}.json").read_text(encoding="utf-8"))
              for name in ("valid", "test")}
    for rows in splits.values():
        for row in rows:
            check_row(row)
    t0 = time.perf_counter()
    generated = list(generate_rows(args.count, args.seed, exclude=splits["valid"] + splits["test"]))
    seconds = time.perf_counter() - t0
    splits["generated"] = generated
    text = (f"# ProsQA: public splits and the generator\n\n"
            f"`python benchmarks/prosqa_stats.py --count {args.count} --seed {args.seed}`: the public valid and "
            f"test splits (Coconut's `data/prosqa_{{valid,test}}.json`) beside {args.count:,} problems of "
            f"`kava.data.prosqa.generate_rows` (seed {args.seed}, default knobs, the public problems left out; "
            f"generated in {seconds:.1f} s). Mean (min to max) per problem; 'reachable' counts concepts; "
            f"'neg_target distance - steps' is the wrong concept's distance from the other person minus "
            f"the path length.\n\n" + tables(splits))
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
