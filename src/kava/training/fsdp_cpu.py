"""FSDP over CPU processes (gloo): what accelerate 1.15 leaves out, so the FSDP path runs without a GPU.

torch's FSDP (version 1) shards, gathers and checkpoints on CPU over gloo, but accelerate only
turns FSDP on for accelerator devices:

- with ``use_cpu: true`` an FSDP launch config quietly becomes plain data parallelism
  (``DistributedType.MULTI_CPU``: every process holds the whole model, nothing is sharded);
- its plugin's ``sync_module_states`` looks up the current GPU and raises "There are currently no
  available devices found, must be one of 'XPU', 'CUDA', 'MLU', 'NPU', 'MUSA', or 'HPU'." (torch's
  FSDP refuses that option on CPU anyway, see `cpu_plugin`);
- its CPU device is ``cpu:<rank>``, which FSDP rejects next to parameters on ``cpu``
  ("Inconsistent compute device and `device_id` on rank 0: cpu vs cpu:0").

`cpu_plugin` builds the launcher's plugin, checked for CPU, and `enable` switches the
accelerator to it, so ``accelerate launch --config_file configs/accelerate_fsdp_cpu.yaml`` tests on
CPU the very code (wrapping, gathering for checkpoints, sharded state) that runs on GPUs.
"""

from __future__ import annotations

import os

import torch

from kava.runtime.validation import ConfigError

FSDP_ENV = "ACCELERATE_USE_FSDP"  # set by ``accelerate launch`` from ``distributed_type: FSDP``
SYNC_ENV = "FSDP_SYNC_MODULE_STATES"


def requested() -> bool:
    """Whether the launcher asked for FSDP."""
    return os.environ.get(FSDP_ENV, "false").lower() == "true"


def cpu_plugin():
    """The launcher's FSDP settings (``FSDP_*`` variables) as a plugin, checked for CPU processes.

    ``sync_module_states`` (rank 0's weights broadcast before sharding) is refused by torch's FSDP
    on CPU ("The module has CPU parameters or buffers when `sync_module_states=True`, which
    requires them to be on GPU"); without it every process shards its own copy, which is the same
    model because every process builds it from the same seed (the test compares with one process).
    """
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import str_to_bool

    if str_to_bool(os.environ.get(SYNC_ENV, "false")) == 1:
        raise ConfigError("fsdp_config.fsdp_sync_module_states: true needs GPU parameters (torch's FSDP refuses it "
                          "on CPU); set it to false for CPU processes (configs/accelerate_fsdp_cpu.yaml)")
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 1:
        raise ConfigError(f"fsdp_config.fsdp_version: {plugin.fsdp_version}; kava runs FSDP version 1 (its "
                          "checkpoints gather the trained parameters with FSDP's summon_full_params)")
    return plugin


def enable(accelerator, plugin) -> None:
    """Run ``accelerator`` (multi-process CPU, gloo) as FSDP with ``plugin``.

    Both of accelerate's shared states carry the distributed type: ``AcceleratorState`` copies
    ``PartialState`` whenever it is constructed again, so setting one alone is undone later.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise ConfigError(f"an FSDP launch with train.cpu: true needs at least 2 processes (got "
                          f"{accelerator.num_processes}, {accelerator.distributed_type.value}); "
                          "launch with --num_processes 2 or more")
    cpu = torch.device("cpu")
    partial = PartialState()
    partial.distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    partial.device = accelerator.state.device = cpu
    accelerator.state.fsdp_plugin = plugin
