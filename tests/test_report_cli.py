"""`kava report`: aggregation over hand-made run folders, problems named, tables, the paper's numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kava.cli import main
from kava.experiments.paper import ABLATIONS, MAIN, paper_accuracy
from kava.experiments.results import collect, write_report

METHOD_MD = Path(__file__).resolve().parents[1] / "docs" / "method.md"
PAPER_SETTING = {"model": "meta-llama/Llama-3.2-1B-Instruct", "train_data": "gsm8k-aug", "eval_data": "gsm8k",
                 "eval_split": "test", "eval_limit": None}


def _summary(acc: float, passes: float = 6.0) -> dict:
    return {"accuracy": acc, "mean_forward_passes": passes, "mean_generated_tokens": 2.0, "mean_cache_tokens": 49.0,
            "mean_latency_s": 0.002, "n": 100}


def _run(root: Path, name: str, method: str, seed: int, acc: float, variant: str = "base", knobs=None, setting=None,
         history: list | None = None) -> None:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "name": name, "method": method, "seed": seed, "variant": variant, "knobs": knobs or {}, "config": {"x": 1},
        "summary": _summary(acc), "train_time_s": 1.0, "setting": setting or {}}))
    if history:
        (folder / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))


def _history(kv: float) -> list:
    return [{"step": s, "loss": 2.0 / s, "ce_student": 1.0 / s, "kv": kv / s, "kv_mean_baseline": 0.4} for s in (1, 2, 3)]


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for seed, acc in enumerate((0.3, 0.4, 0.5)):
        _run(root, f"kava-seed{seed}", "kava", seed, acc, setting=PAPER_SETTING, history=_history(0.3))
    for seed, acc in enumerate((0.2, 0.4)):
        _run(root, f"kava-no-codi-seed{seed}", "kava", seed, acc, "no-codi", {"alpha_codi": 0.0}, PAPER_SETTING,
             _history(0.35))
    _run(root, "cot-seed0", "cot", 0, 0.7, setting=PAPER_SETTING)
    (root / "runs" / "kava-no-codi-seed2").mkdir()  # started, never finished
    (root / "runs" / "kava-no-codi-seed2" / "config.json").write_text("{}")
    _run(root, "kava-crop-seed0", "kava", 0, 0.1, "crop", {"eviction": "crop"})
    (root / "runs" / "kava-crop-seed0" / "metrics.json").write_text('{"summary": {"accuracy": 0.1')  # cut short
    (root / "sweep.json").write_text(json.dumps({"runs": [{"name": n} for n in (
        "cot-seed0", "kava-seed0", "kava-seed1", "kava-seed2", "kava-no-codi-seed0", "kava-no-codi-seed1",
        "kava-no-codi-seed2", "kava-crop-seed0", "kava-crop-seed1")]}))
    return root


def test_report_aggregates_mean_std_counts_per_method_and_variant(runs, tmp_path):
    found, agg = write_report(runs, tmp_path / "r")
    assert list(agg) == ["cot", "kava", "kava [no-codi]"]  # the sweep's order
    acc = agg["kava"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.4) and acc["std"] == pytest.approx(0.1) and acc["n"] == 3
    assert agg["kava [no-codi]"]["accuracy"]["mean"] == pytest.approx(0.3)
    assert agg["kava [no-codi]"]["accuracy"]["std"] == pytest.approx(0.1414214) and agg["kava [no-codi]"]["seeds"] == [0, 1]
    assert agg["cot"]["accuracy"]["std"] == 0.0 and agg["cot"]["accuracy"]["n"] == 1
    # The paper's numbers beside ours: main table (Llama-1B, AUG) and the L_CODI ablation.
    assert (agg["kava"]["paper_accuracy"], agg["cot"]["paper_accuracy"], agg["kava [no-codi]"]["paper_accuracy"]) == (56.5, 63.4, 52.8)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| kava | 3 | 40.0 ± 10.0 | 6.0 ± 0.0 |" in md and md.count("| 56.5 |") == 1
    csv = (tmp_path / "r" / "table.csv").read_text().splitlines()
    assert csv[0].startswith("method,seeds,accuracy_mean,accuracy_std") and csv[2].startswith("kava,3,0.4,0.1,")
    assert csv[2].endswith(",0.565")
    tex = (tmp_path / "r" / "table.tex").read_text()
    assert "kava & 3 & 40.0 $\\pm$ 10.0" in tex and "\\begin{tabular}" in tex
    for png in ("accuracy_vs_forward_passes.png", "loss_curves.png", "ablation_bars.png"):
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG"


def test_the_report_names_its_runs_folder_without_an_absolute_path(runs, tmp_path):
    # A committed report must not carry the path of the machine that wrote it.
    write_report(runs, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.splitlines()[0] == "# Report: sweep" and str(tmp_path) not in md
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["runs_dir"] == "../sweep"
    write_report(runs, runs)  # the report written into the runs folder itself
    assert json.loads((runs / "summary.json").read_text())["runs_dir"] == "."


def test_variants_are_paired_with_the_base_run_of_their_own_seed(runs, tmp_path):
    _run(runs, "kava-T0-seed7", "kava", 7, 0.9, "T0", {"num_iterations": 0})  # a seed the base never ran
    _, agg = write_report(runs, tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())["paired_differences"]
    # no-codi: seeds 0, 1 at 0.2 / 0.4 against the base's 0.3 / 0.4 -> -0.1, 0.0; the base's seed 2 has no pair.
    assert summary["kava [no-codi]"]["seeds"] == [0, 1] and summary["kava [no-codi]"]["n"] == 2
    assert summary["kava [no-codi]"]["mean"] == pytest.approx(-0.05) and summary["kava [no-codi]"]["std"] == pytest.approx(0.0707107)
    assert summary["kava [T0]"] == {"mean": None, "std": None, "n": 0, "seeds": []}
    assert set(summary) == {"kava [no-codi]", "kava [T0]"}  # cot has no variant; the base is not its own variant
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| kava [no-codi] | 0, 1 | -5.0 ± 7.1 | -3.7 |" in md  # paper: 52.8 - 56.5
    assert "| kava [T0] | none | — (no seed shared with the base) | — |" in md
    assert (tmp_path / "r" / "paired_differences.png").read_bytes()[:4] == b"\x89PNG"


def test_the_spread_test_takes_the_rows_with_every_seed_of_the_base(runs, tmp_path):
    write_report(runs, tmp_path / "r")
    spread = json.loads((tmp_path / "r" / "summary.json").read_text())["spread_test"]
    assert spread["kava"]["left_out"] == ["kava [no-codi]"] and "F" not in spread["kava"]  # no-codi lacks seed 2
    assert "- kava: not tested — needs 2 or more seeds" in (tmp_path / "r" / "report.md").read_text()
    for seed, acc in enumerate((0.4, 0.4, 0.6)):  # the base + (0.1, 0, 0.1): paired t = 2, so F = 4
        _run(runs, f"kava-T0-seed{seed}", "kava", seed, acc, "T0", {"num_iterations": 0})
    write_report(runs, tmp_path / "r")
    t = json.loads((tmp_path / "r" / "summary.json").read_text())["spread_test"]["kava"]
    assert t["rows"] == ["kava", "kava [T0]"] and t["seeds"] == [0, 1, 2] and t["df"] == [1, 2]
    assert t["F"] == pytest.approx(4.0) and t["residual_std"] == pytest.approx(0.0408248)
    assert t["p"] == pytest.approx(0.5, abs=0.03)  # seed 1's difference is 0: the sign flips of seeds 0, 2 decide
    assert "cot" not in json.loads((tmp_path / "r" / "summary.json").read_text())["spread_test"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert re.search(r"- kava: 2 rows × seeds 0, 1, 2: F = 4\.00 \(1, 2 df\), p = 0\.\d+ \(10000 shuffles\); "
                     r"residual std 4\.1 points; left out \(missing a seed\): kava \[no-codi\]", md)
    assert "(standard error 1.7 points)" in md  # 4.08 * sqrt((2 - 1) / (2 * 3))
    assert "  | kava | -3.3 |" in md and "  | kava [T0] | +3.3 |" in md  # means 0.4 and 0.4667 around 0.4333


def test_losses_at_the_end_average_each_runs_tail_then_the_seeds(runs, tmp_path):
    long = [{"step": s, "kv": 1.0 if s <= 18 else 0.2 + 0.1 * (s - 19), "kv_mean_baseline": 0.5, "loss": 1.0}
            for s in range(1, 21)]  # last 10 % of 20 steps: steps 19, 20 -> kv 0.2, 0.3
    _run(runs, "kava-M4-seed0", "kava", 0, 0.3, "M4", {"num_latents": 4}, history=long)
    write_report(runs, tmp_path / "r")
    losses = json.loads((tmp_path / "r" / "summary.json").read_text())["final_losses"]
    assert losses["kava [M4]"]["kv"] == pytest.approx(0.25) and losses["kava [M4]"]["kv_vs_baseline"] == pytest.approx(0.5)
    # three 3-step runs: each run's last step (kv 0.3 / 3), then the mean over seeds
    assert losses["kava"]["kv"] == pytest.approx(0.1) and losses["kava"]["kv_vs_baseline"] == pytest.approx(0.25)
    assert losses["kava"]["ce_student"] == pytest.approx(1 / 3) and "codi" not in losses["kava"]
    assert "cot" not in losses  # no history kept
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| kava [M4] | 1 | 1.000 | — | 0.250 | 0.500 | 0.500 |" in md


def test_a_report_over_an_older_one_leaves_none_of_its_plots(runs, tmp_path):
    write_report(runs, tmp_path / "r")
    for name in ("kava-no-codi-seed0", "kava-no-codi-seed1", "kava-crop-seed0", "kava-no-codi-seed2"):
        for f in (runs / "runs" / name).iterdir():
            f.unlink()
    write_report(runs, tmp_path / "r")  # the base runs alone: no variant, so no ablation bars
    assert not (tmp_path / "r" / "ablation_bars.png").exists()
    assert not (tmp_path / "r" / "paired_differences.png").exists()
    assert (tmp_path / "r" / "loss_curves.png").is_file()


def test_missing_or_corrupt_metrics_are_named_never_skipped(runs, tmp_path, capsys):
    found = collect(runs)
    crop, unstarted, unfinished = sorted(found.problems)
    assert crop.startswith("runs/kava-crop-seed0: metrics.json is not valid JSON (")
    assert unstarted == "runs/kava-crop-seed1: planned by the sweep but never started"
    assert unfinished == "runs/kava-no-codi-seed2: metrics.json missing"
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "kava report: runs/kava-crop-seed0: metrics.json is not valid JSON" in err
    assert "kava report: runs/kava-no-codi-seed2: metrics.json missing" in err
    assert "runs/kava-crop-seed1: planned by the sweep but never started" in (tmp_path / "r" / "report.md").read_text()
    assert main(["report", str(runs), "--out", str(tmp_path / "r"), "--strict"]) == 3
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_a_folder_without_metrics_is_a_problem_and_curves_are_drawn(tmp_path):
    """A run folder with neither metrics.json nor config.json is named; the demo's learning curves
    (a run's ``curve``, placed after the CoT training it continues) become learning_curves.png."""
    root = tmp_path / "demo"
    points = [{"step": 1, "train_time_s": 0.5, "accuracy": 0.2}, {"step": 2, "train_time_s": 1.0, "accuracy": 0.4}]
    for name, seed, acc in (("kava-seed0", 0, 0.3), ("kava-seed1", 1, 0.5)):
        _run(root, name, "kava", seed, acc)
        path = root / "runs" / name / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"curve": points, "curve_start_s": 7.0,
                                                                   "curve_eval_time_s": 0.25}))
    (root / "runs" / "pccot-seed0").mkdir()
    found, agg = write_report(root, tmp_path / "r")
    assert list(agg) == ["kava"] and agg["kava"]["accuracy"]["mean"] == pytest.approx(0.4)
    assert agg["kava"]["paper_accuracy"] is None  # the synthetic task is no paper setting
    assert found.problems == ["runs/pccot-seed0: no metrics.json"]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["learning_curves"]["kava"] == [{"seed": s, "start_s": 7.0, "points": points} for s in (0, 1)]
    assert summary["curve_eval_time_all_runs_s"] == pytest.approx(0.5)
    assert summary["train_time_all_runs_s"] == pytest.approx(2.0)
    assert (tmp_path / "r" / "learning_curves.png").is_file() and "learning_curves.png" in summary["plots"]


