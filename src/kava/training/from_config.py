"""Train from a run config: ``kava train`` without the command line, for scripts and tests.

Every problem with the inputs — configuration, dataset, model source, output folder, a resume
that does not match the run — is refused (`RefusedStart`) before anything slow happens, and
leaves the output folder as it was. A run owns its output folder while it works
(`kava.runtime.outputs`); stopped by SIGINT / SIGTERM it saves a checkpoint and returns interrupted.
A write the disk refuses, at the start or mid-run, raises `kava.runtime.disk.WriteFailed` (not a
refused start: the inputs were fine; the last checkpoint is intact and a resume continues).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kava.config import ConfigError
from kava.data.datasets import DatasetError
from kava.data.records import RecordError
from kava.runtime.integrity import CorruptFile

if TYPE_CHECKING:
    from kava.training.engine import TrainResult

RUN_CONFIG = "run_config.yaml"
# What bad inputs raise: a start that meets one is refused, not crashed.
INPUT_ERRORS = (ConfigError, DatasetError, RecordError, FileNotFoundError, FileExistsError, CorruptFile)


class RefusedStart(Exception):
    """The run was refused before any work; the message says why (its cause is the input error).

    A class of its own so that an input error raised later, mid-training, is not mistaken for
    a refused start."""


def train_from_config(cfg, *, resume: bool = False, progress: bool = True, data_dir: str | Path | None = None):
    """Train the run `cfg` (a `RunConfig`) describes, or continue it (`resume`); returns the
    engine's `TrainResult`. Raises `RefusedStart` when the inputs refuse a start. `data_dir` is
    the folder its registered datasets are read from (``--data-dir``; else ``$KAVA_DATA_DIR``,
    else the hub: `kava.data.datasets.named_data_dir`)."""
    from kava.runtime.outputs import hold
    from kava.training.engine import train

    main = os.environ.get("RANK", "0") == "0"
    with contextlib.ExitStack() as owned:
        try:
            data, eval_fn = check_start(cfg, resume, main, data_dir=data_dir)
            if main:
                owned.enter_context(hold(cfg.output_dir))
                _report_data(data)
            model = build_model(cfg, before_weights=lambda tok: _warn_if_too_big(cfg, tok, data.records) if main else None)
        except INPUT_ERRORS as e:
            raise RefusedStart(" ".join(str(e).split())) from e
        if main:
            _write_yaml(Path(cfg.output_dir) / RUN_CONFIG, cfg.to_dict())
        return train(model, data.records, cfg.train, output_dir=cfg.output_dir, eval_fn=eval_fn, resume=resume,
                     progress=progress, dataset=cfg.data.name, **_best_options(cfg))


def report_outcome(result: TrainResult, echo: Callable[[str], None] = print) -> None:
    """What ``kava train`` (and a sweep's run, into its log) prints when `train_from_config` returns:
    the last step's loss terms, then the trained model's folder or, when interrupted, the checkpoint
    to resume from. Only the main process of a launch prints (the others hold the same result)."""
    if not result.history or os.environ.get("RANK", "0") != "0":
        return
    last = result.history[-1]
    not_terms = ("step", "epoch", "lr", "tokens_per_s", "step_time_s", "eval_time_s", "max_memory_gb")
    terms = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in not_terms)
    echo(f"step {result.step}: {terms}")
    echo(f"trained model: {result.final_dir}" if result.final_dir else f"interrupted; resume from {result.checkpoint}")


def check_start(cfg, resume: bool, main: bool, data_dir: str | Path | None = None):
    """Everything that can refuse a start, checked before anything slow or written: the output
    folder (free, not a file, not an earlier run unless resuming), the split of the batch over
    the processes, the training records, and on ``--resume`` that this is the same run.

    Returns the training data (`LoadedDataset`) and the evaluation callback.
    """
    from kava.runtime.outputs import check_free
    from kava.training.engine import check_output_dir  # imports torch: after the config checks

    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output_dir: {out} is a file, not a folder")
    if main:
        check_free(out)
    check_output_dir(out, resume)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fitted = cfg.train.for_processes(world)
    if world > 1 and not cfg.train.cpu:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"train.cpu: {world} processes without a GPU need train.cpu: true")
    data = load_records(cfg, data_dir)
    check_cot_start(cfg)
    if resume:
        check_resume(cfg, fitted, len(data), world)
    return data, make_eval_fn(cfg, data_dir)


def check_resume(cfg, fitted, n_records: int, world: int) -> None:
    """``--resume`` must continue the run in ``output_dir``: the same settings (apart from logging,
    checkpoint cadence and validation), records and processes, from a checkpoint that is whole."""
    from kava.model.persistence import check_model_dir
    from kava.runtime.outputs import differences
    from kava.training.checkpoint import (
        MODEL_DIR,
        NOT_TRAJECTORY,
        STATE_FILE,
        TrainerState,
        count_conflicts,
        latest_checkpoint,
    )
    from kava.runtime.layout import CHECKPOINTS
    from kava.training.engine import plain_config
    from kava.training.run_config import with_train_defaults

    out = Path(cfg.output_dir)
    diffs = []
    if (out / RUN_CONFIG).is_file():
        saved = yaml.safe_load((out / RUN_CONFIG).read_text())
        saved["train"] = with_train_defaults(saved.get("train") or {})
        diffs = differences(saved, cfg.to_dict(), ("output_dir", "eval", *NOT_TRAJECTORY))
    ckpt = latest_checkpoint(out / CHECKPOINTS)
    if ckpt is not None:
        current = TrainerState(step=0, samples_seen=0, total_steps=fitted.total_steps(n_records), world_size=world,
                               data_size=n_records, train_config=plain_config(fitted))
        diffs += count_conflicts(TrainerState.load(ckpt / STATE_FILE), current)
    if diffs:
        raise ConfigError(f"--resume: {out} holds a different run ({'; '.join(diffs)}); "
                          "resume with its settings, or train into a new output_dir")
    if ckpt is not None:
        check_model_dir(ckpt / MODEL_DIR)


def check_cot_start(cfg) -> None:
    """Refuse, in one line, a run whose method expects a CoT-trained start from a source that is not one.

    Coconut from stage 1 on (``method.start_stage >= 1``) skips the stage that teaches the trace:
    the official run loads a CoT-trained checkpoint (``load_model_path``). Started from an instruct
    model it trains for days towards a number that is not Coconut's, so kava refuses rather than
    warns (a warning scrolls past in a cluster log). A source is CoT-trained when it is a kava model
    folder or export of the ``cot`` preset (its ``kava_config.json``), or when the config declares it
    (``model.cot_trained: true``, for a model trained outside kava); ``method.start_stage: 0`` trains
    the CoT stage in the run instead."""
    method = cfg.method
    if method.curriculum != "coconut" or method.start_stage == 0 or cfg.model.cot_trained:
        return
    import json

    from kava.model.persistence import CONFIG_FILE

    source = cfg.model.source
    config = Path(source) / CONFIG_FILE if isinstance(source, str) else None
    if config is not None and config.is_file() and json.loads(config.read_text()).get("method") == "cot":
        return
    shown = "a random model" if isinstance(source, dict) else repr(source)
    raise ConfigError(f"model.source: Coconut from stage {method.start_stage} starts from a CoT-trained model (the "
                      f"official run loads one), and {shown} is not a kava CoT model; pass model.source=<a `kava train "
                      f"--export` of a cot run>, declare an outside one with model.cot_trained=true, or train the CoT "
                      f"stage too with method.start_stage=0")


# --------------------------------------------------------------------------- building blocks

def build_model(cfg, method=None, before_weights: Callable[[Any], None] | None = None):
    """The `KavaModel` a run config describes (``method`` overrides the config's method).

    Everything initialised is drawn under ``train.seed`` — a random base (``model.source.config``,
    its seed recorded in ``base_model.json``), the LoRA matrices and the projection φ — so two
    fresh runs of one config are the same run, and building it again (to resume, to export, or
    in ``kava eval``) gives the same base weights. ``before_weights(tokenizer)`` runs once the
    tokenizer is loaded and before the weights are (``kava train``'s memory check).
    """
    import torch

    from kava.model.kava_model import KavaModel
    from kava.model.loading import ModelSource

    random = isinstance(cfg.model.source, dict)
    key = "model.tokenizer" if random else "model.source"
    try:
        tokenizer = ModelSource.parse(cfg.model.tokenizer if random else cfg.model.source).load_tokenizer()
        source = cfg.model.to_source(cfg.train.seed, tokenizer)
        if before_weights is not None:
            before_weights(tokenizer)
        lm = source.load_model(dtype=getattr(torch, cfg.model.dtype))
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: cannot load {cfg.model.tokenizer or cfg.model.source!r}: {' '.join(str(e).split())}") from e
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # LoRA's A matrices and φ are drawn here: train.seed decides them too
        return KavaModel(lm, tokenizer, method or cfg.method, base_source=source)


def export_trained(cfg, trained: str | Path, out: str | Path) -> Path:
    """Merge the model trained in ``trained`` (a run's ``final/``, ``best/`` or a checkpoint's
    ``model/``) into the base `cfg` names and write the standalone folder ``out``
    (`kava.training.export.export_merged`); a model trained on another base is a `ConfigError`."""
    from kava.config import KavaConfig
    from kava.model.loading import ModelSource
    from kava.model.persistence import CONFIG_FILE, check_model_dir
    from kava.training.export import export_merged

    trained = Path(trained)
    check_model_dir(trained)
    model = build_model(cfg, KavaConfig.load(trained / CONFIG_FILE))
    saved = ModelSource.read(trained)
    if saved != model.base_source:
        raise ConfigError(f"model.source: {trained} was trained on {saved and saved.to_json()}, "
                          f"the run config names {model.base_source.to_json()}")
    model.load_trained(trained)
    return export_merged(model, out, trained_dir=trained)


def _warn_if_too_big(cfg, tokenizer, records) -> None:
    """One line on stderr when the planner says the run does not fit this machine's device
    (`kava.training.plan.fit_warning`: a meta model and a sample of the records, no weights)."""
    from kava.training.plan import fit_warning

    warning = fit_warning(cfg, tokenizer, records)
    if warning:
        print(warning, file=sys.stderr)


def load_records(cfg, data_dir: str | Path | None = None):
    """The training data, each record checked up front: a bad row should stop the run now, not at hour 5."""
    from kava.data.datasets import load_dataset

    data = load_dataset(cfg.data.name, cfg.data.split, data_dir=data_dir, skip_bad=cfg.data.skip_bad,
                        limit=cfg.data.limit)
    if not data.records:
        raise DatasetError(f"data.name: no training records in {data.source}")
    need_steps = cfg.method.teacher_uses_cot and cfg.method.uses_teacher
    for i, r in enumerate(data.records):
        r.validate(need_steps=need_steps, where=f"{data.source} record {i}")
    return data


def _report_data(data) -> None:
    """What the run trains on, said once the start is accepted (a refusal stays one line)."""
    if data.skip_notice():
        print(data.skip_notice(), file=sys.stderr)
    print(f"training on {len(data)} records of {data.name} ({data.source})", file=sys.stderr)


def make_eval_fn(cfg, data_dir: str | Path | None = None):
    """``eval_fn`` for the engine from the config's ``eval`` section (None without one)."""
    if cfg.eval is None:
        return None
    from kava.data.datasets import load_dataset
    from kava.evaluation.evaluate import evaluate

    spec = cfg.eval
    data = load_dataset(spec.name, spec.split, data_dir=data_dir, limit=spec.limit)

    def eval_fn(model) -> dict[str, float]:
        s = evaluate(model, data, batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens, progress=False).summary
        return {"accuracy": s["accuracy"], "mean_forward_passes": s["mean_forward_passes"]}

    return eval_fn


def _best_options(cfg) -> dict[str, Any]:
    """The engine's best/ options from ``eval.keep_best``: kept, and what the validation reads (for its card)."""
    spec = cfg.eval
    if spec is None or not spec.keep_best:
        return {}
    split = f" [{spec.split}]" if spec.split else ""
    first = f", the first {spec.limit:,} questions" if spec.limit else ""
    return {"keep_best": True, "eval_data": f"{Path(spec.name).name}{split}{first}"}


def _write_yaml(path: Path, data: dict) -> None:
    from kava.runtime.outputs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))
