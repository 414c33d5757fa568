"""Aggregation across seeds, the table, the JSON summary and the plots."""

from __future__ import annotations

import json

import pytest

from kava.reports import aggregate, format_table, plot_accuracy_vs_passes, plot_learning_curves, write_summary


def _summary(acc, passes):
    return {"accuracy": acc, "mean_forward_passes": passes, "mean_generated_tokens": 3.0,
            "mean_cache_tokens": 50.0, "mean_latency_s": 0.002}


def test_aggregate_mean_std_and_outputs(tmp_path):
    agg = aggregate({"kava": [_summary(0.5, 7), _summary(0.7, 7)], "cot": [_summary(0.9, 40)]})
    assert agg["kava"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert agg["kava"]["accuracy"]["std"] == pytest.approx(0.1414213, rel=1e-5)
    assert agg["cot"]["accuracy"]["std"] == 0.0 and agg["cot"]["accuracy"]["n"] == 1
    table = format_table(agg)
    assert "| kava | 60.0 ± 14.1 | 7.0 ± 0.0 |" in table and "| cot | 90.0 | 40.0 |" in table
    write_summary(agg, tmp_path / "summary.json", {"seeds": [0, 1]})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["methods"]["kava"]["forward_passes"]["mean"] == 7 and data["seeds"] == [0, 1]
    plot_accuracy_vs_passes(agg, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="accuracy"):
        aggregate({"kava": [{"mean_forward_passes": 1}]})
    with pytest.raises(ValueError, match="no runs"):
        aggregate({"kava": []})


def test_learning_curves_place_a_continued_run_after_the_one_it_continues(tmp_path, monkeypatch):
    from kava import reports

    def run(seed, start, times, accs):
        return {"seed": seed, "start_s": start,
                "points": [{"step": i + 1, "train_time_s": t, "accuracy": a} for i, (t, a) in enumerate(zip(times, accs))]}

    curves = {"cot": [run(0, 0, [10, 20], [0.2, 0.6]), run(1, 0, [11, 22], [0.3, 0.5])],
              "kava": [run(0, 20, [5, 10], [0.1, 0.4]), run(1, 22, [], [])]}  # a run may have no points
    drawn = []
    real_save = reports._save
    monkeypatch.setattr(reports, "_save", lambda fig, path: (drawn.append(fig.axes[0]), real_save(fig, path)))
    plot_learning_curves(curves, tmp_path / "curves.png", title="t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = drawn[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[10, 20], [11, 22], [25, 30], []]
    assert list(lines[2].get_ydata()) == [10, 40]  # percent
    assert [t.get_text() for t in drawn[0].get_legend().get_texts()] == ["cot", "kava"]  # one entry per method
    plot_learning_curves(curves, tmp_path / "steps.png", by_step=True)
    assert [list(line.get_xdata()) for line in drawn[1].get_lines()] == [[1, 2], [1, 2], [1, 2], []]
