"""`plan`: what a run config will need — memory per device, disk, steps — before renting the GPUs.

No weights are loaded. The base is built on the meta device (accelerate's ``init_empty_weights``
+ ``AutoModelForCausalLM.from_config``) from its shape (`kava.model.known_shapes`), the LoRA
adapters are injected into it by PEFT's ``get_peft_model`` with the config's r and targets, and
the projection φ is the real `LatentProjection`: parameter counts are those of the code that
trains. accelerate's ``calculate_maximum_sizes`` gives the base's bytes and its largest layer
(what FSDP gathers at once).

Memory of one process, the parts and why:

- **weights**: the base in ``model.dtype``; LoRA in fp32 (PEFT upcasts adapters of a half-precision
  base); φ and the new token rows in ``model.dtype`` (kava casts them to the base's dtype).
  ``train.mixed_precision: bf16`` is accelerate's autocast: it keeps the weights as they are (no
  separate master copy; with ``model.dtype: float32`` they are the fp32 master).
- **gradients and AdamW**: one gradient and two moments (``exp_avg``, ``exp_avg_sq``) per trainable
  parameter, in the parameter's dtype (torch's AdamW allocates them like the parameter).
- **activations**: what autograd saves for backward in one micro-batch at the sample's 95th-percentile
  lengths, per decoder layer and token of every pass that runs with gradient (the teacher's
  pass over ``[bos] Q C' P A [eos]``; the student's opening pass, its T Jacobi passes and its
  answer pass — `kava.model.kava_model`), counted tensor by tensor for a Llama-family layer
  (`_layer_saved`); plus the KV caches the passes keep, the CE's log-softmax over the vocabulary
  at the predicted rows, and, under autocast with an fp32 base, the low-precision copy of every
  frozen weight each pass saves for its backward (autocast caches casts of trainable leaves only).
  With gradient checkpointing (kava's, per layer with its cache) a pass keeps each layer's input
  and its cache, and one layer's activations exist at a time during backward.
- **transients**: the eviction's score tensors and the stacked teacher cache (under ``no_grad``).
- **per device**: DDP replicates everything and adds its gradient buckets (one more copy of the
  gradients); FSDP FULL_SHARD divides weights, gradients and optimizer state by the processes
  and gathers two of the largest layer at a time (forward and backward prefetch).
- **what the count misses** (`per_device`): a process holds more than the tensors counted above —
  autograd's gradient buffers during backward, the allocator's retained fragments, a state dict
  beside the parameters while loading or resuming, and the runtime itself (torch, transformers,
  the tokenizer and records). The planner adds it as ``STATE_FACTOR`` × (weights, gradients,
  AdamW, FSDP's gathers) + ``ACTIVATION_FACTOR`` × activations + ``RUNTIME_BYTES``: factors fitted
  on every committed measurement (docs/bench/plan_vs_measured.json: peak RSS of CPU runs from 1M
  to 1.2B parameters, with and without gradient checkpointing), chosen so the plan errs high
  (plan ÷ measured within [0.95, 1.15] on each; tests/test_plan.py replans them). Before the
  factors the plan was 3–22 % under every measurement. They were fitted on CPU RSS; a GPU's
  caching allocator and CUDA context are not measured yet, so a GPU plan carries a note.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kava.config import ConfigError, KavaConfig
from kava.model.sequences import SPECIAL_TOKENS, SequenceBuilder
from kava.model.known_shapes import ModelShape, model_shape

GB = 1e9
DEFAULT_GPU_MEMORY = 80 * GB  # one H100 / A100-80GB: the GPU of a config that names none
LENGTH_SAMPLE = 512  # records tokenized for the length percentiles (the first ones)
PERCENTILE = 95
# A hub-only training split (not on this machine): the local split of the same data that stands
# in for its lengths, and the split's published size (for the steps per epoch).
HUB_ONLY_SPLITS = {
    ("gsm8k-aug", "train"): (("gsm8k-aug", "valid"), 385_620),
    ("gsm8k-aug-nl", "train"): (("gsm8k-train-aug-nl", "train"), 385_620),
}
# What the counted tensors miss (module docstring), fitted on docs/bench/plan_vs_measured.json.
ACTIVATION_FACTOR = 1.5
STATE_FACTOR = 1.19
RUNTIME_BYTES = int(0.47e9)  # measured 0.45-0.58 GB on CPU: torch, transformers, a tokenizer and the records
GPU_CAVEAT = ("the allowance beyond the counted tensors was fitted on CPU peak RSS; on a GPU (caching allocator, "
              "CUDA context) it is not measured yet")
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Lengths:
    """Token counts per record (95th percentiles over the sample) that size the passes."""

    question: int  # [bos] Q
    teacher: int  # [bos] Q C' P A [eos]
    cot: int  # C'
    answer: int  # <eot> P A [eos]
    sample: int  # records tokenized
    source: str  # which records and which tokenizer


@dataclass(frozen=True)
class DeviceRow:
    """Peak memory of one process under a strategy."""

    strategy: str  # "single", "DDP" or "FSDP"
    processes: int
    gradient_checkpointing: bool
    micro_batch_size: int
    bytes: int
    fits: bool


@dataclass
class Plan:
    """Everything `plan` estimates for one run config (bytes, counts); `render` prints it."""

    model: str
    shape_source: str
    device: str
    device_memory: int
    precision: str
    base_params: int
    trainable: dict[str, int]  # lora (or all base weights), projection, new_rows
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    lengths: Lengths
    activations: dict[bool, int]  # gradient checkpointing → bytes of one micro-batch
    rows: list[DeviceRow]
    checkpoint_bytes: int
    final_bytes: int
    records: int
    records_source: str
    steps_per_epoch: int
    total_steps: int
    gradient_checkpointing: bool  # the config's train.gradient_checkpointing
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(self.trainable.values())

    def row(self, strategy: str, processes: int, gradient_checkpointing: bool) -> DeviceRow:
        return next(r for r in self.rows if (r.strategy, r.processes, r.gradient_checkpointing)
                    == (strategy, processes, gradient_checkpointing))

    @property
    def configured(self) -> DeviceRow:
        """The row the config itself runs: its gradient checkpointing, the first strategy listed."""
        return next(r for r in self.rows if r.gradient_checkpointing == self.gradient_checkpointing)

    @property
    def fits(self) -> bool:
        """Whether some strategy of the planned processes fits with the config's checkpointing."""
        return any(r.fits for r in self.rows if r.gradient_checkpointing == self.gradient_checkpointing)

    @property
    def verdict(self) -> str:
        where = f"{self.device_memory / GB:.0f} GB ({self.device})"
        if self.fits:
            best = min((r for r in self.rows if r.gradient_checkpointing == self.gradient_checkpointing and r.fits), key=lambda r: r.bytes)
            return f"fits in {where}: {best.strategy} needs {best.bytes / GB:.1f} GB per device"
        hint = [r for r in self.rows if r.fits]
        extra = f"; with gradient checkpointing {min(hint, key=lambda r: r.bytes).strategy} would" if hint else ""
        return f"does not fit in {where}: {self.configured.bytes / GB:.1f} GB needed per device{extra}"


