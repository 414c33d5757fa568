"""The training loop: an accelerate ``Accelerator`` loop over a `KavaModel`.

One function, `train`, runs single-process on CPU or GPU, multi-process DDP (``torchrun`` /
``accelerate launch``) and FSDP (``accelerate launch --config_file configs/accelerate_fsdp.yaml``;
on CPU processes ``configs/accelerate_fsdp_cpu.yaml``, see `kava.training.fsdp_cpu`) with the
same code: accelerate places the model, wraps it for the distributed setup, applies mixed precision
and synchronises gradients only on the last micro-batch of an optimizer step.

What the loop guarantees, and why:

- **Same optimisation whatever the hardware.** ``TrainConfig.batch_size`` is the global batch of
  one optimizer step; gradient accumulation makes up the difference to
  ``micro_batch_size × processes``. The records of a step are cut from one global order, so one
  process with accumulation and N processes see the very same examples per step.
- **Exact resume.** The data order is a pure function of ``(seed, position)`` — a seeded
  permutation per epoch for a record list, or ``stream(seed, start)`` for an endless stream — and
  the checkpoint stores the position together with optimizer, scheduler and every RNG state
  (dropout draws included), so ``resume=True`` reproduces the uninterrupted run step by step.
- **Interruptible.** SIGINT / SIGTERM (a cluster's preemption notice) set a flag; the loop
  finishes the current step, writes a checkpoint and returns cleanly. A second SIGINT aborts.
- **Observable.** Every loss term, the learning rate, gradient norm, tokens/s, the step's time
  and peak memory are logged per step to a progress bar (on a terminal; a plain line every 5 %
  in a log file, see `kava.runtime.progress`), the accelerate trackers (TensorBoard, optionally
  W&B) and ``history.jsonl`` (one JSON object per step, truncated to the checkpoint
  on resume). ``step_time_s`` covers the step alone (data, forward, backward, optimizer), not
  evaluation (logged as ``eval_time_s``) or checkpoint writes, so a run's training time up to any
  step is the sum over its history, across resumes too.
- **A full disk is one line.** A checkpoint, ``final/`` or history write the disk refuses raises
  `kava.runtime.disk.WriteFailed` (folder, bytes needed) and leaves no ``.tmp`` folder and no torn
  history line; the checkpoints before it are intact, so a resume continues once there is space.

Loss normalisers computed over a batch (L_CODI's teacher std, L_KV's layer-wise std) are taken
over each micro-batch on each process, as in any data-parallel training of the method.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from kava.config import ConfigError, KavaConfig
from kava.data.records import Record
from kava.runtime.disk import folder_bytes
from kava.runtime.layout import BEST, CHECKPOINTS, FINAL
from kava.runtime.outputs import append_bytes, write_atomic
from kava.model.card import write_card
from kava.model.cache import enable_gradient_checkpointing
from kava.model.kava_model import KavaModel
from kava.runtime.progress import progress as progress_display
from kava.runtime.stop import StopSignal
from kava.training.checkpoint import (
    MODEL_DIR,
    TrainerState,
    atomic_dir,
    full_parameters,
    latest_checkpoint,
    register_state_hooks,
    remove_staging,
    restore_checkpoint,
    resume_conflicts,
    save_checkpoint,
)
from kava.training import fsdp_cpu
from kava.training.best import METRIC, Selection, read_selection
from kava.training.data_order import RecordStream, count_tokens, data_source, order_from
from kava.training.run_config import TrainConfig

EvalFn = Callable[[KavaModel], dict[str, float]]
HISTORY_FILE = "history.jsonl"


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one entry per optimizer step since the start of the run
    step: int  # optimizer steps done
    final_dir: Path | None  # the trained model (``save_pretrained`` layout); None if interrupted
    checkpoint: Path | None  # the newest checkpoint
    interrupted: bool  # stopped early by a signal or ``stop_after``; resume to continue


def train(
    model: KavaModel,
    data: Sequence[Record] | RecordStream,
    cfg: TrainConfig,
    *,
    output_dir: str | Path,
    eval_fn: EvalFn | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    dataset: str | None = None,
    keep_best: bool = False,
    eval_data: str | None = None,
) -> TrainResult:
    """Train ``model`` in place and return its per-step history.

    ``data`` is a list of records (shuffled per epoch with ``cfg.seed``) or a callable
    ``stream(seed, start)`` returning an endless iterator of records from position ``start``
    (then ``cfg.max_steps`` is required). ``eval_fn(model) -> {name: value}`` is called on every
    process, under ``no_grad`` in eval mode, every ``cfg.eval_every`` steps and at the end; its
    values are logged as ``eval/<name>``. ``resume`` continues from the newest checkpoint in
    ``output_dir`` (a fresh start if there is none). ``stop_after`` stops, with a checkpoint,
    after that many steps of this call, as an interruption would. ``progress=False`` hides the
    progress bar (a log file then holds the run's messages, not thousands of bar redraws).
    ``dataset`` names the training data on ``final/``'s model card.
    ``keep_best`` keeps ``best/``, the model of the evaluation with the highest ``eval_fn`` accuracy
    (`kava.training.best`; ``eval_data`` names what the evaluation reads on its card).

    Writes ``output_dir/checkpoints/ckpt-<step>/``, ``history.jsonl``, ``tensorboard/`` and, when
    the run completes, ``final/`` (``KavaModel.from_pretrained`` loads it).
    """
    output_dir = Path(output_dir)
    schedule = model.config.curriculum_schedule()  # a curriculum without its stage length stops here
    records, stream = data_source(data)
    if schedule is not None and records is not None:
        schedule.check_records(records)  # e.g. Coconut needs traces of several steps
    total = cfg.total_steps(None if records is None else len(records))
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    if cfg.reset_optimizer_every_epoch and records is None:
        raise ConfigError("train.reset_optimizer_every_epoch: a record stream has no epochs")
    if keep_best and eval_fn is None:
        raise ValueError("keep_best needs an eval_fn: best/ is chosen by validation accuracy")
    accelerator, cfg = _make_accelerator(cfg, output_dir, model.config)
    main = accelerator.is_main_process
    ckpt_root = output_dir / CHECKPOINTS
    start = _resume_point(output_dir, ckpt_root, resume, main)
    accelerator.wait_for_everyone()

    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    set_seed(cfg.seed, device_specific=True)
    if start is not None:
        model.load_trained(start / MODEL_DIR)  # before prepare: FSDP then shards the trained weights
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total), total)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler counts optimizer steps itself; accelerate's wrapper would step it once per process.
    accelerator.register_for_checkpointing(scheduler)
    register_state_hooks(accelerator)

    state = TrainerState(
        step=0, samples_seen=0, total_steps=total, world_size=accelerator.num_processes,
        data_size=len(records) if records else None, train_config=plain_config(cfg),
    )
    if start is not None:
        state = _check_resumable(restore_checkpoint(accelerator, start, optimizer), state, start)
        accelerator.print(f"resuming from {start} (step {state.step} of {total})")
    history = _prepare_history(output_dir / HISTORY_FILE, state.step, accelerator)
    if cfg.report_to:
        accelerator.init_trackers("kava", config=_tracker_config(cfg, model.config))

    best = read_selection(output_dir) if keep_best and start is not None else None
    order = order_from(records, stream, cfg.seed, state.samples_seen)
    bar = progress_display(total, "train", initial=state.step, disable=not (main and progress), dynamic_ncols=True)
    first_step, last_ckpt, stopping = state.step, start, False
    with StopSignal("stopping after this step (checkpoint, then exit)") as stop:
        while state.step < total and not stopping:
            t0 = time.perf_counter()
            step_records = list(islice(order, cfg.batch_size))
            if len(step_records) < cfg.batch_size:
                raise ValueError("the record stream ended; a stream must be endless")
            if (schedule is not None and model.config.reset_optimizer_per_stage and schedule.resets_at(state.step)) or (
                    cfg.reset_optimizer_every_epoch and _starts_epoch(state.samples_seen, cfg.batch_size, len(records))):
                optimizer.optimizer.state.clear()  # fresh moments and step count: a new AdamW (Coconut's, iCoT's choice)
            metrics = _train_step(accelerator, prepared, optimizer, scheduler, cfg, step_records, state.step)
            if schedule is not None:
                metrics["stage"] = schedule.stage_at(state.step)
            state.step += 1
            state.samples_seen += cfg.batch_size
            metrics["step_time_s"] = time.perf_counter() - t0
            metrics["tokens_per_s"] /= metrics["step_time_s"]
            stopping = _any_process(accelerator, stop.requested) or (
                stop_after is not None and state.step - first_step >= stop_after
            )
            entry = {"step": state.step, **({"epoch": state.samples_seen / len(records)} if records else {}), **metrics}
            if eval_fn is not None and (state.step == total or (cfg.eval_every and state.step % cfg.eval_every == 0)):
                entry.update(_evaluate(accelerator, prepared, eval_fn))
                if keep_best:
                    best = _keep_if_best(accelerator, prepared, output_dir, best, entry, eval_data, cfg, total,
                                         _card_facts(state, [*history, entry], accelerator, dataset))
            history.append(entry)
            _log(accelerator, bar, output_dir / HISTORY_FILE, entry)
            if stopping or state.step == total or (cfg.save_every and state.step % cfg.save_every == 0):
                last_ckpt = save_checkpoint(accelerator, prepared, ckpt_root, state, cfg.keep_last)
    bar.close()

    final_dir = None
    if state.step == total:
        final_dir = output_dir / FINAL
        which = f"final/: the last step ({total:,})"
        kept = {} if best is None else {"checkpoint": f"{which}; best/ holds {best.describe(total)}", "best": asdict(best)}
        _save_model(accelerator, prepared, final_dir, ckpt_root,
                    {**_card_facts(state, history, accelerator, dataset), "checkpoint": which, **kept})
    elif main:
        print(f"stopped at step {state.step} of {total}; checkpoint {last_ckpt}; resume to continue", file=sys.stderr)
    accelerator.end_training()
    accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)  # drop the autocast patch on the caller's model
    return TrainResult(history, state.step, final_dir, last_ckpt, interrupted=state.step < total)


def _starts_epoch(position: int, batch_size: int, n_records: int) -> bool:
    """Whether the step reading records from ``position`` on is the first to start in a new epoch
    (an epoch boundary fell inside the previous step or at its end; the first step is fresh anyway)."""
    return position > 0 and position // n_records > (position - batch_size) // n_records


def _keep_if_best(accelerator, model, output_dir: Path, best: Selection | None, entry: dict[str, float],
                  eval_data: str | None, cfg: TrainConfig, total: int, facts: dict[str, Any]) -> Selection | None:
    """Write ``best/`` when this evaluation beats ``best`` (decided on all processes together) and
    return the selection ``best/`` now holds."""
    key = f"eval/{METRIC}"
    if key not in entry:
        raise ValueError(f"keep_best: the evaluation returned {sorted(entry)} without {METRIC!r}")
    if not _any_process(accelerator, best is None or best.beaten_by(entry[key])):
        return best
    best = Selection(int(entry["step"]), entry[key], eval_every=cfg.eval_every, data=eval_data)
    facts.update(checkpoint=f"best/: {best.describe(total)}", selection=asdict(best))
    _save_model(accelerator, model, output_dir / BEST, output_dir / CHECKPOINTS, facts, best.save)
    return best


def _save_model(accelerator, model, folder: Path, ckpt_root: Path, facts: dict[str, Any],
                extra: Callable[[Path], None] | None = None) -> None:
    """Write ``folder`` (``final/`` or ``best/``) atomically with its model card: the trained
    tensors (``save_pretrained``), the card's training facts and ``extra(tmp)``'s files. All
    processes call it (FSDP gathers the parameters); the main process writes."""
    with full_parameters(accelerator, model, rank0_only=True):
        if accelerator.is_main_process:
            newest = latest_checkpoint(ckpt_root)
            # About what the newest checkpoint's model/ holds (the card is kilobytes); the size the write needs.
            with atomic_dir(folder, lambda: folder_bytes(newest / MODEL_DIR) if newest else 0) as tmp:
                accelerator.unwrap_model(model).save_pretrained(tmp)
                if extra is not None:
                    extra(tmp)
                write_card(tmp, training=facts)
    accelerator.wait_for_everyone()


# --------------------------------------------------------------------------- one step

def _train_step(accelerator, model, optimizer, scheduler, cfg: TrainConfig, step_records: list[Record],
                step: int) -> dict[str, float]:
    """Forward/backward over this process's micro-batches of step ``step`` (0-based), then one optimizer step."""
    unwrapped: KavaModel = accelerator.unwrap_model(model)
    world, rank, micro = accelerator.num_processes, accelerator.process_index, cfg.micro_batch_size
    accum = cfg.batch_size // (micro * world)
    lr = optimizer.param_groups[0]["lr"]
    sums: dict[str, torch.Tensor] = {}
    tokens = torch.zeros((), device=accelerator.device)
    # Chunk k of the step's records goes to process k % world: a pure function of the step.
    batches = [unwrapped.builder.training_batch(step_records[(i * world + rank) * micro : (i * world + rank + 1) * micro], step)
               for i in range(accum)]
    if cfg.max_train_length is not None and _any_process(
            accelerator, max(sequence_length(b) for b in batches) > cfg.max_train_length):
        scheduler.step()  # the step counts (lr schedule and curriculum clock go on), as iCoT's removal counter does
        return {"skipped": 1.0, "lr": lr, "tokens_per_s": 0.0, "max_memory_gb": _peak_memory_gb(accelerator.device)}
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.accumulate(model):
            out = model(batch)
            accelerator.backward(out.loss)
        for key, value in {"loss": out.loss, **out.terms}.items():
            sums[key] = sums.get(key, 0) + value.detach().float()
        tokens += count_tokens(batch, unwrapped.config)
    if not accelerator.sync_gradients:
        raise RuntimeError(f"gradient accumulation out of step: {accum} micro-batches did not end in a sync")
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
        scheduler.step()
    keys = sorted(sums)
    means = accelerator.reduce(torch.stack([sums[k] / accum for k in keys]), reduction="mean")
    metrics = {k: v.item() for k, v in zip(keys, means)}
    metrics.update(lr=lr, grad_norm=float(grad_norm), tokens_per_s=accelerator.reduce(tokens, "sum").item())
    metrics["max_memory_gb"] = _peak_memory_gb(accelerator.device)
    return metrics


def sequence_length(batch: dict[str, torch.Tensor]) -> int:
    """The longest sequence a training batch feeds the model, padded: the teacher's ``[bos] Q C' P A
    [eos]``, else the student's prefix and answer (its latents aside)."""
    if "t_input_ids" in batch:
        return batch["t_input_ids"].shape[1]
    return batch["s_prefix_ids"].shape[1] + batch["s_answer_ids"].shape[1]


def _peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory since the last call (GPU), else the process's peak resident memory."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def _evaluate(accelerator, model, eval_fn: EvalFn) -> dict[str, float]:
    """``eval_fn``'s values as ``eval/<name>``, plus ``eval_time_s``: what the evaluation cost."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), full_parameters(accelerator, model, rank0_only=False):
            results = eval_fn(unwrapped)
    finally:
        unwrapped.train()
    return {**{f"eval/{k}": float(v) for k, v in results.items()}, "eval_time_s": time.perf_counter() - t0}


def _any_process(accelerator, flag: bool) -> bool:
    """True if any process got a stop signal, so all stop at the same step."""
    return accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum").item() > 0


# --------------------------------------------------------------------------- set-up

def _make_accelerator(cfg: TrainConfig, output_dir: Path, method: KavaConfig) -> tuple[Any, TrainConfig]:
    """The accelerator, and ``cfg`` fitted to its number of processes (`TrainConfig.for_processes`)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    _check_trackers(cfg.report_to)
    fsdp_on_cpu = cfg.cpu and fsdp_cpu.requested()
    plugin = fsdp_cpu.cpu_plugin() if fsdp_on_cpu else None
    accelerator = Accelerator(
        fsdp_plugin=plugin,
        cpu=cfg.cpu,
        mixed_precision=_mixed_precision(cfg),
        log_with=list(cfg.report_to) or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
        # φ gets no gradient when the student has no Jacobi iterations; DDP must be told.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=not _projection_used(method))],
    )
    if fsdp_on_cpu:
        fsdp_cpu.enable(accelerator, plugin)  # accelerate itself would run plain DDP on CPU
    if getattr(accelerator, "is_fsdp2", False):
        raise ConfigError("fsdp_config.fsdp_version: 2; kava runs FSDP version 1 (its checkpoints gather the "
                          "trained parameters with FSDP's summon_full_params)")
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != world_env:
        raise RuntimeError(
            f"launched with WORLD_SIZE={world_env} but accelerate runs {accelerator.num_processes} process(es); "
            "for multi-process CPU training set train.cpu: true"
        )
    fitted = cfg.for_processes(accelerator.num_processes)
    if fitted is not cfg and accelerator.is_main_process:
        print(f"train.micro_batch_size {cfg.micro_batch_size} -> {fitted.micro_batch_size}: the batch of "
              f"{cfg.batch_size} splits over {accelerator.num_processes} processes", file=sys.stderr)
    accelerator.gradient_accumulation_steps = fitted.batch_size // (fitted.micro_batch_size * accelerator.num_processes)
    return accelerator, fitted


def _mixed_precision(cfg: TrainConfig) -> str:
    """``auto``: the launcher's setting if any, else bf16 on a bf16-capable GPU, else full fp32."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return os.environ["ACCELERATE_MIXED_PRECISION"]
    return "bf16" if not cfg.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _check_trackers(names: Sequence[str]) -> None:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in names:
        if not available[name]():
            raise ConfigError(f"train.report_to: {name} is not installed")


def _projection_used(config: KavaConfig) -> bool:
    return config.use_projection and config.uses_student and (
        config.latent_mode == "sequential" or config.num_iterations > 0
    )


def _param_groups(model: KavaModel, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (LoRA, φ's linear layers, new token rows), not on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def check_output_dir(output_dir: str | Path, resume: bool) -> None:
    """Refuse to start a new run over an earlier one: its checkpoints and history would be mixed."""
    output_dir = Path(output_dir)
    if not resume and (latest_checkpoint(output_dir / CHECKPOINTS) is not None or (output_dir / HISTORY_FILE).exists()):
        raise FileExistsError(f"{output_dir} already holds a run; resume it or choose a new output_dir")


def _resume_point(output_dir: Path, ckpt_root: Path, resume: bool, main: bool) -> Path | None:
    """The checkpoint to resume from (None: start from scratch)."""
    check_output_dir(output_dir, resume)
    if not resume:
        return None
    if main:
        for p in remove_staging(ckpt_root):
            print(f"removed {p} (a checkpoint write that was interrupted)", file=sys.stderr)
    start = latest_checkpoint(ckpt_root)
    if start is None and main:
        print(f"no checkpoint in {ckpt_root}: starting from scratch", file=sys.stderr)
    return start


def _check_resumable(saved: TrainerState, current: TrainerState, path: Path) -> TrainerState:
    """The resumed run must be the same run: same data size and trajectory-relevant settings."""
    diffs = resume_conflicts(saved, current)
    if diffs:
        raise ValueError(f"{path}: cannot resume a different run ({'; '.join(diffs)})")
    saved.train_config = current.train_config  # adopt the new logging/checkpoint cadence
    return saved


def _prepare_history(path: Path, step: int, accelerator) -> list[dict[str, float]]:
    """Entries up to ``step``; the file is cut to them (steps after the checkpoint will be redone)."""
    entries = []
    if path.exists():
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        entries = [e for e in entries if e["step"] <= step]
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "".join(json.dumps(e) + "\n" for e in entries))
    return entries


def _log(accelerator, bar, history_file: Path, entry: dict[str, float]) -> None:
    if accelerator.is_main_process:
        append_bytes(history_file, (json.dumps(entry) + "\n").encode())
        shown = {k: f"{v:.4g}" for k, v in entry.items() if k not in ("step", "epoch")}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)
    accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=int(entry["step"]))


def _card_facts(state: TrainerState, history: list[dict[str, Any]], accelerator, dataset: str | None) -> dict[str, Any]:
    """What ``final/``'s model card says of the run: data, steps, settings and time spent in steps
    (summed over the history, so a resumed run counts the steps of every process that ran it once)."""
    return {
        "dataset": dataset,
        "steps": state.step,
        "samples_seen": state.samples_seen,
        "epochs": state.samples_seen / state.data_size if state.data_size else None,
        "train_config": state.train_config,
        "train_time_s": sum(entry.get("step_time_s", 0.0) + entry.get("eval_time_s", 0.0) for entry in history),
        "processes": accelerator.num_processes,
        "device": accelerator.device.type,
    }


def plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """The run config as JSON-ready values (tuples as lists), as saved with checkpoints."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _tracker_config(cfg: TrainConfig, method: KavaConfig) -> dict[str, Any]:
    """Hyper-parameters for the trackers (TensorBoard's hparams take only scalars and strings)."""
    flat = {f"train/{k}": v for k, v in asdict(cfg).items()}
    flat.update({f"method/{k}": v for k, v in method.to_dict().items()})
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
