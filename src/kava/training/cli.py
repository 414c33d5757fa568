"""``kava train``: fine-tune from a YAML run config, resume it, or export the result.

    kava train --config configs/smollm2-135m.yaml                 # train
    kava train --config configs/smollm2-135m.yaml train.lr=1e-4   # with overrides
    kava train --config configs/smollm2-135m.yaml --resume        # continue after a stop
    kava train --config configs/smollm2-135m.yaml --export out/   # merge LoRA, standalone folder

Multi-GPU: ``accelerate launch [--config_file configs/accelerate_fsdp.yaml] -m kava.cli train ...``.
Configuration, dataset and model-source problems are reported as one line (exit status 2)
before anything slow happens.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config values, e.g. train.lr=1e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="instead of training: merge the trained LoRA into the base and write a standalone model to DIR")
    parser.add_argument("--from", dest="export_from", type=Path, metavar="DIR",
                        help="trained model or checkpoint to export (default: <output_dir>/final)")


def run(args: argparse.Namespace) -> int:
    from kava.config import ConfigError
    from kava.data.datasets import DatasetError
    from kava.data.records import RecordError
    from kava.training.run_config import load_run_config

    try:
        cfg = load_run_config(args.config, args.overrides)
        if args.export is not None:
            return _export(cfg, args.export, args.export_from)
        from kava.training.engine import check_output_dir  # imports torch: after the quick checks

        check_output_dir(cfg.output_dir, args.resume)
        records = load_records(cfg)
        eval_fn = make_eval_fn(cfg)
        model = build_model(cfg)
    except (ConfigError, DatasetError, RecordError, FileNotFoundError, FileExistsError) as e:
        print(f"kava train: error: {_one_line(e)}", file=sys.stderr)
        return 2

    from kava.training.engine import train

    if os.environ.get("RANK", "0") == "0":
        _write_yaml(Path(cfg.output_dir) / "run_config.yaml", cfg.to_dict())
    result = train(model, records, cfg.train, output_dir=cfg.output_dir, eval_fn=eval_fn, resume=args.resume)
    if result.history and os.environ.get("RANK", "0") == "0":
        last = result.history[-1]
        not_terms = ("step", "epoch", "lr", "tokens_per_s", "step_time_s", "eval_time_s", "max_memory_gb")
        terms = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in not_terms)
        print(f"step {result.step}: {terms}")
        print(f"trained model: {result.final_dir}" if result.final_dir else f"interrupted; resume from {result.checkpoint}")
    return 0


# --------------------------------------------------------------------------- building blocks

def build_model(cfg, method=None):
    """The `KavaModel` a run config describes (``method`` overrides the config's method).

    A random model (``model.source.config``) is initialised under ``train.seed``, so building it
    again — to resume or to export — gives the same base weights.
    """
    import torch

    from kava.config import ConfigError
    from kava.model.kava_model import KavaModel
    from kava.model.loading import load_base_model, resolve_source

    dtype = getattr(torch, cfg.model.dtype)
    key = "model.tokenizer" if isinstance(cfg.model.source, dict) else "model.source"
    try:
        if isinstance(cfg.model.source, dict):
            tokenizer = load_tokenizer(cfg.model.tokenizer)
            ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
            config = {"vocab_size": len(tokenizer), **ids, **cfg.model.source["config"]}
            source = {"kind": "config", "config": config, "seed": cfg.train.seed, "tokenizer": cfg.model.tokenizer}
            with torch.random.fork_rng():
                torch.manual_seed(cfg.train.seed)
                lm, _ = load_base_model(source, dtype=dtype)
        else:
            source = resolve_source(cfg.model.source)
            lm, tokenizer = load_base_model(source, dtype=dtype)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: cannot load {cfg.model.tokenizer or cfg.model.source!r}: {_one_line(e)}") from e
    return KavaModel(lm, tokenizer, method or cfg.method, base_source=source)


def load_tokenizer(name: str):
    """A tokenizer alone, from the same kinds of source as a model (smollm2, .gguf, folder, hub id)."""
    from transformers import AutoTokenizer

    from kava.model.loading import resolve_source

    source = resolve_source(name)
    if source["kind"] == "gguf":
        return AutoTokenizer.from_pretrained(source["path"], gguf_file=source["gguf_file"])
    return AutoTokenizer.from_pretrained(source["path"])


def load_records(cfg):
    """The training records, each checked up front: a bad row should stop the run now, not at hour 5."""
    from kava.data.datasets import load_dataset

    data = load_dataset(cfg.data.name, cfg.data.split, skip_bad=cfg.data.skip_bad, limit=cfg.data.limit)
    if data.skip_notice():
        print(data.skip_notice(), file=sys.stderr)
    need_steps = cfg.method.teacher_uses_cot and cfg.method.uses_teacher
    for i, r in enumerate(data.records):
        r.validate(need_steps=need_steps, where=f"{data.source} record {i}")
    print(f"training on {len(data)} records of {data.name} ({data.source})", file=sys.stderr)
    return data.records


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
    import json

    from kava.config import ConfigError, KavaConfig
    from kava.model.kava_model import BASE_FILE, CONFIG_FILE
    from kava.training.checkpoint import MODEL_DIR
    from kava.training.engine import FINAL
    from kava.training.export import export_merged

    trained = source or Path(cfg.output_dir) / FINAL
    if (trained / MODEL_DIR / CONFIG_FILE).is_file():  # a training checkpoint: its model/ folder
        trained = trained / MODEL_DIR
    if not (trained / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"--from: {trained} is not a trained kava model or checkpoint")
    model = build_model(cfg, KavaConfig.load(trained / CONFIG_FILE))
    saved = json.loads((trained / BASE_FILE).read_text())
    if saved != model.base_source:
        raise ConfigError(f"model.source: {trained} was trained on {saved}, the run config names {model.base_source}")
    model.load_trained(trained)
    print(f"wrote {export_merged(model, out)}")
    return 0


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
