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
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, Field

from kava.config import ConfigError, KavaConfig, preset
from kava.data.datasets import DatasetNotFoundError, dataset_entry
from kava.model.loading import ModelSource
from kava.runtime.validation import Bool, Int, Number, config_class, one_of, read_yaml_mapping

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
DTYPES = ("float32", "bfloat16", "float16")


@config_class("train")
class TrainConfig:
    """Training hyper-parameters of the engine (`kava.training.engine.train`).

    ``batch_size`` is the effective batch of one optimizer step, over all processes together;
    the engine derives gradient accumulation as ``batch_size / (micro_batch_size × processes)``,
    so a config means the same optimisation on one GPU or eight.
    """

    batch_size: Int = Field(128, ge=1, description="records per optimizer step, over all processes together")
    micro_batch_size: Int = Field(8, ge=1, description="records per forward on one process")
    epochs: Number | None = Field(None, gt=0, description="passes over the training records (may be fractional)")
    max_steps: Int | None = Field(None, ge=1, description="optimizer steps; when set, overrides epochs")
    lr: Number = Field(8e-4, gt=0, description="peak learning rate of AdamW (cosine schedule)")
    weight_decay: Number = Field(0.1, ge=0, description="AdamW weight decay")
    warmup_ratio: Number = Field(0.0, ge=0, le=1, description="fraction of the steps with a linear warmup")
    max_grad_norm: Number = Field(2.0, gt=0, description="gradient-norm clip")
    mixed_precision: Annotated[str, one_of(MIXED_PRECISION)] = Field(
        "auto", description="compute precision; auto: bf16 on a bf16 GPU, else fp32")
    cpu: Bool = Field(False, description="force the CPU (multi-process CPU runs under torchrun need it)")
    gradient_checkpointing: Bool = Field(False, description="recompute activations in the backward pass to save memory")
    seed: Int = Field(0, description="data order, dropout and a random model's weights")
    eval_every: Int | None = Field(None, ge=1, description="validate every this many steps (needs an eval section)")
    save_every: Int | None = Field(500, ge=1, description="checkpoint every this many steps; the last step is always saved")
    keep_last: Int = Field(2, ge=1, description="checkpoints kept on disk")
    max_train_length: Int | None = Field(
        None, ge=1, description="skip a step whose longest padded training sequence is longer (no update; the step counts), as official iCoT's max_len_train")
    reset_optimizer_every_epoch: Bool = Field(
        False, description="a fresh AdamW (moments and step count) at the first step of every epoch, as official Coconut (reset_optimizer)")
    report_to: tuple[Annotated[str, one_of(TRACKERS)], ...] = Field(
        ("tensorboard",), description="accelerate trackers the losses are logged to")

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} is not a multiple of train.micro_batch_size {self.micro_batch_size}"
            )

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


@config_class("model")
class ModelSpec:
    """Where the base model comes from; a random model (``{config: ...}``) needs a tokenizer source."""

    source: str | dict[str, Any] = Field(
        description="a hub id, a local folder, a .gguf file, smollm2, or {config: {...}} for a random model")
    tokenizer: str | None = Field(None, description="a random model's tokenizer source: smollm2, a folder or a hub id")
    dtype: Annotated[str, one_of(DTYPES)] = Field("float32", description="the weights' dtype; compute precision is train.mixed_precision")
    cot_trained: Bool = Field(False, description="declare model.source fine-tuned on the traces outside kava (a Coconut run's start); kava's own CoT exports are recognised without it")

    def __post_init__(self) -> None:
        if isinstance(self.source, dict):
            if set(self.source) != {"config"}:
                raise ConfigError(f"model.source: a random model is {{config: {{...}}}}, got keys {', '.join(map(str, self.source))}")
            if self.tokenizer is None:
                raise ConfigError("model.tokenizer: a random model (model.source.config) needs a tokenizer source")
            _parsed(self.tokenizer, "model.tokenizer")
            try:
                ModelSource("config", config=self.source["config"])
            except ConfigError as e:
                raise ConfigError(str(e).replace("base_model.", "model.source.", 1)) from None
        else:
            _parsed(self.source, "model.source")
            if self.tokenizer is not None:
                raise ConfigError("model.tokenizer: only a random model (model.source.config) takes a separate tokenizer")

    def to_source(self, seed: int, tokenizer: Any = None) -> ModelSource:
        """The `ModelSource` this section names. A random model is built for `tokenizer` (its
        vocabulary and special ids) and drawn under `seed`, both recorded so it can be rebuilt."""
        if not isinstance(self.source, dict):
            return ModelSource.parse(self.source)
        ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
        config = {"vocab_size": len(tokenizer), **ids, **self.source["config"]}
        return ModelSource("config", config=config, seed=seed, tokenizer=self.tokenizer)


