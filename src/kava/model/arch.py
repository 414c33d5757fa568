"""What differs between the supported decoder architectures, in one place.

KaVa reads three things out of a decoder: its KV-cache (the same layout for every family here),
the queries of the teacher's answer rows (`kava.model.queries`, for R-KV importance) and its
rotary embedding (`kava.model.rope`, for pre-RoPE keys). It also computes logits and embeds its
new tokens itself. The families share Llama's cache layout; where they differ:

- where the finished pre-RoPE query comes out, and in which layout (Qwen3 and Gemma 3 normalise
  it after ``q_proj``, Gemma 3 after moving heads first);
- the rotary embedding of each layer (Gemma 3: one for sliding-window layers, another for global ones);
- attention and final-logit soft-capping (Gemma 2), read from the model config;
- the embedding scale (Gemma multiplies inside its embedding module, so new token rows must too);
- sliding windows (Mistral, Gemma), which importance's recomputed attention applies per layer.

Any attention implementation works (importance recomputes the answer rows itself); transformers'
default picks SDPA where the family has it and eager otherwise (Gemma 2's soft-capping).

A new family is one entry in ``ARCHITECTURES`` plus its tiny test config (tests/conftest.py); the
functions below read the rest from the transformers config, so they hold for every family.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kava.config import ConfigError

# (x, position_ids) -> (cos, sin), each [B, S, d]: a rotary embedding bound to one layer.
Rotary = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Architecture:
    # The attention submodule whose output is the query just before RoPE (q_proj, or a q-norm after it).
    query_module: str = "q_proj"
    # That output is [B, H_q, S, d] (Gemma 3 normalises after the head transpose), not [B, S, …].
    query_heads_first: bool = False
    # The rotary module takes the layer type (Gemma 3: local and global RoPE differ per layer).
    rotary_per_layer_type: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(),
    "qwen2": Architecture(),
    "mistral": Architecture(),
    "qwen3": Architecture(query_module="q_norm"),
    "gemma2": Architecture(),
    "gemma3_text": Architecture(query_module="q_norm", query_heads_first=True, rotary_per_layer_type=True),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def architecture(config) -> Architecture:
    """The table entry of a transformers config; a clear error for any other family."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"unsupported architecture {model_type!r}: kava supports {', '.join(SUPPORTED_ARCHITECTURES)} "
            "(Llama, Qwen2, Mistral, Qwen3, Gemma 2 and Gemma 3 causal LMs)"
        )
    return ARCHITECTURES[model_type]


def layer_rotaries(decoder) -> list[Rotary]:
    """Each layer's rotary embedding, in layer order."""
    rotary, config = decoder.rotary_emb, decoder.config
    if not architecture(config).rotary_per_layer_type:
        return [rotary] * config.num_hidden_layers
    return [functools.partial(rotary, layer_type=t) for t in config.layer_types]


def sliding_windows(config) -> list[int | None]:
    """Each layer's sliding window (a key is visible when row − column < window), None for full attention."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:  # Mistral: one window for every layer
        return [window] * config.num_hidden_layers
    return [window if t == "sliding_attention" else None for t in types]


def attention_softcap(config) -> float | None:
    """Gemma 2 caps attention scores as c·tanh(s / c) before the softmax."""
    return getattr(config, "attn_logit_softcapping", None)


def final_softcap(config) -> float | None:
    """Gemma 2 caps the logits as c·tanh(z / c)."""
    return getattr(config, "final_logit_softcapping", None)


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else cap * torch.tanh(x / cap)


def embedding_scale(embedding: torch.nn.Module) -> float:
    """The factor an embedding module multiplies its rows by (Gemma: √hidden), 1 for a plain table."""
    return float(getattr(embedding, "scalar_embed_scale", 1.0))
