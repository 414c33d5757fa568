"""Applying and undoing the rotary embedding outside the attention layers.

Cached keys are post-RoPE: k' = k·cos + rot(k)·sin with (cos, sin) at the key's position (and
possibly an attention scaling s folded into both). ``rotate`` is that map, for queries captured
before the attention layer rotates them; ``unrotate_keys`` is its inverse
k = (k'·cos − rot(k')·sin) / s², for the ``kv_key_space: pre_rope`` option. Both are exact for
every RoPE variant whose rotary module returns (cos, sin) this way (Llama, Llama-3 scaling, Qwen2,
Gemma).

``rotary`` is one rotary embedding for every layer, or a list with one per layer
(`kava.model.arch.layer_rotaries`; Gemma 3's local and global layers rotate differently), in
which case ``x`` carries the layers as its first dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.models.llama.modeling_llama import rotate_half

from kava.model.arch import Rotary


def _cos_sin(x: torch.Tensor, position_ids: torch.Tensor, rotary: Rotary | Sequence[Rotary]) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(rotary, Sequence):
        if len(set(map(id, rotary))) == 1:  # the same embedding everywhere: compute it once
            rotary = rotary[0]
        else:
            pairs = [r(x, position_ids) for r in rotary]  # L × ([B, S, d], [B, S, d])
            cos, sin = (torch.stack(t).unsqueeze(-3).to(x.dtype) for t in zip(*pairs))  # [L, B, 1, S, d]
            return cos, sin
    cos, sin = rotary(x, position_ids)  # [B, S, d]
    return cos.unsqueeze(-3).to(x.dtype), sin.unsqueeze(-3).to(x.dtype)  # [B, 1, S, d]


def rotate(x: torch.Tensor, position_ids: torch.Tensor, rotary: Rotary | Sequence[Rotary]) -> torch.Tensor:
    """x: [..., B, H, S, d] pre-RoPE at positions [B, S] → post-RoPE, as the attention layer does."""
    cos, sin = _cos_sin(x, position_ids, rotary)
    return x * cos + rotate_half(x) * sin


def unrotate_keys(keys: torch.Tensor, position_ids: torch.Tensor, rotary: Rotary | Sequence[Rotary]) -> torch.Tensor:
    """keys: [..., B, H, S, d] post-RoPE; position_ids: [B, S] → pre-RoPE keys of the same shape."""
    cos, sin = _cos_sin(keys, position_ids, rotary)
    scale2 = cos * cos + sin * sin
    return (keys * cos - rotate_half(keys) * sin) / scale2
