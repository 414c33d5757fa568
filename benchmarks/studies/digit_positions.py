"""Which digits of the product does each run get right? (multiplication tasks, from the test predictions)

Exact-match accuracy hides how far a model is: a 4×4 product has 8 digits, written least significant
first in iCoT's format, and the lowest one is a single digit product (a0·b0 mod 10) while the middle
ones need every partial product and carry. For every run of a sweep folder this reads the test
predictions (``runs/<run>/eval/predictions.jsonl``) and prints, per answer position, the share of
questions whose digit there equals the gold one (a missing digit counts wrong), as a Markdown table,
then the same averaged over each method's seeds.

    python benchmarks/studies/digit_positions.py outputs/mult4 > docs/results/mult4/digit_positions.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def position_accuracy(predictions: Path) -> tuple[list[float], int]:
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{predictions}: no predictions")
    width = max(len(r["gold"].split()) for r in rows)
    hits = [0] * width
    for r in rows:
        gold, said = r["gold"].split(), (r.get("answer") or "").split()
        for i, g in enumerate(gold):
            hits[i] += i < len(said) and said[i] == g
    return [h / len(rows) for h in hits], len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a kava sweep / demo folder (runs/<run>/eval/predictions.jsonl)")
    args = ap.parse_args()
    table = []
    for run in sorted((args.sweep / "runs").iterdir()):
        pred = run / "eval" / "predictions.jsonl"
        if pred.is_file():
            acc, n = position_accuracy(pred)
            table.append((run.name, n, acc))
    if not table:
        raise SystemExit(f"{args.sweep}: no runs/*/eval/predictions.jsonl")
    width = max(len(a) for _, _, a in table)
    print("| run | questions | " + " | ".join(f"digit {i}" for i in range(width)) + " |")
    print("|---|---|" + "---|" * width)
    for name, n, acc in table:
        print(f"| {name} | {n} | " + " | ".join(f"{100 * a:.1f}" for a in acc) + " |")
    # The same by method, averaged over its seeds (runs named <method>-seed<S>): one seed's digit
    # shares swing by tens of points, so the method comparison reads the mean.
    by_method: dict[str, list[list[float]]] = {}
    for name, _, acc in table:
        by_method.setdefault(name.rsplit("-seed", 1)[0], []).append(acc + [0.0] * (width - len(acc)))
    print("\n| method | seeds | " + " | ".join(f"digit {i}" for i in range(width)) + " |")
    print("|---|---|" + "---|" * width)
    for method, runs in by_method.items():
        means = [sum(col) / len(runs) for col in zip(*runs)]
        print(f"| {method} | {len(runs)} | " + " | ".join(f"{100 * m:.1f}" for m in means) + " |")


if __name__ == "__main__":
    main()
