"""Run configuration: one YAML file says what to train, on what, and how.

A run config has five top-level keys, and an optional sixth (``eval``)::

    output_dir: runs/llama1b-aug
    model:  {source: meta-llama/Llama-3.2-1B-Instruct}       # or smollm2, a folder, a .gguf file,
                                                              # or {config: {...}} for a random model
    method: {preset: kava, alpha_codi: 10, kv_loss: mse}      # a preset plus any KavaConfig knob
    data:   {name: gsm8k-train-aug}                           # a registered dataset or a file
    train:  {batch_size: 128, micro_batch_size: 8, lr: 8e-4, epochs: 10}
    eval:   {name: gsm8k-aug, split: valid, limit: 200}      # validation every train.eval_every steps

Everything is checked before any model is loaded, so a typo costs seconds, not a queued GPU job:
every error is a `ConfigError` with a one-line message naming the key (``train.lr``) and the
offending value. ``key=value`` overrides from the command line go through the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kava.config import PRESETS, ConfigError, KavaConfig, preset
from kava.model.arch import SUPPORTED_ARCHITECTURES

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict[str, Any]:
    """Field metadata for a numeric range, checked by `check_fields`."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


@dataclass
class TrainConfig:
    """Training hyper-parameters of the engine (`kava.training.engine.train`).

    ``batch_size`` is the effective batch of one optimizer step, over all processes together;
    the engine derives gradient accumulation as ``batch_size / (micro_batch_size × processes)``,
    so a config means the same optimisation on one GPU or eight.
    """

    batch_size: int = field(default=128, metadata=_range(1))
    micro_batch_size: int = field(default=8, metadata=_range(1))  # records per forward on one process
    epochs: float | None = field(default=None, metadata=_range(0, lo_open=True))
    max_steps: int | None = field(default=None, metadata=_range(1))  # when set, overrides epochs
    lr: float = field(default=8e-4, metadata=_range(0, lo_open=True))
    weight_decay: float = field(default=0.1, metadata=_range(0))
    warmup_ratio: float = field(default=0.0, metadata=_range(0, 1))  # fraction of steps of linear warmup
    max_grad_norm: float = field(default=2.0, metadata=_range(0, lo_open=True))
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a bf16 GPU, else fp32
    cpu: bool = False  # force CPU (needed for multi-process CPU runs under torchrun)
    gradient_checkpointing: bool = False
    seed: int = 0
    eval_every: int | None = field(default=None, metadata=_range(1))  # steps; needs an eval_fn
    save_every: int | None = field(default=500, metadata=_range(1))  # steps; the last step is always saved
    keep_last: int = field(default=2, metadata=_range(1))  # checkpoints kept on disk
    report_to: tuple[str, ...] = ("tensorboard",)  # accelerate trackers: tensorboard, wandb

    def __post_init__(self) -> None:
        self.report_to = tuple(self.report_to)
        check_fields(self, "train")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} is not a multiple of train.micro_batch_size {self.micro_batch_size}"
            )
        for name in self.report_to:
            if name not in TRACKERS:
                raise ConfigError(f"train.report_to: {name!r} is not one of {', '.join(TRACKERS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"train.mixed_precision: {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}")

    def for_processes(self, world: int) -> "TrainConfig":
        """This config on ``world`` processes: ``micro_batch_size`` shrinks, if it must, to the
        largest size that splits the global batch evenly over the processes.

        The records of a step stay the same (the global batch is the run's identity); only how
        many a process takes per forward changes, so ``torchrun --nproc_per_node 2`` runs a
        config written for one process as shipped. A batch that cannot split is a `ConfigError`.
        """
        if self.batch_size % world:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} does not split over {world} processes; use a multiple of {world}"
            )
        per_process = self.batch_size // world
        micro = max(d for d in range(1, min(self.micro_batch_size, per_process) + 1) if per_process % d == 0)
        return self if micro == self.micro_batch_size else dataclasses.replace(self, micro_batch_size=micro)

    def total_steps(self, n_records: int | None) -> int:
        """Optimizer steps of the run: ``max_steps``, else ``epochs`` over ``n_records`` (None: a stream)."""
        if self.max_steps is not None:
            return self.max_steps
        if self.epochs is None:
            raise ConfigError("train: set train.epochs or train.max_steps")
        if n_records is None:
            raise ConfigError("train.max_steps: a record stream has no epochs; set train.max_steps")
        return max(1, math.ceil(self.epochs * n_records / self.batch_size))


