"""Results across methods and seeds: aggregation, a printable table, a JSON summary and plots.

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


def format_table(agg: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table (it reads fine in a terminal too): mean ± std over seeds."""

    def cell(stat: Mapping[str, float], fmt: str, scale: float = 1.0) -> str:
        m, s = stat["mean"] * scale, stat["std"] * scale
        return f"{m:{fmt}} ± {s:{fmt}}" if stat["n"] > 1 else f"{m:{fmt}}"

    lines = [
        "| method | accuracy % | forward passes / question | generated tokens | KV-cache tokens | latency ms / question |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in agg.items():
        lines.append(
            f"| {method} | {cell(r['accuracy'], '.1f', 100)} | {cell(r['forward_passes'], '.1f')} | "
            f"{cell(r['generated_tokens'], '.1f')} | {cell(r['kv_cache_tokens'], '.1f')} | "
            f"{cell(r['latency_s'], '.1f', 1000)} |"
        )
    return "\n".join(lines)


def write_summary(agg: Mapping[str, Any], path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
    payload = {"methods": agg, **(extra or {})}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def _figure():
    """A figure and axes of the reports' size, drawn off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4.2), dpi=120)


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_accuracy_vs_passes(agg: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Accuracy against forward passes per question: the method's trade-off in one picture."""
    fig, ax = _figure()
    for method, r in agg.items():
        x, y = r["forward_passes"], r["accuracy"]
        ax.errorbar(x["mean"], 100 * y["mean"], xerr=x["std"], yerr=100 * y["std"], fmt="o", capsize=3, label=method)
        ax.annotate(method, (x["mean"], 100 * y["mean"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set_xlabel("forward passes per question (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "") -> None:
    """Accuracy against training time while training: one line per run, one colour per method.

    ``curves``: method → one run per seed, ``{"seed", "start_s", "points": [{"train_time_s",
    "accuracy"}, ...]}``. A run's points are drawn from ``start_s`` on, so a method that continues
    another run's model (the demo's latent methods continue the CoT run) is placed after the
    training it builds on and times compare as total compute.
    """
    fig, ax = _figure()
    for i, (method, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            x = [run["start_s"] + p["train_time_s"] for p in run["points"]]
            y = [100 * p["accuracy"] for p in run["points"]]
            ax.plot(x, y, marker="o", markersize=3, color=f"C{i}", alpha=0.85, label=method if j == 0 else None)
    ax.set_xlabel("training time (s, evaluation excluded; latent methods\ncontinue after their CoT model's training)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
