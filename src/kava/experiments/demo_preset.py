"""`kava demo`: the CPU demo as a preset grid, run by the sweep runner and reported by `kava report`.

The grid is the demo's methods for each of its seeds (`kava.experiments.grid.demo_plan`); each run
is the synthetic-task backend's `kava.demo.run.train_run`, in ``<out>/runs/<method>-seed<S>/``
with its record ``metrics.json``; the table, the plots (accuracy against forward passes, learning
curves, losses) and ``summary.json`` go to ``<out>/report/``. A demo folder is therefore a sweep
folder: `kava report` and `kava sweep --cot-from` read it as one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

REPORT = "report"  # <out>/report/: what `kava report <out>` writes


def run_demo(out_dir: str | Path, settings=None, *, progress: bool = True, resume: bool = False,
             command: str = "kava demo") -> dict[str, Any]:
    """Train and evaluate every method of ``settings`` (a `DemoSettings`; the default demo without)
    for every seed, then write the report; returns the report's summary with the wall time.

    Without ``resume`` a folder that already holds runs is refused (FileExistsError); with it the
    earlier call is continued: finished runs are reused (their configuration must match), an
    interrupted one resumes from its last checkpoint.
    """
    import torch

    from kava.demo.dataset_tasks import check_task
    from kava.demo.run import DemoSettings
    from kava.experiments.grid import demo_plan
    from kava.experiments.reports import format_table
    from kava.experiments.results import write_report
    from kava.experiments.sweep import DemoRunner, run_sweep

    s = settings or DemoSettings()
    check_task(s.dataset)  # one line before anything is written (mult5 without its test split, say)
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(out_dir)
    if not resume and (out / "runs").is_dir() and any((out / "runs").iterdir()):
        raise FileExistsError(f"{out} already holds demo runs: pass --resume to continue them, or choose another --out")
    t_start = time.perf_counter()
    run_sweep(demo_plan(s, command), out, DemoRunner(out, progress), echo=lambda line: print(line, flush=True))
    found, agg = write_report(out, out / REPORT)
    if found.problems:  # every run just finished, so a problem here is a bug: never report fewer runs silently
        raise RuntimeError(f"{out}: runs without valid metrics: {'; '.join(found.problems)}")
    wall = time.perf_counter() - t_start
    table = format_table(agg)
    print(table)
    train_time = sum(r.train_time_s or 0.0 for r in found.runs)
    print(f"total time {wall / 60:.1f} min (training of all runs, reused ones included: {train_time / 60:.1f} min); "
          f"report in {out / REPORT}", flush=True)
    return {"methods": agg, "wall_time_s": wall, "train_time_all_runs_s": train_time,
            "test_questions": s.test_size}
