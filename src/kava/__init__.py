"""kava: train, evaluate and serve latent-reasoning language models with KaVa.

The public API, importable from the package (``from kava import KavaModel, preset``). Names are
resolved on first use, so ``import kava`` and ``kava --help`` stay fast: nothing here imports
torch until a name that needs it is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "KavaConfig": "kava.config",
    "preset": "kava.config",
    "ConfigError": "kava.config",
    "METHODS": "kava.methods",
    "KavaModel": "kava.model.kava_model",
    "ModelSource": "kava.model.loading",
    "load_dataset": "kava.data.datasets",
    "RunConfig": "kava.training.run_config",
    "load_run_config": "kava.training.run_config",
    "train_from_config": "kava.training.from_config",
    "report_outcome": "kava.training.from_config",
    "evaluate": "kava.evaluation.evaluate",
    "evaluate_checkpoint": "kava.evaluation.resumable",
    "EvaluationRefused": "kava.evaluation.resumable",
    "generate": "kava.api",
    "inspect": "kava.api",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kava' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