# --------------------------------------------------------------------------- the API

def plan(run_config, processes: int = 1, device_memory: int | None = None, *, tokenizer: Any = None,
         records: list | None = None, data_dir: str | Path | None = None) -> Plan:
    """Plan the run `run_config` (a `RunConfig`) describes on `processes` processes.

    `device_memory` (bytes) is what each process may use; None: the config's device (a CPU
    config: this machine's RAM; a GPU config: the local GPU's, else `DEFAULT_GPU_MEMORY`).
    `tokenizer` and `records` spare the load when the caller has them (``kava train``); without
    `records` the config's data is read from the local folder `data_dir` (else ``$KAVA_DATA_DIR``;
    `kava.data.datasets.named_data_dir`), never from the hub.
    Raises `ConfigError` for a model whose shape is unknown offline or a batch that does not split.
    """
    cfg, method = run_config, run_config.method
    fitted = cfg.train.for_processes(processes)
    source = _source(cfg)
    shape = model_shape(source)
    tokenizer = tokenizer if tokenizer is not None else _tokenizer(cfg)
    if source.kind == "config" and "vocab_size" not in shape.config:
        shape = ModelShape({"vocab_size": len(tokenizer), **shape.config}, shape.source + " + the tokenizer's vocabulary")
    counts = count_parameters(shape.config, method, cfg.model.dtype)
    device, memory, on_gpu = _device(cfg, device_memory)
    act_bytes = 2 if on_gpu and _mixed(cfg) in ("bf16", "fp16") else _BYTES[cfg.model.dtype]
    precision = _precision(cfg, on_gpu)
    lengths, n_records, records_source = _lengths(cfg, method, tokenizer, records, data_dir)

    w = counts.weights_bytes
    g = counts.trainable_bytes
    opt = 2 * counts.trainable_bytes
    mem = MemoryModel(shape.config, method, act_bytes=act_bytes, weight_bytes=_BYTES[cfg.model.dtype],
                      autocast_copies=act_bytes < _BYTES[cfg.model.dtype])
    activations = {gc: mem.activations(fitted.micro_batch_size, lengths, gc) for gc in (False, True)}
    rows = []
    for gc in (cfg.train.gradient_checkpointing, not cfg.train.gradient_checkpointing):
        act = activations[gc]
        if processes == 1:
            single = per_device(w + g + opt, act)
            rows.append(DeviceRow("single", 1, gc, fitted.micro_batch_size, single, single <= memory))
            continue
        ddp = per_device(w + 2 * g + opt, act)
        fsdp = per_device(math.ceil((w + g + opt) / processes) + 2 * counts.largest_layer_bytes, act)
        rows += [DeviceRow("DDP", processes, gc, fitted.micro_batch_size, ddp, ddp <= memory),
                 DeviceRow("FSDP", processes, gc, fitted.micro_batch_size, fsdp, fsdp <= memory)]
    steps = math.ceil(n_records / fitted.batch_size)
    total = cfg.train.total_steps(n_records)
    result = Plan(
        model=_name(cfg), shape_source=shape.source, device=device, device_memory=memory, precision=precision,
        base_params=counts.base, trainable=counts.trainable, weights_bytes=w, grads_bytes=g, optimizer_bytes=opt,
        lengths=lengths, activations=activations, rows=rows,
        checkpoint_bytes=counts.saved_bytes + opt, final_bytes=counts.saved_bytes,
        records=n_records, records_source=records_source, steps_per_epoch=steps, total_steps=total,
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )
    result.notes.append(f"per device: the counted tensors plus an allowance for what they miss: {STATE_FACTOR}x the "
                        f"static state, {ACTIVATION_FACTOR}x the activations, {RUNTIME_BYTES / GB:.2f} GB runtime "
                        "(fitted on measured peaks; kava.training.plan)")
    if on_gpu:
        result.notes.append(GPU_CAVEAT)
    result.notes.append(f"checkpoint: model/ (trained tensors) + AdamW state; under FSDP accelerate also writes the "
                        f"sharded base ({counts.weights_bytes / GB:.2f} GB) into each checkpoint; tokenizer files not counted")
    return result


