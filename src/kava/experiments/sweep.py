"""Running a sweep: every run of a `Plan` one after another, each in its own folder, resumable.

A run's folder (``<out>/runs/<name>/``) holds ``config.json`` (its resolved configuration), what
training and evaluation write (``history.jsonl``, checkpoints, ``final/``, ``eval/predictions.jsonl``),
``run.log`` (what the run printed) and, written last and atomically, ``metrics.json``. A run is
finished when ``metrics.json`` is present, valid and made with the same configuration; anything
less (an interruption, a crash) is continued from the run's last checkpoint or restarted, never
counted as done. So an interrupted sweep resumes by running the same command again.

Each run is also a command of its own (`commands`), for a cluster's job scheduler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kava.experiments.grid import GridError, Plan, RunSpec, demo_settings
from kava.runtime.outputs import as_json

from kava.runtime.layout import BEST, FINAL
from kava.runtime.layout import RUN_CONFIG as CONFIG_FILE
from kava.runtime.layout import RUN_METRICS as METRICS_FILE
from kava.runtime.stop import StoppedAfterSaving

LOG_FILE = "run.log"
PLAN_FILE = "sweep.json"
# What a finished run's summary must hold (`kava.experiments.reports.METRICS`): the report reads these.
REQUIRED = ("accuracy", "mean_forward_passes", "mean_generated_tokens", "mean_cache_tokens", "mean_latency_s")

# What a run folder holds of its run (`run_state`).
TO_RUN, FINISHED, TO_SCORE = "to run", "finished", "to score again"
# Demo settings that say only how a trained model is scored (which test problems, in what batches):
# the training data never depends on them (every held-out problem is kept out of it), so a change
# re-scores the finished runs from their final models in seconds.
SCORING = ("test_size", "eval_batch_size")

# A runner trains and evaluates one run in its folder and returns what metrics.json records
# beside the config: {"summary": evaluation summary, "train_time_s", "setting": {...}}; None on a
# process that is not the main one of a multi-process launch (it writes nothing).
Runner = Callable[[RunSpec, Path], "dict[str, Any] | None"]


class SweepError(RuntimeError):
    """A run cannot start or finish as asked; one line naming the run."""


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's ``metrics.json``; raises `ValueError` naming what is wrong if it is missing or corrupt."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{path.name} missing")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    if not isinstance(summary, dict):
        raise ValueError(f"{path.name} has no summary")
    bad = [k for k in REQUIRED if not isinstance(summary.get(k), (int, float))]
    if bad:
        raise ValueError(f"{path.name}: summary lacks {', '.join(bad)}")
    if not isinstance(metrics.get("config"), dict):
        raise ValueError(f"{path.name} has no config")
    return metrics


def in_current_form(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded run configuration with the knobs and settings added since it was written at their
    defaults (the behaviour it ran with): a new knob does not void finished runs."""
    if config.get("base") == "train":
        return {**config, "eval": {"checkpoint": "final", **config["eval"]}}
    if config.get("base") != "demo":
        return config
    from dataclasses import asdict

    from kava.config import KavaConfig

    method_config = KavaConfig.from_dict(config["method_config"]).to_dict()
    return as_json({**config, "settings": asdict(demo_settings(config)), "method_config": method_config})


def own_phase(config: dict[str, Any]) -> dict[str, Any]:
    """A demo run's configuration without the other phases' steps and lr, which it does not train
    with (a latent run's CoT model is checked on its own, `cot_record`): changing the latent phase
    does not void finished CoT runs."""
    if config.get("base") != "demo":
        return config
    from kava.demo.run import phase_of

    phase = phase_of(config["method"])
    settings = {**config["settings"], **{k: {phase: config["settings"][k][phase]} for k in ("steps", "lr")}}
    return {**config, "settings": settings}


def run_state(spec: RunSpec, run_dir: Path) -> str:
    """What ``run_dir`` holds of this run: `TO_RUN` (nothing finished), `FINISHED`, or `TO_SCORE`
    (finished, but the grid now scores it on another test set: its model is scored again, not
    retrained). A finished run of other training settings is an error: the grid changed under an
    existing folder, and reusing or overwriting it would both mislead."""
    try:
        metrics = read_metrics(run_dir)
    except ValueError:
        return TO_RUN
    recorded, wanted = own_phase(in_current_form(metrics["config"])), own_phase(spec.config)
    if recorded == wanted:
        return FINISHED
    from kava.runtime.outputs import differences

    diffs = differences(recorded, wanted, ignore=SCORING if spec.config.get("base") == "demo" else ())
    if diffs:
        raise SweepError(f"{run_dir} holds a finished run with other settings ({'; '.join(diffs[:3])}); "
                         "choose another --out or move it away")
    return TO_SCORE