def test_paper_lookup_matches_only_paper_settings():
    assert paper_accuracy(PAPER_SETTING, "kava", {}) == 56.5
    assert paper_accuracy({**PAPER_SETTING, "model": "/models/Qwen2.5-0.5B-Instruct", "train_data": "gsm8k-aug-nl"},
                          "codi", {}) == 20.2
    assert paper_accuracy({**PAPER_SETTING, "model": "meta-llama/Llama-3.2-3B-Instruct"}, "pccot", {}) == 54.7
    assert paper_accuracy(PAPER_SETTING, "nocot", {}) == 30.9
    assert paper_accuracy(PAPER_SETTING, "kava", {"use_projection": False}) == 52.2
    assert paper_accuracy(PAPER_SETTING, "kava", {"teacher_drop_last_step": False}) == 51.2
    assert paper_accuracy(PAPER_SETTING, "kava", {"eviction": "crop"}) is None  # no number in the paper
    assert paper_accuracy({**PAPER_SETTING, "eval_limit": 100}, "kava", {}) is None  # not the full test set
    assert paper_accuracy({**PAPER_SETTING, "eval_data": "svamp"}, "kava", {}) is None
    assert paper_accuracy({**PAPER_SETTING, "model": "smollm2"}, "kava", {}) is None
    assert paper_accuracy({**PAPER_SETTING, "model": "meta-llama/Llama-3.2-1B-Instruct", "train_data": "gsm8k-aug-nl"},
                          "pause", {}) is None


