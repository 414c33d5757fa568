"""Applying and undoing the rotary embedding outside the attention layers.

Cached keys are post-RoPE: k' = k·cos + rot(k)·sin with (cos, sin) at the key's position (and
possibly an attention scaling s folded into both). ``rotate`` is that map, for queries captured
before the attention layer rotates them; ``unrotate_keys`` is its inverse
k = (k'·cos − rot(k')·sin) / s², for the ``kv_key_space: pre_rope`` option. Both are exact for
every RoPE variant whose rotary module returns (cos, sin) this way (Llama, Llama-3 scaling, Qwen2).
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import rotate_half


def _cos_sin(x: torch.Tensor, position_ids: torch.Tensor, rotary_emb) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = rotary_emb(x, position_ids)  # [B, S, d]
    return cos.unsqueeze(-3).to(x.dtype), sin.unsqueeze(-3).to(x.dtype)  # [B, 1, S, d]


def rotate(x: torch.Tensor, position_ids: torch.Tensor, rotary_emb) -> torch.Tensor:
    """x: [..., B, H, S, d] pre-RoPE at positions [B, S] → post-RoPE, as the attention layer does."""
    cos, sin = _cos_sin(x, position_ids, rotary_emb)
    return x * cos + rotate_half(x) * sin


def unrotate_keys(keys: torch.Tensor, position_ids: torch.Tensor, rotary_emb) -> torch.Tensor:
    """keys: [..., B, H, S, d] post-RoPE; position_ids: [B, S] → pre-RoPE keys of the same shape."""
    cos, sin = _cos_sin(keys, position_ids, rotary_emb)
    scale2 = cos * cos + sin * sin
    return (keys * cos - rotate_half(keys) * sin) / scale2
