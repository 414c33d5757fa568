"""The shape of a base model without its weights: what `kava plan` needs to size a run offline.

A plan builds the model on the meta device from its transformers config, so it needs the
config's shape fields only (hidden size, layers, heads, KV heads, intermediate size, vocabulary,
tied embeddings, attention bias, RoPE scaling, maximum positions). Where the real config is on
this machine it is read: a local folder's ``config.json``, the Hugging Face cache's copy of a hub
id's, the metadata of a GGUF file (SmolLM2). Otherwise the table below holds the published
``config.json`` shape of each model the shipped configs name, so every config plans without the
hub. The answer always says which of these it came from (`ModelShape.source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kava.model.loading import ModelSource
from kava.runtime.validation import ConfigError

_LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def _llama(hidden, layers, heads, kv, inter, tie, factor, head_dim=None) -> dict[str, Any]:
    shape = {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
             "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": 128256, "tie_word_embeddings": tie,
             "attention_bias": False, "rope_theta": 500000.0, "max_position_embeddings": 131072,
             "rope_scaling": {**_LLAMA3_ROPE, "factor": factor}}
    return shape if head_dim is None else {**shape, "head_dim": head_dim}


def _qwen25(hidden, layers, heads, inter) -> dict[str, Any]:
    # Qwen2 always has q/k/v biases (transformers' Qwen2Attention), recorded for the reader.
    return {"model_type": "qwen2", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": 2, "intermediate_size": inter, "vocab_size": 151936, "tie_word_embeddings": True,
            "attention_bias": True, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rope_scaling": None}


# The published config.json shape fields (Hugging Face hub, the model's own repository).
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.2-1B-Instruct": _llama(2048, 16, 32, 8, 8192, True, 32.0, head_dim=64),
    "meta-llama/Llama-3.2-3B-Instruct": _llama(3072, 28, 24, 8, 8192, True, 32.0, head_dim=128),
    "meta-llama/Llama-3.1-8B-Instruct": _llama(4096, 32, 32, 8, 14336, False, 8.0),
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen25(896, 24, 14, 4864),
    "Qwen/Qwen2.5-1.5B-Instruct": _qwen25(1536, 28, 12, 8960),
    "Qwen/Qwen2.5-3B-Instruct": _qwen25(2048, 36, 16, 11008),
    "mistralai/Mistral-7B-Instruct-v0.3": {
        "model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32768, "tie_word_embeddings": False,
        "attention_bias": False, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rope_scaling": None,
        "sliding_window": None},
}
# GGUF metadata key (after "<arch>.") → transformers config field.
_GGUF_FIELDS = {"embedding_length": "hidden_size", "block_count": "num_hidden_layers",
                "feed_forward_length": "intermediate_size", "attention.head_count": "num_attention_heads",
                "attention.head_count_kv": "num_key_value_heads", "context_length": "max_position_embeddings",
                "rope.freq_base": "rope_theta"}


@dataclass(frozen=True)
class ModelShape:
    """A transformers config's fields (``AutoConfig.for_model(**config)``) and where they were read."""

    config: dict[str, Any]
    source: str


def model_shape(source: ModelSource) -> ModelShape:
    """The shape of `source`'s model, read locally when possible, else from `KNOWN_SHAPES`.

    A ``config`` source is its own shape. Raises `ConfigError` (one line) for a hub id that is
    neither cached nor in the table, or a folder without ``config.json``.
    """
    if source.kind == "config":
        return ModelShape(dict(source.config), "model.source.config")
    located = source.located()
    if located.kind == "gguf":
        file = Path(located.path) / located.gguf_file
        return ModelShape(_gguf_shape(file), f"GGUF metadata of {file.name}")
    if located.kind == "local":
        file = Path(located.path) / "config.json"
        if not file.is_file():
            raise ConfigError(f"model.source: {located.path} has no config.json to read the model's shape from")
        return ModelShape(_read_json(file), f"{file}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(located.path, "config.json")
    if isinstance(cached, str):
        return ModelShape(_read_json(Path(cached)), f"config.json of {located.path} in the Hugging Face cache")
    if located.path in KNOWN_SHAPES:
        return ModelShape(dict(KNOWN_SHAPES[located.path]), f"kava's table of published shapes ({located.path})")
    raise ConfigError(f"model.source: unknown shape of {located.path!r}: it is not in kava's table "
                      f"({', '.join(KNOWN_SHAPES)}) and no config.json of it is cached; download one "
                      f"(hf download {located.path} config.json) or name a local folder")


def _read_json(file: Path) -> dict[str, Any]:
    import json

    return json.loads(file.read_text())


def _gguf_shape(file: Path) -> dict[str, Any]:
    """The config fields a GGUF file's header states (gguf's reader maps the file; no tensor is read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(file))

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None:
            raise ConfigError(f"model.source: {file.name} has no {key} in its metadata")
        return field.contents()

    arch = value("general.architecture")
    config: dict[str, Any] = {"model_type": arch}
    for key, name in _GGUF_FIELDS.items():
        if f"{arch}.{key}" in reader.fields:
            config[name] = value(f"{arch}.{key}")
    config["vocab_size"] = len(value("tokenizer.ggml.tokens"))
    config["tie_word_embeddings"] = not any(t.name == "output.weight" for t in reader.tensors)
    return config
