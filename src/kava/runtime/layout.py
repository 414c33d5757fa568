"""Where a training run keeps its models: the folder names shared by training (which writes them)
and loading (which finds a model in a run, a checkpoint or an export); and the record files of a
sweep's run folder, which the backends that train it read too."""

from __future__ import annotations

FINAL = "final"  # <run>/final/: the finished model
BEST = "best"  # <run>/best/: the model of the best validation evaluation (eval.keep_best)
CHECKPOINTS = "checkpoints"  # <run>/checkpoints/ckpt-<step>/
CHECKPOINT_PREFIX = "ckpt-"
CHECKPOINT_MODEL = "model"  # <checkpoint>/model/: the model as it was at that step
RUN_CONFIG = "config.json"  # <sweep>/runs/<name>/config.json: the run's resolved configuration, written first
RUN_METRICS = "metrics.json"  # <sweep>/runs/<name>/metrics.json: its record, written last: the run is finished
