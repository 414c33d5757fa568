"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``<output_dir>/checkpoints/ckpt-<step>/`` holding

- ``model/``: everything trained, written by ``KavaModel.save_pretrained`` (loadable on its own);
- accelerate's state (``accelerator.save_state``): optimizer, scheduler, gradient scaler and one
  ``random_states_<rank>.pkl`` per process (python, numpy, torch and CUDA generators);
- ``trainer_state.json``: step counters and the data-order position.

Why atomic: a job killed mid-write (preemption, ``kill -9``, a full disk) must never leave a
folder that looks complete. Everything is written to ``ckpt-<step>.tmp``, flushed to disk, and
only then renamed to ``ckpt-<step>`` with ``os.replace``, a single atomic step on POSIX file
systems. A ``.tmp`` folder is therefore always an interrupted write and is deleted on resume.
A write the disk refuses (full, read-only; `kava.runtime.disk`) removes its ``.tmp`` at once and
raises `WriteFailed`, which names the folder and the bytes it needs (`checkpoint_bytes`).

accelerate would otherwise also save the full model (frozen base included, gigabytes per
checkpoint); `register_state_hooks` keeps it to optimizer, scheduler and RNG state, because the
trained weights are already in ``model/``. Under FSDP accelerate writes its sharded model state
regardless (it cannot be turned off), which costs disk but is consistent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from kava.runtime.disk import folder_bytes, guarded
from kava.runtime.layout import CHECKPOINT_MODEL as MODEL_DIR
from kava.runtime.layout import CHECKPOINT_PREFIX as PREFIX
from kava.runtime.outputs import differences

STAGING = ".tmp"
STATE_FILE = "trainer_state.json"
RNG_FILE = "random_states_{rank}.pkl"  # accelerate's per-process RNG file name
TEST_DELAY_ENV = "KAVA_CHECKPOINT_TEST_DELAY"  # seconds to stall mid-write; lets tests kill a write


@dataclass
class TrainerState:
    """Where a run stands: enough, with the RNG states, to continue it exactly."""

    step: int  # optimizer steps done
    samples_seen: int  # records consumed from the global data order (the position to resume from)
    total_steps: int
    world_size: int
    data_size: int | None  # number of records (None: an endless stream)
    train_config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainerState":
        return cls(**json.loads(path.read_text()))


# Settings that do not change the trajectory of a run and may differ on resume.
NOT_TRAJECTORY = ("eval_every", "save_every", "keep_last", "report_to", "gradient_checkpointing")


def count_conflicts(saved: TrainerState, current: TrainerState) -> list[str]:
    """Differences in step count, number of records or of processes: each makes another run."""
    names = ("total_steps", "data_size", "world_size")
    return [f"{n}: {getattr(saved, n)} -> {getattr(current, n)}" for n in names if getattr(saved, n) != getattr(current, n)]


def resume_conflicts(saved: TrainerState, current: TrainerState) -> list[str]:
    """Why ``current`` is not the run ``saved`` belongs to (empty: it is)."""
    from kava.training.run_config import with_train_defaults

    return (differences(with_train_defaults(saved.train_config), current.train_config, NOT_TRAJECTORY)
            + count_conflicts(saved, current))


# --------------------------------------------------------------------------- folders

