"""What differs between the supported decoder architectures, in one table.

KaVa reads three things out of a decoder: its KV-cache (the same layout for every family here),
the queries of the teacher's answer rows (`kava.model.queries`, for R-KV importance) and its
rotary embedding (`kava.model.rope`, for pre-RoPE keys). The families below share Llama's
attention, RoPE and cache; they differ in where the finished pre-RoPE query comes out (Qwen3
normalises it after ``q_proj``). A new family is one entry here plus its tiny test config.

Importance recomputes full causal attention: a model whose layers use a sliding window (Mistral's
``sliding_window``) gives the same scores only for sequences within the window, which holds for
GSM8k-length traces (a few hundred tokens against a window of thousands).
"""

from __future__ import annotations

from dataclasses import dataclass

from kava.config import ConfigError

@dataclass(frozen=True)
class Architecture:
    # The attention submodule whose output is the query just before RoPE (q_proj, or a q-norm after it).
    query_module: str = "q_proj"


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(),
    "qwen2": Architecture(),
    "mistral": Architecture(),
    "qwen3": Architecture(query_module="q_norm"),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def architecture(config) -> Architecture:
    """The table entry of a transformers config; a clear error for any other family."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"unsupported architecture {model_type!r}: kava supports {', '.join(SUPPORTED_ARCHITECTURES)} "
            "(Llama, Qwen2, Mistral and Qwen3 causal LMs)"
        )
    return ARCHITECTURES[model_type]
