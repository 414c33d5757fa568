"""Where a training run keeps its models: the folder names shared by training (which writes them)
and loading (which finds a model in a run, a checkpoint or an export)."""

from __future__ import annotations

FINAL = "final"  # <run>/final/: the finished model
CHECKPOINTS = "checkpoints"  # <run>/checkpoints/ckpt-<step>/
CHECKPOINT_PREFIX = "ckpt-"
CHECKPOINT_MODEL = "model"  # <checkpoint>/model/: the model as it was at that step