def checkpoint_path(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first; staging folders are not checkpoints."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        suffix = p.name[len(PREFIX):]
        if p.is_dir() and p.name.startswith(PREFIX) and suffix.isdigit():
            found.append((int(suffix), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_staging(root: Path) -> list[Path]:
    """Delete leftovers of interrupted writes (``*.tmp``); returns what was removed."""
    removed = sorted(root.glob(f"*{STAGING}")) if root.is_dir() else []
    for p in removed:
        shutil.rmtree(p)
    return removed


def prune(root: Path, keep_last: int) -> None:
    """Keep only the newest ``keep_last`` complete checkpoints."""
    for _, p in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(p)


def staging_path(final: Path) -> Path:
    """Where ``final`` is written before it is committed: ``<final>.tmp``."""
    return final.with_name(final.name + STAGING)


def fresh_staging(final: Path) -> Path:
    """An empty ``<final>.tmp`` folder (a stale one from an earlier crash is discarded)."""
    tmp = staging_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, final: Path) -> None:
    """Make a fully written staging folder visible under its final name, atomically and durably.

    Files are fsynced before the rename so that a crash right after it cannot expose empty files;
    the parent folder is fsynced after it so that the rename itself survives. An existing
    ``final`` (rewriting the same step, or a new ``final`` model) is moved aside first and
    removed afterwards; ``os.replace`` cannot replace a non-empty folder.
    """
    for dirpath, _, files in os.walk(tmp):
        for name in files:
            _fsync(Path(dirpath) / name)
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(final: Path, needed: Callable[[], int]) -> Iterator[Path]:
    """Write a folder in one process: yields a staging folder, committed on success.

    A write the disk refuses removes the staging folder and raises `WriteFailed` naming ``final``
    with ``needed()``, the caller's estimate of the folder's size (`kava.runtime.disk.guarded`);
    on any other error the staging folder is left (a resume or the next write discards it).
    """
    with guarded(final, needed, staging=staging_path(final)):
        tmp = fresh_staging(final)
        yield tmp
        commit(tmp, final)


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors among ``tensors`` (nested dicts and lists are searched): what a
    safetensors or torch file holding them takes, headers aside."""
    import torch  # here: the checkpoint's names and checks are read without torch (kava train's start checks)

    total = 0
    for item in tensors:
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            total += tensor_bytes(item.values())
        elif isinstance(item, (list, tuple)):
            total += tensor_bytes(item)
    return total


def checkpoint_bytes(root: Path, accelerator, model) -> int:
    """What writing a checkpoint into ``root`` needs, for the message when the disk refuses it.

    The newest complete checkpoint's size when there is one: a run's checkpoints hold the same
    files with tensors of the same shapes, so the same bytes up to a few digits of
    ``trainer_state.json``. Before the first one, the bytes of the trained tensors plus the
    optimizer's state (AdamW: two moments per weight) — a lower bound, since the tokenizer,
    configs and RNG states (kilobytes) come on top.
    """
    previous = latest_checkpoint(root)
    if previous is not None:
        return folder_bytes(previous)
    trained = [p for p in accelerator.unwrap_model(model).parameters() if p.requires_grad]
    optimizers = [o.state_dict()["state"] for o in accelerator._optimizers]  # accelerate's own list, as save_state uses
    return tensor_bytes(trained) + tensor_bytes(optimizers)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _test_delay() -> None:
    delay = float(os.environ.get(TEST_DELAY_ENV, "0"))
    if delay > 0:
        time.sleep(delay)


# --------------------------------------------------------------------------- save / restore

def register_state_hooks(accelerator) -> None:
    """Keep the model out of accelerate's save/load: its trained part lives in ``model/``."""
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


@contextlib.contextmanager
def full_parameters(accelerator, model, *, rank0_only: bool) -> Iterator[None]:
    """Gather FSDP-sharded parameters for the duration (a no-op without FSDP).

    ``save_pretrained`` and evaluation read the module's parameters directly, so under FSDP
    they need the full tensors; every process must enter this context together.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        yield
        return
    if getattr(accelerator, "is_fsdp2", False):
        raise NotImplementedError("kava checkpoints support FSDP version 1 (fsdp_version: 1 in the accelerate config)")
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # Offloading copies the gathered tensors to the CPU and frees the device copy; on a CPU device
    # the "copy" is the same storage, so the tensors read afterwards are freed memory (a segfault
    # in save_file under FSDP on CPU). Offload only from an accelerator.
    offload = rank0_only and accelerator.device.type != "cpu"
    with FSDP.summon_full_params(model, writeback=False, rank0_only=rank0_only, offload_to_cpu=offload):
        yield


def save_checkpoint(accelerator, model, root: Path, state: TrainerState, keep_last: int) -> Path:
    """Write ``ckpt-<step>`` atomically (all processes call this) and prune old ones.

    A write the disk refuses raises `WriteFailed` naming the checkpoint and `checkpoint_bytes`;
    the main process removes the staging folder, the checkpoints before it stay as they were.
    """
    final = checkpoint_path(root, state.step)
    staging = staging_path(final) if accelerator.is_main_process else None
    with guarded(final, lambda: checkpoint_bytes(root, accelerator, model), staging=staging):
        _write_checkpoint(accelerator, model, root, state, keep_last)
    return final


def _write_checkpoint(accelerator, model, root: Path, state: TrainerState, keep_last: int) -> Path:
    """`save_checkpoint`'s writes: staging folder, model, accelerate's state, trainer state, commit."""
    final = checkpoint_path(root, state.step)
    tmp = staging_path(final)
    if accelerator.is_main_process:
        fresh_staging(final)
    accelerator.wait_for_everyone()
    with full_parameters(accelerator, model, rank0_only=True):
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(tmp / MODEL_DIR)
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(tmp / STATE_FILE)
        _test_delay()
        commit(tmp, final)
        prune(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def restore_checkpoint(accelerator, path: Path, optimizer) -> TrainerState:
    """Load optimizer, scheduler and RNG states (after ``prepare``); the weights are loaded before it.

    accelerate skips a missing RNG file with only an info log; a resume without its RNG state is
    not exact, so its absence is an error here.
    """
    state = TrainerState.load(path / STATE_FILE)
    if state.world_size != accelerator.num_processes:
        raise ValueError(
            f"{path}: saved by {state.world_size} process(es), resumed with {accelerator.num_processes}; "
            "an exact resume needs the same number (each process has its own RNG state)"
        )
    rng = path / RNG_FILE.format(rank=accelerator.process_index)
    if not rng.is_file():
        raise FileNotFoundError(f"{path}: missing {rng.name}; the checkpoint is incomplete")
    _init_sharded_optimizer_state(accelerator, optimizer)
    accelerator.load_state(str(path))
    return state


def _init_sharded_optimizer_state(accelerator, optimizer) -> None:
    """Give a fresh optimizer its (zero) state before an FSDP sharded-state load fills it.

    torch.distributed.checkpoint loads in place into the tensors of a template, and accelerate's
    template is the optimizer's current state: for a fresh optimizer none, so the Adam moments were
    silently not loaded (the resumed run then diverged from its uninterrupted twin at the first
    step after the checkpoint). torch's own ``set_optimizer_state_dict`` initialises the state first
    with this helper (a step on zero gradients at learning rate 0).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return
    from torch.distributed.checkpoint.state_dict import _init_optim_state
    from torch.distributed.fsdp import StateDictType

    if accelerator.state.fsdp_plugin.state_dict_type != StateDictType.FULL_STATE_DICT:
        _init_optim_state(getattr(optimizer, "optimizer", optimizer))
