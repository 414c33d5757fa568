"""Aggregation across seeds, the table, the JSON summary and the plots."""

from __future__ import annotations

import json

import pytest

from kava.experiments.reports import aggregate, format_table, plot_accuracy_vs_passes, plot_learning_curves, write_summary


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
    from kava.experiments import reports

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


def test_spread_test_f_and_p_on_hand_computed_grids():
    from kava.experiments.reports import spread_test

    # a = (1, 3), b = (2, 6): seed means 1.5, 4.5; effects -1, +1; residuals ±0.5 -> F = (2*2/1) / (4*0.25/1) = 4.
    # The only other shuffle (swap one seed) gives F = 0.25, so half the shuffles reach 4.
    t = spread_test({"a": {0: 1.0, 1: 3.0}, "b": {0: 2.0, 1: 6.0}})
    assert t["F"] == pytest.approx(4.0) and t["df"] == [1, 1] and t["residual_std"] == pytest.approx(1.0)
    assert t["effects"] == pytest.approx({"a": -1.0, "b": 1.0}) and t["p"] == pytest.approx(0.5, abs=0.02)
    # rows that differ only by the seed's shift: no spread, F = 0, every shuffle ties
    flat = spread_test({r: {0: 1.0, 1: 5.0} for r in "abc"})
    assert (flat["F"], flat["p"], flat["residual_std"]) == (0.0, 1.0, 0.0)
    # three rows 10 apart, tiny noise, 4 seeds: only the 3! relabellings of 6^4 shuffles reach F -> p ~ 0.005
    noise = [0.05, -0.03, 0.02, -0.04]
    strong = spread_test({r: {s: base + 3 * s + noise[(s + i) % 4] for s in range(4)}
                          for i, (r, base) in enumerate((("a", 10.0), ("b", 20.0), ("c", 30.0)))})
    assert strong["F"] > 1000 and strong["p"] < 0.02 and strong["df"] == [2, 6]


def test_spread_test_needs_the_same_seeds_in_every_row():
    from kava.experiments.reports import spread_test

    with pytest.raises(ValueError, match=r"row 'b' has seeds \[0\], not \[0, 1\]"):
        spread_test({"a": {0: 1.0, 1: 2.0}, "b": {0: 1.0}})
    with pytest.raises(ValueError, match="at least 2 rows and 2 seeds"):
        spread_test({"a": {0: 1.0, 1: 2.0}})


def test_a_grid_of_many_rows_gets_distinct_colours_and_a_legend_off_the_data(monkeypatch, tmp_path):
    from kava.experiments import reports

    figures = []
    monkeypatch.setattr(reports, "_save", lambda fig, path: figures.append(fig))
    rows = {f"kava [v{i}]": [[{"step": s, "loss": 1.0 / s, "kv": 0.5 / s, "kv_mean_baseline": 0.4} for s in (1, 2)]]
            for i in range(12)}
    reports.plot_loss_curves(rows, tmp_path / "l.png")
    agg = aggregate({row: [_summary(0.1 * (i % 9), 6)] for i, row in enumerate(rows)})
    reports.plot_accuracy_vs_passes(agg, tmp_path / "a.png")
    reports.plot_accuracy_vs_passes(dict(list(agg.items())[:3]), tmp_path / "few.png")
    loss_fig, many_fig, few_fig = figures
    for fig in (loss_fig, many_fig):
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in loss_fig.legends[0].get_texts()]
    assert labels == [*rows, "kv panel, dashed: L_KV of the mean target"]  # each row once, not once per panel
    colours = {tuple(line.get_color()) for line in loss_fig.axes[0].get_lines()}
    assert len(colours) == 12  # beyond the 10-colour cycle, no two rows share a colour
    assert few_fig.axes[0].get_legend() is not None and not few_fig.legends  # a few rows: legend in the axes
