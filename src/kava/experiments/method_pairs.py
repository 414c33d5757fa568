"""KaVa against the methods it must beat (PCCoT: the same latents without L_KV; CODI: one-token
distillation), paired by seed and by test question, with 95 % intervals.

Why paired: two methods' runs of one seed start from the same CoT model and answer the same test
questions, so their difference cancels what the seed and the question do to both; the accuracies'
spreads alone mix those into the comparison. Two intervals, because they answer two questions:

- **over seeds** (Student's t on the per-seed differences, n − 1 degrees of freedom): would the
  difference hold for another training seed on these questions? Needs ≥ 2 seeds.
- **over seeds and questions** (a paired two-level bootstrap: resample the seeds, then within each
  the questions, the two methods' answers to a question kept together): would it hold for another
  seed *and* another draw of test questions? With one seed it is the question-level interval.

Reads each run's ``eval/predictions.jsonl`` (its per-question ``correct``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# (method, the method it is compared with): the KaVa − PCCoT and KaVa − CODI.
PAIRS = (("kava", "pccot"), ("kava", "codi"))
PREDICTIONS = Path("eval") / "predictions.jsonl"
BOOTSTRAP = 4000


# Student's t 97.5 % quantiles for 1-30 degrees of freedom (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5 % quantile: the table to 30 degrees of freedom, then the Cornish-Fisher
    expansion to second order, z + (z³ + z)/4df + (5z⁵ + 16z³ + 3z)/96df² (within 0.001 from 30 on)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def scores(run_folder: str | Path, test: str | None = None) -> dict[str, dict[int, float]]:
    """Per-question scores from a run's test predictions: ``exact`` (1 for a correct answer, else 0)
    and, when every answer is a digit sequence (multiplication), ``digits``: the share of the gold
    answer's digits said at their position (exact match is 0 for every method short of the task's
    end, so the digits are where methods differ). ``test``: a table run's test set (its own folder)."""
    path = predictions(run_folder, test)
    exact, digits = {}, {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q = int(row["index"])
            exact[q] = float(bool(row["correct"]))
            if row.get("answer_kind") == "digits":
                gold, said = row["gold"].split(), (row.get("answer") or "").split()
                digits[q] = sum(i < len(said) and said[i] == g for i, g in enumerate(gold)) / len(gold)
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
            raise ValueError(f"{path}: line {n} is not a prediction with index and correct ({e})") from None
    return {"exact": exact, **({"digits": digits} if digits and len(digits) == len(exact) else {})}


def paired_difference(a: dict[int, dict[int, float]], b: dict[int, dict[int, float]],
                      resamples: int = BOOTSTRAP, rng_seed: int = 0) -> dict[str, Any]:
    """Mean score of ``a`` minus ``b`` (seed → question → score in [0, 1]), over the seeds both have and, per
    seed, the questions both answered; the mean, the per-seed differences and both 95 % intervals
    (module docstring). Raises ValueError when they share no seed or a seed shares no question."""
    import numpy as np

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two methods share no seed")
    diffs, per_seed = [], {}
    for s in seeds:
        questions = sorted(set(a[s]) & set(b[s]))
        if not questions:
            raise ValueError(f"seed {s}: the two runs share no test question")
        d = np.array([float(a[s][q]) - float(b[s][q]) for q in questions])
        diffs.append(d)
        per_seed[s] = float(d.mean())
    values = np.array(list(per_seed.values()))
    mean = float(values.mean())
    out: dict[str, Any] = {"mean": mean, "seeds": seeds, "per_seed": per_seed,
                           "questions": [len(d) for d in diffs], "ci95_seeds": None}
    if len(seeds) >= 2:
        half = float(t975(len(seeds) - 1) * values.std(ddof=1) / math.sqrt(len(seeds)))
        out["ci95_seeds"] = [mean - half, mean + half]
    rng = np.random.default_rng(rng_seed)
    boot = np.zeros(resamples)
    for _ in range(len(seeds)):  # each resample draws len(seeds) seeds with replacement
        picked = rng.integers(0, len(seeds), resamples)
        for i, d in enumerate(diffs):
            rows = np.flatnonzero(picked == i)
            if rows.size:
                boot[rows] += d[rng.integers(0, len(d), (rows.size, len(d)))].mean(axis=1)
    boot /= len(seeds)
    out["ci95_bootstrap"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    return out


def predictions(run_folder: str | Path, test: str | None = None) -> Path:
    """A run's test predictions: ``eval/predictions.jsonl``, or a table run's ``eval/<test>/``."""
    return Path(run_folder) / (PREDICTIONS if test is None else PREDICTIONS.parent / test / PREDICTIONS.name)


def method_pairs(runs_root: str | Path, runs: list[Any], test: str | None = None) -> dict[str, dict[str, Any]]:
    """``"kava − pccot"`` → `paired_difference` for each pair of `PAIRS` whose base-recipe runs are
    among ``runs`` (`kava.experiments.results.RunResult`, their folders under ``runs_root``;
    ``test``: a table's test set)."""
    from kava.experiments.grid import BASE_VARIANT

    by_method: dict[str, dict[int, str]] = {}
    for r in runs:
        if r.variant == BASE_VARIANT:
            by_method.setdefault(r.method, {})[r.seed] = r.name
    out = {}
    for first, second in PAIRS:
        if first in by_method and second in by_method:
            folders = {m: {s: Path(runs_root) / name for s, name in by_method[m].items()} for m in (first, second)}
            missing = sorted(f"runs/{f.name}" for m in folders.values() for f in m.values()
                             if not predictions(f, test).is_file())
            if missing:  # said in the report, not skipped silently
                out[f"{first} − {second}"] = {"missing": missing}
                continue
            read = {m: {s: scores(f, test) for s, f in by_seed.items()} for m, by_seed in folders.items()}
            for measure in ("exact", "digits"):
                if all(measure in by_seed for m in read.values() for by_seed in m.values()):
                    out[f"{first} − {second}" + ("" if measure == "exact" else " (digits)")] = paired_difference(
                        *({s: v[measure] for s, v in read[m].items()} for m in (first, second)))
    return out


def section(pairs: dict[str, dict[str, Any]]) -> list[str]:
    """The report's markdown for `method_pairs`."""
    if not pairs:
        return []

    def pct(x: float) -> str:
        return f"{100 * x:+.1f}"

    def interval(ci: list[float] | None) -> str:
        return "— (one seed)" if ci is None else f"[{pct(ci[0])}, {pct(ci[1])}]"

    lines = ["## KaVa against PCCoT and CODI, paired by seed and question", "",
             "Accuracy difference in points, on the test questions both runs of a seed answered; (digits): the share "
             "of the product's digits right at their position, where exact match cannot tell methods apart. Intervals (95 %): "
             "over seeds, Student's t on the per-seed differences; over seeds and questions, a paired two-level "
             "bootstrap (`kava.experiments.method_pairs`).", "",
             "| pair | seeds | questions per seed | difference | over seeds | over seeds and questions | per seed |",
             "|---|---|---|---|---|---|---|"]
    for name, p in pairs.items():
        if "missing" in p:
            lines.append(f"| {name} | not paired: no test predictions in {', '.join(p['missing'])} | | | | | |")
            continue
        per_seed = ", ".join(f"{s}: {pct(v)}" for s, v in p["per_seed"].items())
        questions = sorted(set(p["questions"]))
        lines.append(f"| {name} | {len(p['seeds'])} | {', '.join(map(str, questions))} | {pct(p['mean'])} | "
                     f"{interval(p['ci95_seeds'])} | {interval(p['ci95_bootstrap'])} | {per_seed} |")
    return [*lines, ""]