def _parsed(name: str, key: str) -> ModelSource:
    """`ModelSource.parse` with its complaint keyed for the run config."""
    try:
        return ModelSource.parse(name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


def _dataset_name(name: str) -> str:
    """A registered dataset name or an existing file (`dataset_entry`'s check, as a field check)."""
    try:
        dataset_entry(name)
    except DatasetNotFoundError as e:
        raise ValueError(str(e)) from None
    return name


DatasetName = Annotated[str, AfterValidator(_dataset_name)]


def _dataset_split(name: str, split: str | None, prefix: str) -> Any:
    """`dataset_entry` for a known-good name: any error it raises is about the split."""
    try:
        return dataset_entry(name, split)
    except (DatasetNotFoundError, ValueError) as e:
        raise ConfigError(f"{prefix}.split: {e}") from None


@config_class("data")
class DataSpec:
    """Training records: a registered dataset name (`kava.data.datasets`) or a file."""

    name: DatasetName = Field(description="a registered dataset (kava.data.datasets) or a file of records")
    split: str | None = Field(None, description="the dataset's split; null: its training split")
    limit: Int | None = Field(None, ge=1, description="keep the first this many records")
    skip_bad: Bool = Field(False, description="skip malformed rows (each listed with where and why) instead of stopping at the first")

    def __post_init__(self) -> None:
        spec = _dataset_split(self.name, self.split, "data")
        if spec is not None and self.split is None:
            self.split = "train" if "train" in spec.splits else spec.default_split


@config_class("eval")
class EvalSpec:
    """Periodic validation (every ``train.eval_every`` steps and at the end) with `kava.evaluation`."""

    name: DatasetName = Field(description="a registered dataset (kava.data.datasets) or a file of records")
    split: str | None = Field(None, description="the dataset's split; null: its evaluation split")
    limit: Int | None = Field(None, ge=1, description="evaluate the first this many questions")
    batch_size: Int = Field(16, ge=1, description="questions decoded together")
    max_new_tokens: Int | None = Field(None, ge=1, description="generation budget per answer; null: the mode's default")
    keep_best: Bool = Field(False, description="keep best/: the model of the evaluation with the highest accuracy "
                                               "(ties: the earlier), as the official Coconut protocol selects")

    def __post_init__(self) -> None:
        _dataset_split(self.name, self.split, "eval")


def build_method(raw: Any) -> KavaConfig:
    """``{preset: name, knob: value, ...}`` → a validated `KavaConfig` (a bare string names the preset)."""
    if isinstance(raw, str):
        raw = {"preset": raw}
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping with a preset, got {raw!r}")
    knobs = dict(raw)
    return preset(knobs.pop("preset", None), **knobs)


def _section(raw: Any) -> Any:
    """An empty section (``train:`` in YAML reads as null) takes the defaults."""
    return {} if raw is None else raw


def _model_section(raw: Any) -> Any:
    """``model: smollm2`` is short for ``model: {source: smollm2}``."""
    return {"source": raw} if isinstance(raw, str) else _section(raw)


@config_class("")
class RunConfig:
    """A whole run: model, method, data, training hyper-parameters and where to write.

    Sections are checked in field order and the first error is reported, so the cheap ones
    come first and the model source (which may import torch) last but one.
    """

    output_dir: str = Field(description="where checkpoints, final/ and the logs go")
    method: Annotated[KavaConfig, BeforeValidator(build_method)] = Field(
        description="{preset: name} plus any method.* knob below; a bare string names the preset")
    data: Annotated[DataSpec, BeforeValidator(_section)] = Field(description="the training records")
    model: Annotated[ModelSpec, BeforeValidator(_model_section)] = Field(
        description="the base model; a bare string is its source")
    train: Annotated[TrainConfig, BeforeValidator(_section)] = Field(
        default_factory=TrainConfig, description="training hyper-parameters")
    eval: EvalSpec | None = Field(None, description="validation while training; null: none")

    def __post_init__(self) -> None:
        if self.eval is not None and self.eval.keep_best and self.train.eval_every is None:
            raise ConfigError("eval.keep_best: needs train.eval_every (validated only at the end, best/ would be final/)")

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


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override (``train.lr=1e-4``) and validate a run config; raises `ConfigError`."""
    path = Path(path)
    data = read_yaml_mapping(path, missing=f"--config: no such file {path}",
                             expected="of sections (model, method, data, train, output_dir)")
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


def with_train_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved train section with the settings added since it was written at their defaults (it
    ran with them), so a resume compares like with like."""
    defaults = {k: _plain(v) for k, v in dataclasses.asdict(TrainConfig()).items()}
    return {**defaults, **saved}


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate raw config data (as read from YAML) into a `RunConfig`."""
    return RunConfig(**{str(k): v for k, v in data.items()})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
