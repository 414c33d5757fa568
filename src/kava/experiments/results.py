"""The report over a folder of runs (``metrics.json`` per run: `kava sweep`'s, and `kava demo`'s,
which is a preset sweep), aggregated over seeds with `kava.experiments.reports`.

Nothing is skipped silently: a run folder without a valid metrics file, and a run the sweep
planned (``sweep.json``) that has no folder, is a *problem*, named on stderr and in the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kava.experiments.grid import BASE_VARIANT
from kava.experiments.method_pairs import method_pairs
from kava.experiments.method_pairs import section as pairs_section
from kava.experiments.paper import paper_accuracy, published_source
from kava.experiments.sweep import CONFIG_FILE, METRICS_FILE, PLAN_FILE, REQUIRED, read_metrics
from kava.methods import in_order

HISTORY = "history.jsonl"
# What a report may draw.
PLOTS = ("accuracy_vs_forward_passes.png", "learning_curves.png", "loss_curves.png", "ablation_bars.png",
         "paired_differences.png")


@dataclass
class RunResult:
    """One evaluated run, whichever tool made it."""

    name: str
    method: str
    seed: int
    variant: str
    knobs: dict[str, Any]
    summary: dict[str, Any]
    setting: dict[str, Any]
    history: Path | None  # the training history.jsonl, if kept
    curve: dict[str, Any] | None = None  # a demo run's learning curve: {seed, start_s, points}
    train_time_s: float | None = None  # training steps alone (evaluations excluded), across resumes
    curve_eval_time_s: float = 0.0
    summaries: dict[str, dict[str, Any]] | None = None  # a table run's summary per test set

    def on(self, test: str) -> "RunResult":
        """This run as tested on ``test`` (one of a table run's test sets)."""
        if not self.summaries or test not in self.summaries:
            raise ValueError(f"runs/{self.name} was not tested on {test}")
        return replace(self, summary=self.summaries[test], setting={**self.setting, "eval_data": test})

    @property
    def row(self) -> str:
        """The table row it belongs to: the method, and its variant if it is not the base recipe."""
        return self.method if self.variant == BASE_VARIANT else f"{self.method} [{self.variant}]"


@dataclass
class Collection:
    runs: list[RunResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # runs without valid metrics, by name
    notes: list[str] = field(default_factory=list)


def collect(runs_dir: str | Path) -> Collection:
    """Every run under ``<runs_dir>/runs/``; raises `FileNotFoundError` if there is no such folder."""
    root = Path(runs_dir) / "runs"
    if not root.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no runs/ folder (is it a kava sweep or kava demo output?)")
    found = Collection()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            found.runs.append(_read_run(folder))
        except ValueError as e:
            found.problems.append(f"runs/{folder.name}: {e}")
    plan = Path(runs_dir) / PLAN_FILE
    if plan.is_file():
        names = [r["name"] for r in json.loads(plan.read_text())["runs"]]
        found.problems += [f"runs/{n}: planned by the sweep but never started" for n in names if not (root / n).is_dir()]
        order = {n: i for i, n in enumerate(names)}
        found.runs.sort(key=lambda r: order.get(r.name, len(order)))
    else:
        methods = in_order()
        found.runs.sort(key=lambda r: (methods.index(r.method) if r.method in methods else len(methods),
                                       r.variant != BASE_VARIANT, r.name))
    return found


def _read_run(folder: Path) -> RunResult:
    """A run's record (``metrics.json``; a folder with only ``config.json`` is an unfinished run)."""
    if not (folder / METRICS_FILE).exists() and not (folder / CONFIG_FILE).exists():
        raise ValueError(f"no {METRICS_FILE}")
    m = read_metrics(folder)
    history = next((h for h in (folder / HISTORY, folder / "train" / HISTORY) if h.is_file()), None)
    curve = {"seed": m["seed"], "start_s": m.get("curve_start_s", 0.0), "points": m["curve"]} if m.get("curve") else None
    return RunResult(folder.name, m["method"], m["seed"], m["variant"], m["knobs"], m["summary"],
                     m.get("setting", {}), history, curve, m.get("train_time_s"), m.get("curve_eval_time_s", 0.0),
                     m.get("summaries"))


def write_report(runs_dir: str | Path, out: str | Path, test: str | None = None) -> tuple[Collection, dict[str, Any]]:
    """Tables (report.md, table.csv, table.tex), summary.json and the PNG plots of ``runs_dir`` in
    ``out``; returns what was collected and the aggregate (row → metric → {mean, std, n}).
    ``test``: a table's test set, the runs' results on it (`RunResult.on`)."""
    from kava.experiments.reports import (
        aggregate,
        breakdown_section,
        final_losses,
        format_table,
        plot_ablation_bars,
        plot_accuracy_vs_passes,
        plot_learning_curves,
        plot_loss_curves,
        plot_paired_differences,
        write_summary,
    )

    found = collect(runs_dir)
    if test is not None:
        found.runs = [r.on(test) for r in found.runs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[RunResult]] = {}
    for run in found.runs:
        rows.setdefault(run.row, []).append(run)
    agg = aggregate({row: [r.summary for r in runs] for row, runs in rows.items()}) if rows else {}
    paper = {row: paper_accuracy(runs[0].setting, runs[0].method, runs[0].knobs) for row, runs in rows.items()}
    paper = paper if any(v is not None for v in paper.values()) else None
    for row, runs in rows.items():
        agg[row]["seeds"] = sorted(r.seed for r in runs)
        agg[row]["paper_accuracy"] = paper.get(row) if paper else None
    histories = {row: [_history(r.history) for r in runs if r.history] for row, runs in rows.items()}
    histories = {row: h for row, h in histories.items() if h}
    curves = {row: [r.curve for r in runs if r.curve] for row, runs in rows.items()}
    curves = {row: c for row, c in curves.items() if c}
    plots = []
    if agg:
        plot_accuracy_vs_passes(agg, out / "accuracy_vs_forward_passes.png", title=f"{Path(runs_dir).name}")
        plots.append("accuracy_vs_forward_passes.png")
        if curves:
            plot_learning_curves(curves, out / "learning_curves.png", title="validation accuracy while training")
            plots.append("learning_curves.png")
        if histories:
            plot_loss_curves(histories, out / "loss_curves.png", title="training losses (mean over seeds)")
            plots.append("loss_curves.png")
        if any(r.variant != BASE_VARIANT for r in found.runs):
            plot_ablation_bars(agg, out / "ablation_bars.png", paper, title="accuracy by variant")
            plots.append("ablation_bars.png")
    losses = final_losses(histories)
    accuracy = _accuracy_by_method(rows)
    deltas = _paired(accuracy, order=list(rows))
    if any(d["n"] for d in deltas.values()):
        plot_paired_differences(deltas, out / "paired_differences.png", title="difference from the base, paired by seed")
        plots.append("paired_differences.png")
    for stale in set(PLOTS) - set(plots):  # an earlier report's plot in this folder would outlive its data
        (out / stale).unlink(missing_ok=True)
    tables = {style: format_table(agg, style, paper, counts=True) if agg else "" for style in ("markdown", "csv", "latex")}
    (out / "table.csv").write_text(tables["csv"] + "\n")
    (out / "table.tex").write_text(tables["latex"] + "\n")
    where = _runs_dir_from(out, runs_dir)
    md = [f"# Report: {Path(runs_dir).resolve().name}", "",
          f"{len(found.runs)} evaluated run(s), {len(rows)} row(s); mean ± std over seeds."]
    if paper:
        md.append(published_source(found.runs[0].setting))
    md += ["", tables["markdown"] or "(no evaluated runs)", ""]
    md += breakdown_section({row: [r.summary for r in runs] for row, runs in rows.items()})
    if deltas:
        md += _paired_section(deltas, paper)
    pairs = method_pairs(Path(runs_dir) / "runs", found.runs, test)
    md += pairs_section(pairs)
    spread = _spread(accuracy)
    if spread:
        md += _spread_section(spread)
    if any(losses.values()):
        md += _losses_section(losses, {row: len(h) for row, h in histories.items()})
    if found.problems:
        md += ["## Runs without valid metrics (not in the table)", "", *(f"- {p}" for p in found.problems), ""]
    if found.notes:
        md += ["## Notes", "", *(f"- {n}" for n in found.notes), ""]
    md += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    (out / "report.md").write_text("\n".join(md))
    for row, runs in rows.items():
        times = [r.train_time_s for r in runs if r.train_time_s is not None]
        if times:
            agg[row]["train_time_s"] = {"mean": sum(times) / len(times), "n": len(times)}
    timed = [r for r in found.runs if r.train_time_s is not None]
    write_summary(agg, out / "summary.json", {"runs_dir": where, "problems": found.problems,
                                               "train_time_all_runs_s": sum(r.train_time_s for r in timed),
                                               "curve_eval_time_all_runs_s": sum(r.curve_eval_time_s for r in timed),
                                               "learning_curves": curves,
                                               "notes": found.notes, "plots": plots,
                                               "paired_differences": deltas, "spread_test": spread,
                                               "method_pairs": pairs,
                                               "final_losses": losses})
    return found, agg


def _runs_dir_from(out: Path, runs_dir: str | Path) -> str:
    """``runs_dir`` as seen from the report's folder ``out`` (``.`` when they are one folder), so a
    committed report names no path of the machine that wrote it; the bare folder name when no
    relative path exists (another drive)."""
    runs = Path(runs_dir).resolve()
    try:
        return Path(os.path.relpath(runs, out.resolve())).as_posix()
    except ValueError:
        return runs.name


def _accuracy_by_method(rows: dict[str, list[RunResult]]) -> dict[str, dict[str, dict[int, float]]]:
    """method → row → seed → accuracy, for the methods that have a base row and a variant."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for row, runs in rows.items():
        out.setdefault(runs[0].method, {})[row] = {r.seed: float(r.summary["accuracy"]) for r in runs}
    return {m: acc for m, acc in out.items() if m in acc and len(acc) > 1}


def _paired(accuracy: dict[str, dict[str, dict[int, float]]], order: list[str]) -> dict[str, dict[str, Any]]:
    """Every variant row's accuracy minus its method's base row, seed by seed (`paired_differences`),
    in the table's ``order``; ``accuracy`` is `_accuracy_by_method`'s."""
    from kava.experiments.reports import paired_differences

    out: dict[str, dict[str, Any]] = {}
    for method, by_row in accuracy.items():
        out.update(paired_differences(by_row, base=method))
    return {row: out[row] for row in order if row in out}


def _spread(accuracy: dict[str, dict[str, dict[int, float]]]) -> dict[str, dict[str, Any]]:
    """method → `spread_test` over its rows that have every seed of its base row (the others are
    listed under ``left_out``); a method whose base has one seed, or no variant with all of them,
    gets only ``left_out`` and a ``reason``."""
    from kava.experiments.reports import spread_test

    out: dict[str, dict[str, Any]] = {}
    for method, by_row in accuracy.items():
        seeds = set(by_row[method])
        complete = {row: {s: a[s] for s in sorted(seeds)} for row, a in by_row.items() if seeds <= set(a)}
        left_out = [row for row in by_row if row not in complete]
        if len(seeds) < 2 or len(complete) < 2:
            out[method] = {"left_out": left_out,
                           "reason": f"needs 2 or more seeds in the base row and a variant with all of them "
                                     f"(base seeds {sorted(seeds)}, rows with all: {len(complete)})"}
        else:
            out[method] = {**spread_test(complete), "rows": list(complete), "left_out": left_out}
    return out


def _spread_section(spread: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown for `_spread`: one line per method."""
    lines = ["## Do the rows differ by more than the noise?", "",
             "F of the two-way (row + seed) model over a method's rows that have every seed of its base; p: the "
             "share of within-seed shuffles of the accuracies (no row effect) with an F as large. The residual "
             "std is one run's noise: what moves a run's accuracy that neither its row nor its seed explains.", ""]
    for method, t in spread.items():
        if "F" not in t:
            lines.append(f"- {method}: not tested — {t['reason']}")
            continue
        n_rows = len(t["rows"])
        lines += [f"- {method}: {n_rows} rows × seeds {', '.join(map(str, t['seeds']))}: "
                  f"F = {t['F']:.2f} ({t['df'][0]}, {t['df'][1]} df), p = {t['p']:.3f} "
                  f"({t['permutations']} shuffles); residual std {100 * t['residual_std']:.1f} points"
                  + (f"; left out (missing a seed): {', '.join(t['left_out'])}" if t["left_out"] else ""), "",
                  f"  Each row's effect: its mean minus the mean of all {n_rows} rows, each seed's shift removed "
                  f"(standard error {100 * t['effect_se']:.1f} points).", "",
                  "  | row | effect (points) |", "  |---|---|",
                  *(f"  | {row} | {100 * t['effects'][row]:+.1f} |" for row in t["rows"]), ""]
    return lines + [""]


def _paired_section(deltas: dict[str, dict[str, Any]], paper: dict[str, float | None] | None) -> list[str]:
    """The Markdown table of `_paired`, with the paper's difference where both rows have a paper number."""
    def paper_delta(row: str) -> str:
        base = row.split(" [", 1)[0]
        if not paper or paper.get(row) is None or paper.get(base) is None:
            return "—"
        return f"{paper[row] - paper[base]:+.1f}"

    lines = ["## Difference from the base recipe, paired by seed", "",
             "Each variant run minus the base run of the same seed (same start model, same data order), "
             "in accuracy points: mean ± std over the seeds both have.", "",
             "| variant | paired seeds | Δ accuracy (points) | paper Δ |", "|---|---|---|---|"]
    for row, d in deltas.items():
        if d["n"] == 0:
            cell = "— (no seed shared with the base)"
        else:
            cell = f"{100 * d['mean']:+.1f}" + (f" ± {100 * d['std']:.1f}" if d["n"] > 1 else "")
        lines.append(f"| {row} | {', '.join(map(str, d['seeds'])) or 'none'} | {cell} | {paper_delta(row)} |")
    return lines + [""]


def _losses_section(losses: dict[str, dict[str, float]], seeds: dict[str, int]) -> list[str]:
    """The Markdown table of `kava.experiments.reports.final_losses`: one column per term some row logged."""
    from kava.experiments.reports import BASELINES, LOSS_TERMS, RATIOS

    cols = [k for k in (*LOSS_TERMS, *BASELINES.values(), *RATIOS.values()) if any(k in v for v in losses.values())]
    lines = ["## Training losses at the end (each run's last 10 % of logged steps, mean over seeds)", "",
             "`kv_vs_baseline`: L_KV over the L_KV of a student that outputs the mean target; under 1, the "
             "student learnt more than the mean (the L_KV values themselves do not compare across eviction "
             "rules and KV losses).", "",
             "| row | runs | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for row, v in losses.items():
        lines.append(f"| {row} | {seeds[row]} | " + " | ".join(f"{v[k]:.3f}" if k in v else "—" for k in cols) + " |")
    return lines + [""]


def _history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
