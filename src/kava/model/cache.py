"""The KV cache as KaVa uses it.

KaVa works on the cache itself, not only through it: the student's latents run on top of the
teacher's question block, compression reads the teacher's whole trace, and L_KV compares cache
entries. So the cache takes three forms here, each where it is handiest:

- a `DynamicCache`, what the decoder reads and appends to (`cache_of` builds a fresh one);
- `KV`, per-layer ``(keys, values)`` pairs, for slicing and joining caches (`kv_of` reads one);
- stacked ``[L, B, H_kv, S, d]`` tensors, what compression and the losses compare (`stack`).

Gradient checkpointing lives here too: transformers' own turns the cache off, so KaVa replays
each layer together with its cache (`enable_gradient_checkpointing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, PreTrainedModel

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [B, H_kv, S, d]


def cache_of(kv: KV) -> DynamicCache:
    """A fresh cache holding these tensors; the model appends to it without touching ours."""
    return DynamicCache(ddp_cache_data=[(k, v) for k, v in kv])


def kv_of(cache: DynamicCache, start: int = 0, end: int | None = None) -> KV:
    """Every layer's entries in columns ``start:end`` (views, still in the graph)."""
    return [(layer.keys[:, :, start:end], layer.values[:, :, start:end]) for layer in cache.layers]


def stack(kv: KV) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of all layers as two [L, B, H_kv, S, d] tensors."""
    return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class WrapsLM(Protocol):
    """What gradient checkpointing needs of a `KavaModel`: its causal LM. Structural, so this
    module (which kava_model imports) never imports kava_model back."""

    lm: PreTrainedModel


def enable_gradient_checkpointing(model: WrapsLM) -> None:
    """Recompute each decoder layer's activations in backward instead of storing them.

    transformers' own gradient checkpointing disables the KV cache, but KaVa's latent passes run
    on the cache and the teacher's compression reads it. Here each layer is checkpointed with
    its cache: the recomputation in backward sees the cache layer exactly as it was before the
    forward (the forward appended to it), so the replay matches and gradients equal those
    without checkpointing. RNG state is replayed too (LoRA dropout draws the same masks).
    """
    for layer in model.lm.get_decoder().layers:
        if not getattr(layer, "_kava_checkpointed", False):
            layer.forward = _checkpointed(layer, layer.forward)
            layer._kava_checkpointed = True


def _checkpointed(layer: torch.nn.Module, forward: Callable) -> Callable:
    index = layer.self_attn.layer_idx

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        cache = kwargs.get("cache")
        before = _cache_layer_state(cache, index)
        modes = [m.training for m in layer.modules()]  # a pass may run without dropout (teacher_dropout)
        calls = 0

        def body(*inner):
            nonlocal calls
            calls += 1
            if calls == 1:
                return forward(*inner, **kwargs)
            # Backward replay: the cache and the train/eval modes as they were in the forward.
            after, now = _cache_layer_state(cache, index), [m.training for m in layer.modules()]
            _set_cache_layer_state(cache, index, before)
            _set_modes(layer, modes)
            try:
                return forward(*inner, **kwargs)
            finally:
                _set_cache_layer_state(cache, index, after)
                _set_modes(layer, now)

        return checkpoint(body, *args, use_reentrant=False)

    return run


def _set_modes(layer: torch.nn.Module, modes: list[bool]) -> None:
    for module, mode in zip(layer.modules(), modes):
        module.training = mode


def _cache_layer_state(cache, index: int) -> tuple | None:
    if cache is None:
        return None
    if len(cache.layers) <= index:  # a DynamicCache creates its layers on first use
        return (None, None, False)
    layer = cache.layers[index]
    return (layer.keys, layer.values, layer.is_initialized)


def _set_cache_layer_state(cache, index: int, state: tuple | None) -> None:
    if state is None:
        return
    layer = cache.layers[index]
    layer.keys, layer.values, layer.is_initialized = state