def per_device(static: int, activations: int) -> int:
    """A process's planned peak: its static tensors (weights, gradients, AdamW, FSDP's gathers) and
    one micro-batch's activations, with the allowance for what the count misses (module docstring)."""
    return math.ceil(STATE_FACTOR * static + ACTIVATION_FACTOR * activations) + RUNTIME_BYTES


def planned_peak(config: str | Path, overrides: list[str], data_dir: str | Path | None = None) -> int:
    """The one-process peak `plan` gives the run config file ``config`` with ``overrides`` (what
    benchmarks/plan_vs_measured.py and its test compare with a measured peak)."""
    from kava.training.run_config import load_run_config

    cfg = load_run_config(config, [*overrides, "train.report_to=[]", "output_dir=unused"])
    return plan(cfg, data_dir=data_dir).configured.bytes


def fit_warning(run_config, tokenizer, records: list) -> str | None:
    """The one-line warning ``kava train`` prints before loading weights when the run will not
    fit this machine's device (None when it fits). Plans the launch's processes."""
    import copy

    world = int(os.environ.get("WORLD_SIZE", "1"))
    p = plan(run_config, processes=world, tokenizer=copy.deepcopy(tokenizer), records=records)
    if p.fits:
        return None
    return f"kava train: warning: {p.verdict} (kava plan --config ... for the whole estimate)"


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Counts:
    base: int
    trainable: dict[str, int]
    weights_bytes: int  # base + trainables, as held in memory
    trainable_bytes: int  # the trainables in their dtypes (one gradient, or one AdamW moment)
    largest_layer_bytes: int  # the largest decoder layer in memory (FSDP's unit)
    saved_bytes: int  # the tensors save_pretrained writes