@dataclass
class ModelSpec:
    """Where the base model comes from; a random model (``{config: ...}``) needs a tokenizer source."""

    source: str | dict[str, Any]
    tokenizer: str | None = None  # tokenizer source for a random model: smollm2, a folder or a hub id
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights; compute precision is train.mixed_precision

    def __post_init__(self) -> None:
        check_fields(self, "model")
        if isinstance(self.source, dict):
            _check_config_source(self.source)
            if self.tokenizer is None:
                raise ConfigError("model.tokenizer: a random model (model.source.config) needs a tokenizer source")
            _check_model_name(self.tokenizer, "model.tokenizer")
        else:
            _check_model_name(self.source, "model.source")
            if self.tokenizer is not None:
                raise ConfigError("model.tokenizer: only a random model (model.source.config) takes a separate tokenizer")


@dataclass
class DataSpec:
    """Training records: a registered dataset name (`kava.data.datasets`) or a file."""

    name: str
    split: str | None = None  # default: the dataset's training split
    limit: int | None = field(default=None, metadata=_range(1))  # keep the first `limit` records
    skip_bad: bool = False

    def __post_init__(self) -> None:
        from kava.data.datasets import REGISTRY

        check_fields(self, "data")
        spec = REGISTRY.get(self.name)
        if spec is None:
            if not Path(self.name).expanduser().is_file():
                raise ConfigError(
                    f"data.name: {self.name!r} is neither a registered dataset ({', '.join(REGISTRY)}) nor an existing file"
                )
            if self.split is not None:
                raise ConfigError(f"data.split: {self.split!r} applies to registered datasets only, not a file")
            return
        if self.split is None:
            self.split = "train" if "train" in spec.splits else spec.default_split
        if self.split not in spec.splits:
            raise ConfigError(f"data.split: {self.split!r} is not a split of {self.name} ({', '.join(spec.splits)})")


@dataclass
class EvalSpec:
    """Periodic validation (every ``train.eval_every`` steps and at the end) with `kava.evaluation`."""

    name: str
    split: str | None = None  # default: the dataset's evaluation split
    limit: int | None = field(default=None, metadata=_range(1))  # evaluate the first `limit` questions
    batch_size: int = field(default=16, metadata=_range(1))
    max_new_tokens: int | None = field(default=None, metadata=_range(1))

    def __post_init__(self) -> None:
        from kava.data.datasets import REGISTRY

        check_fields(self, "eval")
        spec = REGISTRY.get(self.name)
        if spec is None and not Path(self.name).expanduser().is_file():
            raise ConfigError(f"eval.name: {self.name!r} is neither a registered dataset nor an existing file")
        if spec is not None and self.split is not None and self.split not in spec.splits:
            raise ConfigError(f"eval.split: {self.split!r} is not a split of {self.name} ({', '.join(spec.splits)})")


@dataclass
class RunConfig:
    """A whole run: model, method, data, training hyper-parameters and where to write."""

    output_dir: str
    model: ModelSpec
    method: KavaConfig
    data: DataSpec
    train: TrainConfig
    eval: EvalSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML-ready plain data (written next to the run for the record)."""
        method = {"preset": self.method.method}
        base = dataclasses.asdict(preset(self.method.method))
        method.update({k: v for k, v in self.method.to_dict().items() if k != "method" and v != _plain(base[k])})
        return {
            "output_dir": self.output_dir,
            "model": dataclasses.asdict(self.model),
            "method": method,
            "data": dataclasses.asdict(self.data),
            "train": {k: _plain(v) for k, v in dataclasses.asdict(self.train).items()},
            "eval": None if self.eval is None else dataclasses.asdict(self.eval),
        }


# Checked in this order: the cheap sections first, the model source (which may import torch) last.
SECTIONS = {"train": TrainConfig, "data": DataSpec, "model": ModelSpec}


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override (``train.lr=1e-4``) and validate a run config; raises `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, method, data, train, output_dir)")
    for item in overrides or []:
        apply_override(data, item)
    return run_config_from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``section.key=value`` in the raw config; the value is parsed as YAML (``3``, ``true``, ``[a, b]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse {raw!r} ({' '.join(str(e).split())})") from e
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[last] = value


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate raw config data (as read from YAML) into a `RunConfig`."""
    known = ("output_dir", "model", "method", "data", "train", "eval")
    _reject_unknown(data, known, "")
    for key in ("output_dir", "model", "method", "data"):
        if key not in data:
            raise ConfigError(f"{key}: missing (a run config needs {', '.join(known)})")
    output_dir = _coerce(data["output_dir"], str, "output_dir")
    method = build_method(data["method"])
    sections = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name) or {}
        if name == "model" and isinstance(raw, str):
            raw = {"source": raw}
        sections[name] = build_section(cls, raw, name)
    evaluation = None if data.get("eval") is None else build_section(EvalSpec, data["eval"], "eval")
    return RunConfig(output_dir=output_dir, method=method, eval=evaluation, **sections)