def test_icot_and_coconut_rows_stand_beside_the_papers(tmp_path):
    """Runs without a sweep.json: rows in the tables' order (`kava.methods`), the paper's Table 1
    number on each (Llama-3.2-1B, GSM8k-AUG)."""
    root = tmp_path / "runs-root"
    for name, method, acc in (("coconut-seed0", "coconut", 0.3), ("icot-seed0", "icot", 0.2), ("kava-seed0", "kava", 0.5)):
        _run(root, name, method, 0, acc, setting=PAPER_SETTING)
    _, agg = write_report(root, tmp_path / "r")
    assert list(agg) == ["kava", "icot", "coconut"]
    assert [agg[m]["paper_accuracy"] for m in agg] == [56.5, 19.0, 45.3]


def test_paper_table_is_read_right_from_method_md():
    text = METHOD_MD.read_text()
    section = text[text.index("## 9."):]
    methods = ("cot", "codi", "pccot", "kava")
    seen = {}
    for line in section.splitlines():
        m = re.match(r"\| (Qwen2\.5-0\.5B|Llama-3\.2-1B|Llama-3\.2-3B) \| AUG / AUG-NL \|(.*)\|$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            for method, cell in zip(methods, cells):
                aug, nl = (float(x) for x in cell.split("/"))
                seen[(m.group(1), "AUG", method)], seen[(m.group(1), "AUG-NL", method)] = aug, nl
    aug, nl = map(float, re.search(r"No-CoT on Llama-3\.2-1B: (\d+\.\d) / (\d+\.\d)", section).groups())
    seen[("Llama-3.2-1B", "AUG", "nocot")], seen[("Llama-3.2-1B", "AUG-NL", "nocot")] = aug, nl
    flat = " ".join(section.split())
    for name, method in (("iCoT", "icot"), ("Coconut", "coconut")):  # the first version's line
        aug, nl = map(float, re.search(name + r" (\d+\.\d) / (\d+\.\d)", flat).groups())
        seen[("Llama-3.2-1B", "AUG", method)], seen[("Llama-3.2-1B", "AUG-NL", method)] = aug, nl
    assert seen == MAIN
    for phrase, key in (("without L_CODI", ("alpha_codi", 0.0)), ("without projection", ("use_projection", False)),
                        ("teacher on all steps", ("teacher_drop_last_step", False)), ("collapses (KaVa", ("finetune", "full"))):
        assert float(re.search(re.escape(phrase) + r" (\d+\.\d)", flat).group(1)) == ABLATIONS[key]


def test_math_and_aqua_breakdowns_are_in_the_report(tmp_path):
    # Two seeds of a MATH run: per-subject / per-level accuracy is their mean; an AQuA run's
    # option counts are summed; a numeric run adds no such section.
    root = tmp_path / "sweep"

    def group(k: int, n: int) -> dict:
        return {"n": n, "correct": k, "accuracy": k / n, "accuracy_ci95": [0.0, 1.0]}

    for seed, (alg, geo) in enumerate(((1, 0), (3, 2))):
        _run(root, f"cot-seed{seed}", "cot", seed, 0.2)
        metrics = json.loads((root / "runs" / f"cot-seed{seed}" / "metrics.json").read_text())
        metrics["summary"] |= {"by_subject": {"Algebra": group(alg, 4), "Geometry": group(geo, 2)},
                               "by_level": {"1": group(alg + geo, 6)}}
        (root / "runs" / f"cot-seed{seed}" / "metrics.json").write_text(json.dumps(metrics))
    _run(root, "nocot-seed0", "nocot", 0, 0.2)
    metrics = json.loads((root / "runs" / "nocot-seed0" / "metrics.json").read_text())
    metrics["summary"]["options"] = {"predicted": {"C": 3, "none": 1}, "gold": {"A": 2, "C": 2}, "chance_accuracy": 0.2}
    (root / "runs" / "nocot-seed0" / "metrics.json").write_text(json.dumps(metrics))
    write_report(root, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| cot | 50.0 (4) | 50.0 (2) |" in md  # Algebra (25 % + 75 %) / 2, Geometry (0 % + 100 %) / 2
    assert "## Accuracy by level" in md and "| cot | 50.0 (6) |" in md
    assert "| nocot | 0 (2) | 3 (2) | 1 (0) | 20 % |" in md  # A, C, none; chance 20 %
    assert "| nocot |" not in md.split("## Accuracy by subject")[1].split("##")[0]


def test_published_task_cells_are_read_right_from_method_md():
    from kava.experiments.paper import TASKS

    text = METHOD_MD.read_text()
    section = text[text.index("## 13."):]
    names = {"CoT": "cot", "No-CoT": "nocot", "iCoT": "icot", "pause token": "pause", "Coconut": "coconut"}
    seen = {}
    for line in section.splitlines():
        m = re.match(r"\| ([^|]+?) \| (\d+\.\d) ± ", line)
        if m and m.group(1) in names:
            seen[("prosqa test", names[m.group(1)])] = float(m.group(2))
    for n in (4, 5):
        seen[(f"mult{n} test", "icot")] = 100 * float(re.search(rf"{n}×{n} (\d\.\d\d)", section).group(1))
    assert seen == TASKS


def test_a_task_run_gets_its_published_cell_and_source(tmp_path):
    root = tmp_path / "runs-root"
    task = {"model": "demo tiny Llama", "train_data": "mult4", "eval_data": "mult4 test"}
    _run(root, "icot-seed0", "icot", 0, 0.5, setting=task)
    _run(root, "kava-seed0", "kava", 0, 0.1, setting=task)
    _, agg = write_report(root, tmp_path / "r")
    assert agg["icot"]["paper_accuracy"] == 100.0 and agg["kava"]["paper_accuracy"] is None
    assert "arXiv 2405.14838" in (tmp_path / "r" / "report.md").read_text()
