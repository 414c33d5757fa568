"""``kava train``: fine-tune from a YAML run config, resume it, or export the result.

    kava train --config configs/smollm2-135m.yaml                 # train
    kava train --config configs/smollm2-135m.yaml train.lr=1e-4   # with overrides
    kava train --config configs/smollm2-135m.yaml --resume        # continue after a stop
    kava train --config configs/smollm2-135m.yaml --export out/   # merge LoRA, standalone folder

Multi-GPU: ``accelerate launch [--config_file configs/accelerate_fsdp.yaml] -m kava.cli train ...``.
Every problem with the inputs — configuration, dataset, model source, output folder, a resume
that does not match the run — is reported as one line (exit status 2, `kava.exits`) before
anything slow happens, and leaves the output folder as it was. A run owns its output folder
while it works (`kava.outputs`); stopped by SIGINT / SIGTERM it saves a checkpoint and exits
with status 75, finished with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import yaml

RUN_CONFIG = "run_config.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config values, e.g. train.lr=1e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="instead of training: merge the trained LoRA into the base and write a standalone model to DIR")
    parser.add_argument("--from", dest="export_from", type=Path, metavar="DIR",
                        help="trained model or checkpoint to export (default: <output_dir>/final)")


def run(args: argparse.Namespace) -> int:
    from kava import exits
    from kava.config import ConfigError
    from kava.data.datasets import DatasetError
    from kava.data.records import RecordError
    from kava.integrity import CorruptFile
    from kava.outputs import hold
    from kava.training.run_config import load_run_config

    main = os.environ.get("RANK", "0") == "0"
    with contextlib.ExitStack() as owned:
        try:
            cfg = load_run_config(args.config, args.overrides)
            if args.export is not None:
                return _export(cfg, args.export, args.export_from)
            data, eval_fn = check_start(cfg, args.resume, main)
            if main:
                owned.enter_context(hold(cfg.output_dir))
                _report_data(data)
            model = build_model(cfg)
        except (ConfigError, DatasetError, RecordError, FileNotFoundError, FileExistsError, CorruptFile) as e:
            print(f"kava train: error: {_one_line(e)}", file=sys.stderr)
            return exits.BAD_INPUT

        from kava.training.engine import train

        if main:
            _write_yaml(Path(cfg.output_dir) / RUN_CONFIG, cfg.to_dict())
        result = train(model, data.records, cfg.train, output_dir=cfg.output_dir, eval_fn=eval_fn, resume=args.resume)
    if result.history and main:
        last = result.history[-1]
        not_terms = ("step", "epoch", "lr", "tokens_per_s", "step_time_s", "eval_time_s", "max_memory_gb")
        terms = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in not_terms)
        print(f"step {result.step}: {terms}")
        print(f"trained model: {result.final_dir}" if result.final_dir else f"interrupted; resume from {result.checkpoint}")
    return exits.INTERRUPTED if result.interrupted else exits.OK


def check_start(cfg, resume: bool, main: bool):
    """Everything that can refuse a start, checked before anything slow or written: the output
    folder (free, not a file, not an earlier run unless resuming), the split of the batch over
    the processes, the training records, and on ``--resume`` that this is the same run.

    Returns the training data (`LoadedDataset`) and the evaluation callback.
    """
    from kava.config import ConfigError
    from kava.outputs import check_free
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
    data = load_records(cfg)
    if resume:
        check_resume(cfg, fitted, len(data), world)
    return data, make_eval_fn(cfg)


def check_resume(cfg, fitted, n_records: int, world: int) -> None:
    """``--resume`` must continue the run in ``output_dir``: the same settings (apart from logging,
    checkpoint cadence and validation), records and processes, from a checkpoint that is whole."""
    from kava.config import ConfigError
    from kava.integrity import check_model_dir
    from kava.outputs import differences
    from kava.training.checkpoint import (
        MODEL_DIR,
        NOT_TRAJECTORY,
        STATE_FILE,
        TrainerState,
        count_conflicts,
        latest_checkpoint,
    )
    from kava.layout import CHECKPOINTS
    from kava.training.engine import plain_config

    out = Path(cfg.output_dir)
    diffs = []
    if (out / RUN_CONFIG).is_file():
        saved = yaml.safe_load((out / RUN_CONFIG).read_text())
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


# --------------------------------------------------------------------------- building blocks

def build_model(cfg, method=None):
    """The `KavaModel` a run config describes (``method`` overrides the config's method).

    Everything initialised is drawn under ``train.seed`` — a random base (``model.source.config``,
    its seed recorded in ``base_model.json``), the LoRA matrices and the projection φ — so two
    fresh runs of one config are the same run, and building it again (to resume, to export, or
    in ``kava eval``) gives the same base weights.
    """
    import torch

    from kava.config import ConfigError
    from kava.model.kava_model import KavaModel
    from kava.model.loading import ModelSource

    random = isinstance(cfg.model.source, dict)
    key = "model.tokenizer" if random else "model.source"
    try:
        tokenizer = ModelSource.parse(cfg.model.tokenizer if random else cfg.model.source).load_tokenizer()
        source = cfg.model.to_source(cfg.train.seed, tokenizer)
        lm = source.load_model(dtype=getattr(torch, cfg.model.dtype))
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: cannot load {cfg.model.tokenizer or cfg.model.source!r}: {_one_line(e)}") from e
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # LoRA's A matrices and φ are drawn here: train.seed decides them too
        return KavaModel(lm, tokenizer, method or cfg.method, base_source=source)


def load_records(cfg):
    """The training data, each record checked up front: a bad row should stop the run now, not at hour 5."""
    from kava.data.datasets import DatasetError, load_dataset

    data = load_dataset(cfg.data.name, cfg.data.split, skip_bad=cfg.data.skip_bad, limit=cfg.data.limit)
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


def make_eval_fn(cfg):
    """``eval_fn`` for the engine from the config's ``eval`` section (None without one)."""
    if cfg.eval is None:
        return None
    from kava.data.datasets import load_dataset
    from kava.evaluation.evaluate import evaluate

    spec = cfg.eval
    data = load_dataset(spec.name, spec.split, limit=spec.limit)

    def eval_fn(model) -> dict[str, float]:
        s = evaluate(model, data, batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens, progress=False).summary
        return {"accuracy": s["accuracy"], "mean_forward_passes": s["mean_forward_passes"]}

    return eval_fn


def _export(cfg, out: Path, source: Path | None) -> int:
    from kava.config import ConfigError, KavaConfig
    from kava.integrity import check_model_dir
    from kava.layout import FINAL
    from kava.model.kava_model import CONFIG_FILE, find_model_dir
    from kava.model.loading import ModelSource
    from kava.training.export import export_merged

    try:
        trained = find_model_dir(source or Path(cfg.output_dir) / FINAL)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--from: {e}") from None
    check_model_dir(trained)
    model = build_model(cfg, KavaConfig.load(trained / CONFIG_FILE))
    saved = ModelSource.read(trained)
    if saved != model.base_source:
        raise ConfigError(f"model.source: {trained} was trained on {saved and saved.to_json()}, "
                          f"the run config names {model.base_source.to_json()}")
    model.load_trained(trained)
    print(f"wrote {export_merged(model, out)}")
    return 0


def _write_yaml(path: Path, data: dict) -> None:
    from kava.outputs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