def build_section(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate a section dataclass from a mapping, rejecting unknown keys and missing required ones."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(raw, fields, prefix)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in raw:
            raise ConfigError(f"{prefix}.{name}: missing")
    return cls(**raw)


def build_method(raw: Any) -> KavaConfig:
    """``{preset: name, knob: value, ...}`` → a validated `KavaConfig` (a bare string names the preset)."""
    if isinstance(raw, str):
        raw = {"preset": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"method: expected a mapping with a preset, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("preset", None)
    if name not in PRESETS:
        raise ConfigError(f"method.preset: {name!r} is not one of {', '.join(PRESETS)}")
    hints = typing.get_type_hints(KavaConfig)
    knobs = set(hints) - {"method"}
    _reject_unknown(raw, knobs, "method")
    values = {k: _coerce(v, hints[k], f"method.{k}") for k, v in raw.items()}
    try:
        return preset(name, **values)
    except ConfigError as e:
        raise ConfigError(f"method: {e}") from e


def check_fields(obj: Any, prefix: str) -> None:
    """Type-check (and normalise numbers in) every field of a config dataclass, then check its range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}"
        value = _coerce(getattr(obj, f.name), hints[f.name], key)
        setattr(obj, f.name, value)
        if f.metadata and value is not None:
            lo, hi, lo_open = f.metadata["lo"], f.metadata["hi"], f.metadata["lo_open"]
            if lo is not None and (value <= lo if lo_open else value < lo):
                raise ConfigError(f"{key}: must be {'>' if lo_open else '>='} {lo}, got {value!r}")
            if hi is not None and value > hi:
                raise ConfigError(f"{key}: must be <= {hi}, got {value!r}")


# --------------------------------------------------------------------------- helpers

def _reject_unknown(raw: dict[str, Any], known, prefix: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint``; ints widen to floats, numeric strings to floats.

    PyYAML reads ``8e-4`` (no dot) as a string, so float fields accept strings that parse as one.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue  # try the next alternative; the error below names them all
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({type(value).__name__})")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r} ({type(value).__name__})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r} (bool)")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r} ({type(value).__name__})")
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
        return value
    raise TypeError(f"{key}: unsupported field type {hint!r}")


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    args = typing.get_args(hint)
    parts = [names.get(a, "a mapping" if typing.get_origin(a) is dict else str(a)) for a in args]
    return " or ".join(parts)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_model_name(name: str, key: str) -> None:
    """A model or tokenizer source must be smollm2, an existing folder or .gguf file, or a hub id."""
    if name == "smollm2":
        from kava.model.loading import smollm2_source

        try:
            smollm2_source()
        except FileNotFoundError as e:
            raise ConfigError(f"{key}: {e}") from e
        return
    p = Path(name).expanduser()
    path_like = name.startswith(("/", "./", "../", "~")) or p.suffix == ".gguf" or p.exists()
    if path_like:
        if p.suffix == ".gguf" and not p.is_file():
            raise ConfigError(f"{key}: no such GGUF file {name!r}")
        if p.suffix != ".gguf" and not p.is_dir():
            raise ConfigError(f"{key}: no such model folder {name!r}")
        return
    if not _HUB_ID.match(name):
        raise ConfigError(f"{key}: {name!r} is neither smollm2, an existing folder or .gguf file, nor a hub id")


def _check_config_source(source: dict[str, Any]) -> None:
    _reject_unknown(source, ("config",), "model.source")
    config = source.get("config")
    if not isinstance(config, dict):
        raise ConfigError("model.source.config: expected a mapping of model config fields (with model_type)")
    if config.get("model_type") not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"model.source.config.model_type: {config.get('model_type')!r} is not one of {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