def finished(spec: RunSpec, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds this run, finished and scored as the grid asks (`run_state`)."""
    return run_state(spec, run_dir) == FINISHED


def run_sweep(plan: Plan, out: str | Path, runner: Runner, only: list[str] | None = None,
              echo: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Run the plan's runs (``only``: these names) one after another, skipping finished ones.

    Returns {"ran": names, "skipped": names}. A run that fails stops the sweep (its exception
    propagates): the next call resumes it.
    """
    out = Path(out)
    specs = [plan.run(name) for name in only] if only else plan.runs
    main = os.environ.get("RANK", "0") == "0"
    if main:
        write_plan(plan, out)
    done: dict[str, list[str]] = {"ran": [], "skipped": []}
    for i, spec in enumerate(specs, 1):
        run_dir = out / "runs" / spec.name
        state = run_state(spec, run_dir)
        if state == FINISHED:
            echo(f"[{i}/{len(specs)}] {spec.name}: finished, skipped")
            done["skipped"].append(spec.name)
            continue
        echo(f"[{i}/{len(specs)}] {spec.name}: " + ("running" if state == TO_RUN else "scoring its final model again"))
        with _owned(run_dir, main):
            if main:
                _write_json(run_dir / CONFIG_FILE, spec.config)
            with _logged(run_dir / LOG_FILE, main):
                result = runner(spec, run_dir) if state == TO_RUN else runner.score_again(spec, run_dir)
            if main and result is not None:
                _write_json(run_dir / METRICS_FILE, {"name": spec.name, "method": spec.method, "seed": spec.seed,
                                                     "variant": spec.variant, "knobs": spec.knobs,
                                                     "config": spec.config, **result})
        s = result["summary"] if result else None
        echo(f"[{i}/{len(specs)}] {spec.name}: " + (f"accuracy {100 * s['accuracy']:.1f}%" if s else "trained"))
        done["ran"].append(spec.name)
    return done


def write_plan(plan: Plan, out: Path) -> None:
    """``<out>/sweep.json``: the grid and every run it asks for, so the report can name runs never
    started (rather than report fewer seeds than were asked). The grid is named relative to
    ``out``, so the folder carries no machine path and can be moved or committed."""
    grid = plan.preset or os.path.relpath(plan.path.resolve(), Path(out).resolve())
    _write_json(out / PLAN_FILE, {"grid": grid, "base": plan.base,
                                  "runs": [{"name": r.name, "method": r.method, "seed": r.seed, "variant": r.variant}
                                           for r in plan.runs]})


def commands(plan: Plan, out: str | Path, extra: list[str]) -> list[str]:
    """One shell command per run: the same sweep restricted to that run, for independent jobs.

    A demo latent run needs its seed's CoT run finished first (listed before it, and named in
    the run's own error if not)."""
    base = ["kava", "sweep", str(plan.path), "--out", str(out), *extra]
    return [shlex.join([*base, "--only", spec.name]) for spec in plan.runs]


# --------------------------------------------------------------------------- runners

class DemoRunner:
    """Runs of the demo base: the demo's own `train_run` on its task (synthetic, or a registered
    one: ``DemoSettings.dataset``), a latent method
    starting from its seed's CoT model (a run of this sweep, or of ``--cot-from``'s folder).

    Besides the test summary a run's record keeps its learning curve (``curve``, what its
    evaluations cost, and ``curve_start_s``: the training time of the CoT run a latent run
    continues, so curves compare as total compute)."""

    def __init__(self, out: Path, progress: bool = True):
        self.out = Path(out)
        self.progress = progress
        self._data: dict[str, Any] = {}

    def __call__(self, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
        from kava.demo.run import train_run

        s = demo_settings(spec.config)
        data = self.data(spec)
        cot_model, cot_metrics = self.cot_model(spec, s) if spec.cot else (None, None)
        record, _ = train_run(run_dir, s, spec.method, spec.seed, data, cot_model=cot_model, resume=True,
                              progress=self.progress)
        return {**record, "curve_start_s": cot_metrics["train_time_s"] if cot_metrics else 0.0,
                "setting": {"model": "demo tiny Llama", "train_data": s.dataset or "synthetic",
                            "eval_data": f"{s.dataset or 'synthetic'} test"},
                **({"cot_run": str(self.cot_dir(spec))} if spec.cot else {})}

    def score_again(self, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
        """A finished run scored on the grid's test set now (`TO_SCORE`): its final model is
        evaluated, what it recorded of its training is kept."""
        from kava.demo.run import score_run

        header = ("name", "method", "seed", "variant", "knobs", "config")
        record = {k: v for k, v in read_metrics(run_dir).items() if k not in header}
        try:
            summary = score_run(run_dir, demo_settings(spec.config), self.data(spec), progress=self.progress)
        except FileNotFoundError as e:
            raise SweepError(f"{spec.name}: {e}") from None
        return {**record, "summary": summary}

    def data(self, spec: RunSpec):
        """The task and test set of the run's settings (a `DemoData`), built once for the runs that share them."""
        from kava.demo.run import DemoData

        key = json.dumps([spec.config["settings"].get(k) for k in ("task", "dataset", "test_size", "curve_points",
                                                                    "curve_valid_size")])
        if key not in self._data:
            self._data[key] = DemoData.build(demo_settings(spec.config))
        return self._data[key]

    def cot_dir(self, spec: RunSpec) -> Path:
        return Path(spec.cot) if Path(spec.cot).is_absolute() else self.out / "runs" / spec.cot

    def cot_model(self, spec: RunSpec, s):
        """The CoT model of the run's seed and its record, refused unless that run is finished and
        trained the model the latent run assumes."""
        from kava.model.kava_model import KavaModel

        cot_dir = self.cot_dir(spec)
        try:
            metrics = cot_record(cot_dir, s, spec.seed)
        except ValueError as e:
            hint = "" if Path(spec.cot).is_absolute() else f"; run it first (--only {spec.cot})"
            raise SweepError(f"{spec.name}: {e}{hint}") from None
        return KavaModel.from_pretrained(cot_dir / "final"), metrics


def cot_record(cot_dir: Path, s, seed: int) -> dict[str, Any]:
    """The record of the finished demo CoT run ``cot_dir`` that starts the latent runs of settings
    ``s`` (a `DemoSettings`) for ``seed``; a `ValueError` says why it cannot (not finished, not a
    demo CoT run, or trained otherwise)."""
    from kava.demo.run import run_identity

    try:
        metrics = read_metrics(cot_dir)
    except ValueError as e:
        raise ValueError(f"its CoT run {cot_dir} is not finished ({e})") from None
    config = in_current_form(metrics["config"])
    if config.get("base") != "demo" or config.get("method") != "cot":
        raise ValueError(f"{cot_dir} is not a demo CoT run")
    recorded, wanted = run_identity(demo_settings(config), "cot", seed), run_identity(s, "cot", seed)
    if recorded != wanted:
        from kava.runtime.outputs import differences

        raise ValueError(f"the CoT run {cot_dir} was trained with other settings "
                         f"({'; '.join(differences(recorded, wanted)[:3])})")
    return metrics


def check_cot_sources(plan: Plan) -> list[str]:
    """The ``--cot-from`` CoT runs the plan needs that are missing or were trained otherwise
    (one line each): found before a sweep starts, not at its fifth run."""
    problems, seen = [], set()
    for spec in plan.runs:
        if not spec.cot or not Path(spec.cot).is_absolute() or spec.cot in seen:
            continue
        seen.add(spec.cot)
        try:
            cot_record(Path(spec.cot), demo_settings(spec.config), spec.seed)
        except ValueError as e:
            problems.append(f"--cot-from: {e}")
    return problems


def train_runner(out: Path, progress: bool = True) -> Runner:
    """Runs of a train base: training on the run's resolved config, then evaluation of its final
    model — the functions ``kava train`` and ``kava eval`` run (`train_from_config`,
    `evaluate_checkpoint`), so their checks, locks and resume apply unchanged. What the commands
    print goes to the run's log; a refused start or an interruption stops the sweep (`SweepError`)."""

    def run(spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
        """Train (or continue) the run, then test its model on each test set."""
        import yaml

        from kava.runtime.outputs import write_atomic
        from kava.training.from_config import INPUT_ERRORS, RefusedStart, report_outcome, train_from_config
        from kava.training.run_config import load_run_config

        config = dict(spec.config["run_config"], output_dir=str(run_dir / "train"))
        if spec.config.get("start_from"):  # a table row trained from an earlier row's model (Coconut from CoT)
            config["model"] = {**config["model"], "source": str(start_export(out, spec)), "tokenizer": None}  # its own
        config_path = run_dir / "run_config.yaml"
        main = os.environ.get("RANK", "0") == "0"
        if main:
            write_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
        final_dir = run_dir / "train" / FINAL
        if not final_dir.is_dir():
            try:
                result = train_from_config(load_run_config(config_path), resume=True, progress=progress)
            except (RefusedStart, *INPUT_ERRORS) as e:
                raise SweepError(f"{spec.name}: training refused to start: {' '.join(str(e).split())}") from None
            report_outcome(result)
            if result.interrupted:
                raise StoppedAfterSaving(f"{spec.name}: training stopped (checkpoint {result.checkpoint})")
        if not main:
            return None
        tests = spec.config.get("tests")  # a table's test sets: eval/<dataset>/ each; a grid's one: eval/
        summaries = {}
        for ev in tests or [spec.config["eval"]]:
            eval_dir = run_dir / "eval" / ev["dataset"] if tests else run_dir / "eval"
            summaries[ev["dataset"]] = _evaluated(spec, run_dir / "train", ev, eval_dir, progress)
        first = (tests or [spec.config["eval"]])[0]
        history = [json.loads(line) for line in (run_dir / "train" / "history.jsonl").read_text().splitlines() if line]
        model = spec.config["run_config"]["model"]["source"]  # the row's base (a start's export is a path)
        return {"summary": summaries[first["dataset"]], **({"summaries": summaries} if tests else {}),
                "train_time_s": sum(e.get("step_time_s", 0.0) for e in history),
                "setting": {"model": model if isinstance(model, str) else "random config",
                            "train_data": config["data"]["name"], "eval_data": first["dataset"],
                            "eval_split": first["split"], "eval_limit": first["limit"],
                            "checkpoint": first.get("checkpoint", "final")}}

    return run


def _evaluated(spec: RunSpec, train_dir: Path, ev: dict[str, Any], eval_dir: Path, progress: bool) -> dict[str, Any]:
    """The summary of ``kava eval`` of the run's model (``ev["checkpoint"]``: final/ or best/) on one
    test set, evaluated into ``eval_dir`` unless it is there (an interrupted evaluation resumes)."""
    from kava.evaluation.results import SETTINGS_FILE, SUMMARY_FILE
    from kava.evaluation.resumable import EvaluationInterrupted, EvaluationRefused, evaluate_checkpoint, summary_line

    model_dir = train_dir / (BEST if ev.get("checkpoint") == "best" else FINAL)
    if not (eval_dir / SUMMARY_FILE).is_file():
        import torch

        try:
            summary = evaluate_checkpoint(
                model_dir, ev["dataset"], split=ev["split"], limit=ev["limit"], batch_size=ev["batch_size"],
                out=eval_dir, resume=(eval_dir / SETTINGS_FILE).is_file(), max_new_tokens=ev["max_new_tokens"],
                device="cuda" if torch.cuda.is_available() else "cpu", progress=progress)
        except EvaluationRefused as e:
            raise SweepError(f"{spec.name}: evaluation refused to start: {e}") from None
        except EvaluationInterrupted as e:
            raise StoppedAfterSaving(f"{spec.name}: evaluation stopped ({e})") from None
        print(summary_line(summary))
        print(f"wrote {eval_dir}")
    return json.loads((eval_dir / SUMMARY_FILE).read_text())


def start_export(out: Path, spec: RunSpec) -> Path:
    """The merged export of the model ``spec`` starts from (a finished run of this table, its
    tested checkpoint), written once into that run's folder (``export/``)."""
    from kava.training.from_config import export_trained
    from kava.training.run_config import load_run_config

    start = spec.config["start_from"]
    start_dir = Path(out) / "runs" / start
    try:
        metrics = read_metrics(start_dir)
    except ValueError as e:
        raise SweepError(f"{spec.name}: starts from {start}, which is not finished ({e}); run it first "
                         f"(--only {start})") from None
    export = start_dir / "export"
    if os.environ.get("RANK", "0") != "0":  # one process of a launch exports; the others wait for it
        import time

        while not (export / "config.json").is_file():
            time.sleep(5)
        return export.resolve()
    if not (export / "config.json").is_file():
        checkpoint = metrics["config"].get("eval", {}).get("checkpoint", "final")
        trained = start_dir / "train" / (BEST if checkpoint == "best" else FINAL)
        print(f"exporting {trained} (merged) for {spec.name}")
        export_trained(load_run_config(start_dir / "run_config.yaml"), trained, export)
    return export.resolve()


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _owned(run_dir: Path, main: bool) -> Iterator[None]:
    """The run's folder, locked by the main process: two jobs started on one run do not interleave."""
    from kava.runtime.outputs import hold

    if not main:
        yield
        return
    with hold(run_dir):
        yield


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


@contextlib.contextmanager
def _logged(path: Path, main: bool) -> Iterator[None]:
    """What the run prints goes to the terminal and to its ``run.log`` (appended: a resumed run
    keeps the log of its earlier attempts), with the traceback of a failure."""
    if not main:
        yield
        return
    with path.open("a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        try:
            yield
        except BaseException:
            log.write(traceback.format_exc())
            raise


def _write_json(path: Path, data: Any) -> None:
    from kava.runtime.outputs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2) + "\n")

