"""Results across methods and seeds: aggregation, tables (Markdown, CSV, LaTeX), a JSON summary and plots.

Input is one evaluation summary per (method, seed) — the ``summary`` dict that
``kava.evaluation.evaluate`` writes — so the same report serves the CPU demo and paper-style
multi-seed runs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kava.losses import TERMS

# (summary key, report name) of the per-run quantities aggregated across seeds.
METRICS = (
    ("accuracy", "accuracy"),
    ("mean_forward_passes", "forward_passes"),
    ("mean_generated_tokens", "generated_tokens"),
    ("mean_cache_tokens", "kv_cache_tokens"),
    ("mean_latency_s", "latency_s"),
)


def _stats(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def aggregate(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """method → {metric: {mean, std, n}} over its seeds; metrics missing from a run are an error."""
    out: dict[str, dict[str, Any]] = {}
    for method, summaries in runs.items():
        if not summaries:
            raise ValueError(f"method {method!r} has no runs")
        row: dict[str, Any] = {}
        for key, name in METRICS:
            missing = [i for i, s in enumerate(summaries) if key not in s]
            if missing:
                raise KeyError(f"method {method!r}: run(s) {missing} lack {key!r}")
            row[name] = _stats([float(s[key]) for s in summaries])
        out[method] = row
    return out


def paired_differences(accuracy: Mapping[str, Mapping[int, float]], base: str) -> dict[str, dict[str, Any]]:
    """row → {mean, std, n, seeds} of (row − ``base``) accuracy over the seeds both rows have.

    ``accuracy``: row → seed → accuracy. An ablation's runs of one seed start from the same model
    and see the same data order, so the difference from that seed's base run cancels what the
    seed does to both; a row's spread over seeds alone mixes that into every variant. A row that
    shares no seed with the base has n = 0 and no mean.
    """
    if base not in accuracy:
        raise KeyError(f"no base row {base!r} to pair with")
    out: dict[str, dict[str, Any]] = {}
    for row, by_seed in accuracy.items():
        if row == base:
            continue
        seeds = sorted(set(by_seed) & set(accuracy[base]))
        diffs = [by_seed[s] - accuracy[base][s] for s in seeds]
        out[row] = {**(_stats(diffs) if diffs else {"mean": None, "std": None, "n": 0}), "seeds": seeds}
    return out


def spread_test(accuracy: Mapping[str, Mapping[int, float]], permutations: int = 10_000,
                seed: int = 0) -> dict[str, Any]:
    """Do the rows differ by more than the noise? An F statistic of the two-way (row + seed) model
    and its permutation p-value.

    A small ablation grid's rows differ by a few points whatever the knobs do; this asks whether
    the spread between rows is larger than the spread a run shows anyway (the residual: what
    neither the row nor the seed explains). Under "no row differs", one seed's accuracies are
    exchangeable among the rows, so shuffling them within each seed gives the statistic's null
    distribution with no normality assumed: p = (1 + shuffles with F ≥ observed) / (1 + shuffles).
    ``accuracy``: row → seed → accuracy, every row with the same seeds (≥ 2 rows, ≥ 2 seeds).
    Returns F, its degrees of freedom, p, the residual std (one run's noise), each row's effect
    (its mean minus the grid's, the seeds' shifts removed) and the effects' standard error.
    """
    import numpy as np

    rows = list(accuracy)
    seeds = sorted(accuracy[rows[0]]) if rows else []
    for row in rows:
        if sorted(accuracy[row]) != seeds:
            raise ValueError(f"row {row!r} has seeds {sorted(accuracy[row])}, not {seeds} like {rows[0]!r}")
    if len(rows) < 2 or len(seeds) < 2:
        raise ValueError(f"need at least 2 rows and 2 seeds, got {len(rows)} row(s) and {len(seeds)} seed(s)")
    x = np.array([[accuracy[r][s] for s in seeds] for r in rows], dtype=np.float64)
    n_rows, n_seeds = x.shape
    df_rows, df_res = n_rows - 1, (n_rows - 1) * (n_seeds - 1)

    def f_and_parts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centred = a - a.mean(axis=-2, keepdims=True)  # each seed's shift removed
        effects = centred.mean(axis=-1)
        ms_rows = n_seeds * (effects ** 2).sum(axis=-1) / df_rows
        ms_res = ((centred - effects[..., None]) ** 2).sum(axis=(-2, -1)) / df_res
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(ms_rows > 0, ms_rows / ms_res, 0.0)  # no spread at all: F = 0, not 0/0
        return f, effects, ms_res

    f, effects, ms_res = f_and_parts(x)
    shuffled = np.random.default_rng(seed).permuted(np.broadcast_to(x, (permutations, *x.shape)), axis=1)
    f_null, _, _ = f_and_parts(shuffled)
    at_least = int((f_null >= f * (1 - 1e-9)).sum())  # ties (a relabelling of the same grid) count
    return {"F": float(f), "df": [df_rows, df_res], "p": (1 + at_least) / (1 + permutations),
            "permutations": permutations, "seeds": seeds, "residual_std": float(np.sqrt(ms_res)),
            "effects": {r: float(e) for r, e in zip(rows, effects)},
            "effect_se": float(np.sqrt(ms_res * (n_rows - 1) / (n_rows * n_seeds)))}


# (report name, column heading, number format, scale) of the table's columns, in order.
COLUMNS = (
    ("accuracy", "accuracy %", ".1f", 100.0),
    ("forward_passes", "forward passes / question", ".1f", 1.0),
    ("generated_tokens", "generated tokens", ".1f", 1.0),
    ("kv_cache_tokens", "KV-cache tokens", ".1f", 1.0),
    ("latency_s", "latency ms / question", ".1f", 1000.0),
)


def format_table(agg: Mapping[str, Mapping[str, Any]], style: str = "markdown",
                 paper: Mapping[str, float | None] | None = None, counts: bool = False) -> str:
    """The results table, one row per method (or method and variant): mean ± std over seeds.

    ``style``: ``markdown`` (reads fine in a terminal too), ``csv`` (mean and std in columns of
    their own, for other tools) or ``latex`` (a tabular). ``paper``: row → the paper's accuracy
    (%), set beside ours (None: no paper setting). ``counts``: a column with the number of seeds.
    """
    if style not in ("markdown", "csv", "latex"):
        raise ValueError(f"unknown table style {style!r}")
    heads = ["method", *(["seeds"] if counts else []), *(c[1] for c in COLUMNS), *(["paper accuracy %"] if paper else [])]
    if style == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", *(["seeds"] if counts else []),
                         *(f"{name}_{part}" for name, *_ in COLUMNS for part in ("mean", "std")),
                         *(["paper_accuracy"] if paper else [])])
        for method, r in agg.items():  # unscaled, as named: accuracy a fraction, latency in seconds
            values = [v for name, *_ in COLUMNS for v in (r[name]["mean"], r[name]["std"])]
            ref = paper.get(method) if paper else None
            writer.writerow([method, *([r["accuracy"]["n"]] if counts else []), *(f"{v:.6g}" for v in values),
                             *(["" if ref is None else f"{ref / 100:.3f}"] if paper else [])])
        return buf.getvalue().rstrip("\n")

    pm = " $\\pm$ " if style == "latex" else " ± "

    def cell(stat: Mapping[str, float], fmt: str, scale: float) -> str:
        m, s = stat["mean"] * scale, stat["std"] * scale
        return f"{m:{fmt}}{pm}{s:{fmt}}" if stat["n"] > 1 else f"{m:{fmt}}"

    rows = [[method, *([str(r["accuracy"]["n"])] if counts else []),
             *(cell(r[name], fmt, scale) for name, _, fmt, scale in COLUMNS),
             *([_or_blank(paper.get(method), "—" if style == "markdown" else "--")] if paper else [])]
            for method, r in agg.items()]
    if style == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    esc = lambda text: text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")  # noqa: E731
    lines = ["\\begin{tabular}{l" + "r" * (len(heads) - 1) + "}", "\\toprule",
             " & ".join(esc(h) for h in heads) + " \\\\", "\\midrule"]
    lines += [" & ".join([esc(row[0]), *row[1:]]) + " \\\\" for row in rows]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])


def breakdown_section(summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Markdown for the report: accuracy per MATH subject and level, and AQuA's option counts, per row.

    ``summaries``: row → its runs' evaluation summaries. Accuracy per group is the mean over the
    row's seeds (the number of questions per group beside it); rows without such breakdowns
    (numeric datasets) add nothing.
    """
    lines: list[str] = []
    for key in ("subject", "level"):
        table = {row: [s[f"by_{key}"] for s in runs if f"by_{key}" in s] for row, runs in summaries.items()}
        table = {row: groups for row, groups in table.items() if groups}
        if not table:
            continue
        names = sorted({name for groups in table.values() for g in groups for name in g})
        lines += [f"## Accuracy by {key} (%, mean over seeds; questions in brackets)", "",
                  "| row | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for row, groups in table.items():
            cells = []
            for name in names:
                hits = [g[name] for g in groups if name in g]
                cells.append(f"{100 * statistics.fmean(h['accuracy'] for h in hits):.1f} ({hits[0]['n']})" if hits else "—")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    options = {row: [s["options"] for s in runs if "options" in s] for row, runs in summaries.items()}
    options = {row: o for row, o in options.items() if o}
    if options:
        letters = sorted({k for o in options.values() for run in o for k in (*run["predicted"], *run["gold"])})
        lines += ["## Multiple choice: predicted option counts (summed over seeds; gold in brackets)", "",
                  "| row | " + " | ".join(letters) + " | chance accuracy |", "|" + "---|" * (len(letters) + 2)]
        for row, runs in options.items():
            cells = [f"{sum(r['predicted'].get(k, 0) for r in runs)} ({sum(r['gold'].get(k, 0) for r in runs)})"
                     for k in letters]
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {100 * runs[0]['chance_accuracy']:.0f} % |")
        lines.append("")
    return lines


def _or_blank(value: float | None, blank: str) -> str:
    return blank if value is None else f"{value:.1f}"


def write_summary(agg: Mapping[str, Any], path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
    payload = {"methods": agg, **(extra or {})}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def _figure(height: float = 4.2):
    """A figure and axes of the reports' size, drawn off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, height), dpi=120)


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # "tight" keeps a legend placed outside the axes
    plt.close(fig)


def _colours(n: int) -> list:
    """One distinct colour per row: the default cycle up to 10 rows, tab20 beyond (an ablation grid)."""
    import matplotlib

    return [f"C{i}" for i in range(n)] if n <= 10 else [matplotlib.colormaps["tab20"](i % 20) for i in range(n)]


# Above this many rows, labels beside the points overlap and legends inside the axes hide data.
MANY_ROWS = 6


def _legend_outside(fig, handles: Sequence, labels: Sequence[str]) -> None:
    """One legend right of the figure, covering no data (`_save` keeps it in the picture)."""
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


def _legend(fig, ax) -> None:
    """The legend inside ``ax`` for a few rows; for many, right of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) <= MANY_ROWS:
        ax.legend(handles, labels, loc="upper left", fontsize=8)
    else:
        _legend_outside(fig, handles, labels)


def plot_accuracy_vs_passes(agg: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Accuracy against forward passes per question: the method's trade-off in one picture."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = _figure()
    for (method, r), colour in zip(agg.items(), _colours(len(agg))):
        x, y = r["forward_passes"], r["accuracy"]
        ax.errorbar(x["mean"], 100 * y["mean"], xerr=x["std"], yerr=100 * y["std"], fmt="o", capsize=3,
                    color=colour, label=method)
        if len(agg) <= MANY_ROWS:
            ax.annotate(method, (x["mean"], 100 * y["mean"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_format(FuncFormatter(lambda v, _: f"{v:g}"))  # 3, 4, 6, 10 rather than 3×10⁰
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("forward passes per question (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(fig, ax)
    _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "",
                         by_step: bool = False) -> None:
    """Accuracy against training time while training: one line per run, one colour per method.

    ``curves``: method → one run per seed, ``{"seed", "start_s", "points": [{"step", "train_time_s",
    "accuracy"}, ...]}``. A run's points are drawn from ``start_s`` on, so a method that continues
    another run's model (the demo's latent methods continue the CoT run) is placed after the
    training it builds on and times compare as total compute. ``by_step`` draws each run against
    its own steps instead: for runs timed under different loads, whose clocks do not compare.
    """
    fig, ax = _figure()
    for i, (method, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            x = [p["step"] if by_step else run["start_s"] + p["train_time_s"] for p in run["points"]]
            y = [100 * p["accuracy"] for p in run["points"]]
            ax.plot(x, y, marker="o", markersize=3, color=f"C{i}", alpha=0.85, label=method if j == 0 else None)
    ax.set_xlabel("training step (each run's own; latent runs start from a CoT model)" if by_step else
                  "training time (s, evaluation excluded; latent methods\ncontinue after their CoT model's training)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


# The loss terms a training history may hold (`KavaModel.forward`), in the order they are drawn:
# the trained total, then every trained term of `kava.losses.TERMS`.
LOSS_TERMS = ("loss", *(name for name, term in TERMS.items() if term.weight))
# term → its logged-only baseline (kv → kv_mean_baseline: L_KV of a student that outputs the mean target)
BASELINES = {term.baseline_of: name for name, term in TERMS.items() if term.baseline_of}
RATIOS = {term: f"{term}_vs_baseline" for term in BASELINES}  # term → `final_losses`' name for term / baseline


def plot_loss_curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], path: str | Path,
                     title: str = "") -> None:
    """Every loss term against the training step, one panel per term, one line per row (its seeds'
    mean, smoothed); a term's panel draws its baseline (`BASELINES`) dashed in the row's colour: a
    ``kv`` under ``kv_mean_baseline`` shows the student learnt more than the mean target.

    ``histories``: row → one ``history.jsonl`` (list of per-step entries) per seed.
    """
    terms = [t for t in LOSS_TERMS if any(t in e for runs in histories.values() for h in runs for e in h)]
    if not terms:
        raise ValueError("no loss terms in the histories")
    from matplotlib.lines import Line2D

    fig, axes = _figure_grid(len(terms))
    handles: dict[str, Any] = {}  # row → its line, for the one legend of the figure
    drawn: list[str] = []  # the baselines drawn
    for ax, term in zip(axes, terms):
        for (row, runs), colour in zip(histories.items(), _colours(len(histories))):
            for key, style in ((term, "-"), *(((BASELINES[term], "--"),) if term in BASELINES else ())):
                steps, values = _seed_mean(runs, key)
                if steps:
                    (line,) = ax.plot(steps, _smooth(values), style, color=colour, linewidth=1)
                    if key == term:
                        handles.setdefault(row, line)
                    elif key not in drawn:
                        drawn.append(key)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    labels = list(handles)
    for baseline in drawn:
        handles[baseline] = Line2D([], [], color="grey", linestyle="--", linewidth=1)
        labels.append(f"{TERMS[baseline].baseline_of} panel, dashed: {TERMS[baseline].label}")
    _legend_outside(fig, list(handles.values()), labels)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def final_losses(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                 tail: float = 0.1) -> dict[str, dict[str, float]]:
    """row → {term: value at the end of training}: each run's mean over the last ``tail`` of its
    logged steps (one step's loss is noise), then the mean over the row's seeds. Where a term and its
    baseline are both logged, `RATIOS` names their ratio: ``kv_vs_baseline`` is the only L_KV figure
    that compares across rows, since eviction rules and KV losses change the targets and the scale.
    """
    logged = (*LOSS_TERMS, *BASELINES.values())
    out: dict[str, dict[str, float]] = {}
    for row, runs in histories.items():
        per_run: list[dict[str, float]] = []
        for h in runs:
            entries = sorted(h, key=lambda e: e["step"])
            end = entries[-max(1, round(tail * len(entries))):] if entries else []
            per_run.append({k: statistics.fmean(e[k] for e in end) for k in logged
                            if end and all(k in e for e in end)})
        common = set.intersection(*(set(r) for r in per_run)) if per_run else set()
        row_out = {k: statistics.fmean(r[k] for r in per_run) for k in logged if k in common}
        for term, baseline in BASELINES.items():
            if term in row_out and row_out.get(baseline):
                row_out[RATIOS[term]] = row_out[term] / row_out[baseline]
        out[row] = row_out
    return out


def plot_ablation_bars(agg: Mapping[str, Mapping[str, Any]], path: str | Path,
                       paper: Mapping[str, float | None] | None = None, title: str = "") -> None:
    """Accuracy of each row as a bar with its std over seeds as error bar (and the paper's number
    as a black mark where there is one): an ablation's variants side by side."""
    fig, ax = _figure(height=max(3.0, 0.32 * len(agg) + 1.2))
    rows = list(agg)
    means = [100 * agg[r]["accuracy"]["mean"] for r in rows]
    stds = [100 * agg[r]["accuracy"]["std"] for r in rows]
    ax.barh(range(len(rows)), means, xerr=stds, capsize=3, color="C0", alpha=0.8)
    marks = [(i, paper[r]) for i, r in enumerate(rows) if paper and paper.get(r) is not None]
    if marks:
        ax.plot([m for _, m in marks], [i for i, _ in marks], "k|", markersize=14, label="paper")
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%), mean ± std over seeds")
    ax.set_xlim(0, 100)
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_paired_differences(deltas: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Each variant's accuracy minus its seed's base run, mean ± std over the paired seeds: the
    ablation's effect with the seed-to-seed spread of the base taken out."""
    rows = [r for r, d in deltas.items() if d["n"]]
    fig, ax = _figure(height=max(3.0, 0.32 * len(rows) + 1.2))
    means = [100 * deltas[r]["mean"] for r in rows]
    ax.barh(range(len(rows)), means, xerr=[100 * deltas[r]["std"] for r in rows], capsize=3,
            color=["C2" if m >= 0 else "C3" for m in means], alpha=0.8)
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r} (n={deltas[r]['n']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy − base of the same seed (points), mean ± std")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def _seed_mean(runs: Sequence[Sequence[Mapping[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Steps every seed logged ``key`` at, and the seeds' mean there."""
    per_seed = [{e["step"]: e[key] for e in h if key in e} for h in runs]
    steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
    return steps, [statistics.fmean(d[s] for d in per_seed) for s in steps]


def _smooth(values: Sequence[float]) -> list[float]:
    """A trailing moving average over ~2 % of the curve: per-step losses are too noisy to read."""
    w = max(1, len(values) // 50)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - w] if i >= w else 0.0)
        out.append(acc / min(i + 1, w))
    return out


def _figure_grid(n: int):
    """A figure with ``n`` small panels, two per row, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.2 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])