def count_parameters(config: dict[str, Any], method: KavaConfig, dtype: str = "float32") -> Counts:
    """Parameter counts of the model kava trains, built on the meta device with the real code."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig, AutoModelForCausalLM

    from kava.model.projection import LatentProjection

    shape = AutoConfig.for_model(**config)
    with init_empty_weights():
        lm = AutoModelForCausalLM.from_config(shape, dtype=getattr(torch, dtype))
    lm.tie_weights()  # from_pretrained ties the head to the embedding; from_config under init_empty_weights does not
    with init_empty_weights(), warnings.catch_warnings():
        # PEFT asks the meta model about checkpointing through a name transformers deprecated.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        base_bytes, (largest, _) = calculate_maximum_sizes(lm)
        base = sum(p.numel() for p in lm.parameters())
        hidden = shape.hidden_size
        projection = sum(p.numel() for p in LatentProjection(hidden, method.projection_dim).parameters()) \
            if method.use_projection else 0
        new_rows = len(SPECIAL_TOKENS) * hidden
        if method.lora_enabled:
            from peft import LoraConfig, get_peft_model

            peft = get_peft_model(lm, LoraConfig(r=method.lora_r, lora_alpha=method.lora_alpha, lora_dropout=0.0,
                                                 target_modules=list(method.lora_targets), task_type="CAUSAL_LM"))
            lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
            adapted = {n.rsplit(".", 1)[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A")}
            if not adapted:
                raise ConfigError(f"method.lora_targets: none of {list(method.lora_targets)} is a module of this model")
    w = _BYTES[dtype]
    extras = (projection + new_rows) * w
    if method.lora_enabled:
        trainable = {"lora": lora, "projection": projection, "new_rows": new_rows}
        lora_bytes = lora * 4  # PEFT keeps adapters in fp32 (autocast_adapter_dtype)
        return Counts(base, trainable, base_bytes + lora_bytes + extras, lora_bytes + extras,
                      largest, lora_bytes + extras)
    trainable = {"all base weights": base, "projection": projection, "new_rows": new_rows}
    return Counts(base, trainable, base_bytes + extras, base_bytes + extras, largest, base_bytes + extras)


# --------------------------------------------------------------------------- activations

@dataclass(frozen=True)
class MemoryModel:
    """Bytes autograd keeps for one micro-batch of a Llama-family decoder (Qwen2, Mistral alike)."""

    config: dict[str, Any]
    method: KavaConfig
    act_bytes: int  # bytes of an activation (2 under autocast, else the weights')
    weight_bytes: int
    autocast_copies: bool  # an fp32 base under bf16/fp16 autocast: each pass saves low-precision weight copies

    @functools.cached_property
    def dims(self) -> dict[str, int]:
        c = self.config
        heads = c["num_attention_heads"]
        head_dim = c.get("head_dim") or c["hidden_size"] // heads
        return {"h": c["hidden_size"], "q": heads * head_dim, "kv": c.get("num_key_value_heads", heads) * head_dim,
                "i": c["intermediate_size"], "L": c["num_hidden_layers"], "V": c["vocab_size"], "heads": heads}

    def _layer_saved(self) -> int:
        """Bytes one layer saves per new token (not counting the K/V it attends to).

        RMSNorm keeps its input (2 norms, the residual stream in the weights' dtype); SDPA keeps
        the query and its output; the MLP keeps the gate output, its SiLU and the up output. A
        frozen linear keeps only its weight; a trainable one (full fine-tuning, or LoRA's A)
        keeps its input: LoRA's dropout makes one copy (plus a 1-byte mask) per adapted module,
        without dropout the modules reading one tensor share it.
        """
        d, e, m = self.dims, self.act_bytes, self.method
        total = 2 * d["h"] * self.weight_bytes + (2 * d["q"] + 3 * d["i"]) * e
        inputs = {"q_proj": ("qkv", d["h"]), "k_proj": ("qkv", d["h"]), "v_proj": ("qkv", d["h"]),
                  "o_proj": ("o", d["q"]), "gate_proj": ("gu", d["h"]), "up_proj": ("gu", d["h"]), "down_proj": ("down", d["i"])}
        adapted = set(m.lora_targets) & set(inputs) if m.lora_enabled else set(inputs)
        shared: dict[str, int] = {}
        for name in adapted:
            group, width = inputs[name]
            if m.lora_enabled and m.lora_dropout > 0:
                total += width * (e + 1)
            elif group != "o":  # o_proj's input is the attention output SDPA keeps already
                shared[group] = width * e
            if m.lora_enabled:
                total += m.lora_r * e  # LoRA A's output, the input of B
        return total + sum(shared.values())

    def _kv(self, context: int) -> int:
        """Bytes per layer of the K/V one pass attends over: the cache (kept) and, with fewer KV
        heads than query heads under a mask, transformers' ``repeat_kv`` copy that SDPA saves."""
        d = self.dims
        repeated = d["q"] if d["kv"] < d["q"] else 0
        return 2 * context * (d["kv"] + repeated) * self.act_bytes

    def passes(self, n: Lengths) -> list[tuple[int, int, int]]:
        """(new tokens, context, CE rows) per example of every pass that runs with gradient."""
        m, out = self.method, []
        if m.uses_teacher:
            out.append((n.teacher, n.teacher, n.teacher - n.question))
        if m.uses_student:
            prefix = n.question + 1  # [bos] Q <bot>
            cached = n.question if m.shares_question_cache else 0
            M = m.num_latents
            if m.latent_mode == "sequential":
                out.append((prefix - cached, prefix, 0))
                out += [(1, prefix + k + 1, 0) for k in range(M)]
            else:
                out.append((prefix - cached + M, prefix + M, 0))
                out += [(M, prefix + M, 0)] * m.num_iterations
            out.append((n.answer, prefix + M + n.answer, n.answer - 1))
        return out

    def activations(self, batch: int, n: Lengths, checkpointing: bool) -> int:
        d, e = self.dims, self.act_bytes
        passes = self.passes(n)
        per_layer = self._layer_saved()
        linear_weights = d["L"] * (d["h"] * (d["q"] + 2 * d["kv"]) + d["q"] * d["h"] + 3 * d["h"] * d["i"])
        total = 0
        for new, context, ce in passes:
            total += batch * d["L"] * self._kv(context)
            if checkpointing:
                total += batch * new * d["L"] * d["h"] * self.weight_bytes  # each layer's input
            else:
                total += batch * new * d["L"] * per_layer
                if self.autocast_copies:
                    total += linear_weights * e
            total += batch * ce * d["V"] * 4 * 2  # log-softmax kept + the logits while it is computed
        if checkpointing:  # backward recomputes one layer of the largest pass at a time
            new, context, _ = max(passes)
            total += batch * new * per_layer + (linear_weights // d["L"]) * e * self.autocast_copies
        return total + self._transients(batch, n)

    def _transients(self, batch: int, n: Lengths) -> int:
        """The eviction under no_grad: the stacked teacher cache and its score tensors (fp32)."""
        m, d = self.method, self.dims
        if not (m.uses_teacher and m.uses_student and m.alpha_kv > 0):
            return 0
        stacked = 2 * d["L"] * batch * n.teacher * d["kv"] * self.act_bytes
        kv_heads = d["kv"] // (d["q"] // d["heads"])
        redundancy = d["L"] * batch * kv_heads * n.cot * n.cot * 4
        answer_rows = n.teacher - n.question - n.cot
        importance = d["L"] * batch * d["heads"] * answer_rows * n.teacher * 4
        return stacked + max(redundancy, importance)


# --------------------------------------------------------------------------- data and device

def _source(cfg):
    from kava.model.loading import ModelSource

    if isinstance(cfg.model.source, dict):
        return ModelSource("config", config=cfg.model.source["config"], tokenizer=cfg.model.tokenizer)
    return ModelSource.parse(cfg.model.source)


def _name(cfg) -> str:
    return "random " + cfg.model.source["config"]["model_type"] if isinstance(cfg.model.source, dict) else cfg.model.source


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name: str):
    from kava.model.loading import ModelSource

    return ModelSource.parse(name).load_tokenizer()


def _tokenizer(cfg):
    """The run's tokenizer when it is on this machine, else SmolLM2's as a stand-in (said in the lengths' source)."""
    import copy

    if isinstance(cfg.model.source, dict):
        name = cfg.model.tokenizer
    else:
        from kava.model.loading import ModelSource

        source = ModelSource.parse(cfg.model.source)
        name = cfg.model.source
        if source.kind == "hub":
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(source.path, "tokenizer.json"), str):
                name = "smollm2"
    tok = copy.deepcopy(_load_tokenizer(name))  # the builder adds kava's tokens to it
    tok.kava_plan_name = name
    return tok


def _lengths(cfg, method: KavaConfig, tokenizer, records: list | None,
             data_dir: str | Path | None = None) -> tuple[Lengths, int, str]:
    """Length percentiles over the first `LENGTH_SAMPLE` records, the number of records and where they came from.

    Without given records the answer is cached per process by everything it depends on, so
    planning many configs (docs/plan.md) tokenizes each dataset once per tokenizer."""
    if records is not None:
        return _measure_lengths(cfg, method, tokenizer, records)
    from kava.data.datasets import named_data_dir

    folder = named_data_dir(data_dir)
    key = (getattr(tokenizer, "kava_plan_name", None), cfg.data.name, cfg.data.split, cfg.data.limit,
           method.teacher_drop_last_step, method.teacher_uses_cot, method.answer_prompt, method.use_chat_template,
           _is_smollm2_run(cfg), folder and str(folder.resolve()))
    if key[0] is None:
        return _measure_lengths(cfg, method, tokenizer, None, folder)
    if key not in _LENGTHS:
        _LENGTHS[key] = _measure_lengths(cfg, method, tokenizer, None, folder)
    return _LENGTHS[key]


_LENGTHS: dict[tuple, tuple[Lengths, int, str]] = {}


def _measure_lengths(cfg, method: KavaConfig, tokenizer, records: list | None,
                     folder: Path | None = None) -> tuple[Lengths, int, str]:
    from kava.data.datasets import ENV_DATA_DIR, dataset_entry, load_dataset
    from kava.model.tokens import add_special_tokens

    name, split = cfg.data.name, cfg.data.split
    where = f"{name}" + (f" [{split}]" if split else "")
    n_records = None
    if records is None:
        spec = dataset_entry(name, split)
        if spec is not None and folder is None:
            raise ConfigError(f"data.name: kava plan reads local data only and no data folder is named: set "
                              f"{ENV_DATA_DIR} (or pass --data-dir) to a folder holding {spec.splits[split].local}")
        if spec is not None and not (folder / spec.splits[split].local).is_file():
            if (name, split) not in HUB_ONLY_SPLITS:
                raise ConfigError(f"data.name: {name} [{split}] is not in the data folder {folder} (no "
                                  f"{spec.splits[split].local}); kava plan reads local data only")
            (name, split), n_records = HUB_ONLY_SPLITS[(name, split)]
            where += f" (hub only: {n_records:,} records as published; lengths from the local {name} [{split}])"
        full = load_dataset(name, split, data_dir=folder, limit=cfg.data.limit) if n_records is None else None
        n_records = len(full) if full is not None else min(n_records, cfg.data.limit or n_records)
        records = (full.records if full is not None
                   else load_dataset(name, split, data_dir=folder, limit=LENGTH_SAMPLE).records)
    else:
        n_records = len(records)
    sample = records[:LENGTH_SAMPLE]
    add_special_tokens(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    builder = SequenceBuilder(tokenizer, method)
    q, t, c, a = [], [], [], []
    for r in sample:
        qi = builder.question_ids(r.question)
        ci = builder.cot_ids(r.steps, drop_last=method.teacher_drop_last_step) if method.teacher_uses_cot else []
        ai = builder.answer_ids(r.answer)
        q.append(len(qi))
        c.append(len(ci))
        t.append(len(qi) + len(ci) + len(builder.prompt_ids) + len(ai))
        a.append(1 + len(builder.prompt_ids) + len(ai))
    tok_name = getattr(tokenizer, "kava_plan_name", "the run's")
    stand_in = " (a stand-in: the model's own is not on this machine)" if tok_name == "smollm2" and \
        not _is_smollm2_run(cfg) else ""
    lengths = Lengths(_pct(q), _pct(t), _pct(c), _pct(a), len(sample),
                      f"{len(sample)} records of {where}, {tok_name} tokenizer{stand_in}")
    return lengths, n_records, where


def _is_smollm2_run(cfg) -> bool:
    return cfg.model.source == "smollm2" or cfg.model.tokenizer == "smollm2"


def _pct(values: list[int]) -> int:
    import numpy as np

    return int(math.ceil(np.percentile(values, PERCENTILE)))


def _mixed(cfg) -> str:
    """The compute precision on a GPU: ``auto`` is bf16 there (every GPU planned for is bf16-capable)."""
    return "bf16" if cfg.train.mixed_precision == "auto" else cfg.train.mixed_precision


def _device(cfg, device_memory: int | None) -> tuple[str, int, bool]:
    """(what the device is, its bytes, whether it is a GPU) for the config."""
    if cfg.train.cpu:
        memory = device_memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return ("CPU" + ("" if device_memory else ": this machine's RAM")), memory, False
    if device_memory:
        return "GPU", device_memory, True
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"GPU: {props.name}", props.total_memory, True
    return "GPU: assumed 80 GB (none here; --gpu-memory to change)", int(DEFAULT_GPU_MEMORY), True


def _precision(cfg, on_gpu: bool) -> str:
    mp = cfg.train.mixed_precision
    if not on_gpu or mp == "no":
        compute = "fp32 compute" if cfg.model.dtype == "float32" else f"{cfg.model.dtype} compute"
    else:
        compute = "bf16 autocast" if mp in ("auto", "bf16") else "fp16 autocast"
        if mp == "auto":
            compute += " (auto: a bf16 GPU)"
    return f"{cfg.model.dtype} weights, {compute}; LoRA and AdamW states fp32"


def parse_bytes(text: str) -> int:
    """``80GB``, ``80G``, ``24GiB``, ``1.5TB`` → bytes; a bare number is GB."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(([KMGT])(i?)B?)?\s*", text, flags=re.I)
    if not m:
        raise ConfigError(f"--gpu-memory: {text!r} is not a size like 80GB or 24GiB")
    unit = (m.group(3) or "G").upper()
    base = 1024 if m.group(4) else 1000
    return int(float(m.group(1)) * base ** "KMGT".index(unit) * base)


# --------------------------------------------------------------------------- output

def size(n: int) -> str:
    """Bytes in GB, or MB below 1 GB (decimal units, as GPU memory is sold)."""
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def render(p: Plan) -> str:
    """The plan as the lines ``kava plan`` prints."""
    gb = size
    n = p.lengths
    lines = [
        f"model: {p.model} (shape: {p.shape_source})",
        f"precision: {p.precision}",
        f"parameters: base {p.base_params:,}; trainable {p.trainable_params:,} ("
        + ", ".join(f"{k} {v:,}" for k, v in p.trainable.items()) + ")",
        f"weights {gb(p.weights_bytes)}, gradients {gb(p.grads_bytes)}, AdamW state {gb(p.optimizer_bytes)}",
        f"lengths (p{PERCENTILE} of {n.source}): question {n.question}, teacher {n.teacher}, CoT {n.cot}, "
        f"student answer {n.answer}",
        f"activations of one micro-batch ({p.rows[0].micro_batch_size}): {gb(p.activations[False])}; "
        f"with gradient checkpointing {gb(p.activations[True])}",
        "per device:",
    ]
    for r in p.rows:
        gc = "gradient checkpointing" if r.gradient_checkpointing else "no checkpointing"
        lines.append(f"  {r.strategy} × {r.processes}, {gc}: {gb(r.bytes)} {'fits' if r.fits else 'does not fit'}")
    lines += [
        f"disk: checkpoint {gb(p.checkpoint_bytes)} each, final/ {gb(p.final_bytes)}",
        f"steps: {p.steps_per_epoch:,} per epoch over {p.records:,} records of {p.records_source}; {p.total_steps:,} in all",
        *(f"note: {x}" for x in p.notes),
        f"verdict: {p.verdict}",
    ]
    return "\n".join(lines)


def markdown(paths: list[Path], data_dir: str | Path | None = None) -> str:
    """docs/plan.md: every config on its stated device (one process), and a GPU config on one and
    eight 80 GB GPUs; then the plan against measured peaks (docs/bench/plan_vs_measured.json)."""
    import json

    from kava.training.run_config import load_run_config

    out = [
        "# Planned memory, disk and steps of the shipped configs",
        "",
        "Generated by `kava plan --markdown configs/*.yaml > docs/plan.md` (tests/test_plan.py keeps it",
        "current). Per-device peaks of one process at the config's micro-batch and gradient checkpointing,",
        f"at the {PERCENTILE}th-percentile lengths of a {LENGTH_SAMPLE}-record sample (the lengths column: question /",
        "teacher sequence / student answer). GPU configs are planned in bf16 autocast; a CPU config in fp32 on",
        "this machine's RAM (the stated-device column shows the need only). How each part is estimated:",
        "`kava.training.plan`. 8×80 GB: FSDP FULL_SHARD (DDP in brackets). Accelerate launch configs are skipped.",
        "",
        "| config | model (shape from) | trainable | lengths | stated device | 1×80 GB | 8×80 GB: FSDP (DDP) | checkpoint / final | steps / epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    import yaml

    for path in paths:
        if "distributed_type" in (yaml.safe_load(Path(path).read_text()) or {}):
            continue  # an accelerate launch config (configs/accelerate_fsdp.yaml), not a run
        cfg = load_run_config(path)
        own = plan(cfg, processes=1, device_memory=int(DEFAULT_GPU_MEMORY), data_dir=data_dir)
        n = own.lengths
        gc = " (grad. ckpt.)" if cfg.train.gradient_checkpointing else ""
        if cfg.train.cpu:
            stated, one, eight = f"CPU: {size(own.configured.bytes)}{gc}", "—", "—"
        else:
            stated = f"GPU: {size(own.configured.bytes)}{gc}"
            one = f"{size(own.configured.bytes)} {'fits' if own.configured.fits else '**does not fit**'}"
            p8 = plan(cfg, processes=8, device_memory=int(DEFAULT_GPU_MEMORY), data_dir=data_dir)
            fsdp, ddp = p8.row("FSDP", 8, cfg.train.gradient_checkpointing), p8.row("DDP", 8, cfg.train.gradient_checkpointing)
            eight = f"{size(fsdp.bytes)} ({size(ddp.bytes)}) {'fits' if fsdp.fits else '**does not fit**'}"
        out.append(f"| {path.name} | {own.model} ({_short(own.shape_source)}) | {own.trainable_params:,} | "
                   f"{n.question} / {n.teacher} / {n.answer} | {stated} | {one} | {eight} | "
                   f"{size(own.checkpoint_bytes)} / {size(own.final_bytes)} | {own.steps_per_epoch:,} |")
    out += ["", "Lengths use each config's tokenizer where it is on this machine, else SmolLM2's as a stand-in;",
            "a hub-only training split (GSM8k-AUG, -NL: 385,620 records) takes its lengths from the local split",
            "of the same data (`HUB_ONLY_SPLITS`).", ""]
    bench = Path(__file__).resolve().parents[3] / "docs" / "bench" / "plan_vs_measured.json"
    out += ["## Plan against measurement", ""]
    if bench.is_file():
        out += ["`python benchmarks/plan_vs_measured.py`: the one-process plan (with its allowance for what the counted",
                "tensors miss, `kava.training.plan.per_device`) against the peak RSS of a 2-optimizer-step `kava train`",
                "(docs/bench/plan_vs_measured.json). The Qwen2.5-0.5B and Llama-3.2-1B rows are the real-shape smoke runs",
                "(docs/bench/real_shape_smoke.md: random weights of the config's shape, batch 4, micro-batch 2). The",
                f"allowance ({STATE_FACTOR}× static state, {ACTIVATION_FACTOR}× activations, {RUNTIME_BYTES / GB:.2f} GB runtime) was",
                "fitted on these rows so the plan errs high on each (plan ÷ measured in [0.95, 1.15], tests/test_plan.py);",
                "before it the plan was 3–22 % under every row. Measured runtime: RSS after importing torch and",
                "transformers and loading the tokenizer and records, for reference.", "",
                "| config | micro-batch | grad. ckpt. | plan | measured runtime | measured peak RSS | plan ÷ measured |",
                "|---|---|---|---|---|---|---|"]
        for r in json.loads(bench.read_text())["rows"]:
            overhead = r.get("runtime_overhead_bytes")
            out.append(f"| {r['config']} | {r['micro_batch_size']} | {r['gradient_checkpointing']} | "
                       f"{size(r['planned_bytes'])} | {size(overhead) if overhead is not None else '—'} | "
                       f"{size(r['measured_peak_rss_bytes'])} | {r['plan_over_measured']:.3f} |")
    else:
        out.append("Not measured yet: run `python benchmarks/plan_vs_measured.py`.")
    return "\n".join(out) + "\n"


def _short(source: str) -> str:
    if source.startswith("kava's table"):
        return "table"
    if "Hugging Face cache" in source:
        return "HF cache"
    return "GGUF" if source.startswith("GGUF") else ("config" if source.startswith("model.source") else "config.json")
