"""Undoing the rotary embedding on cached keys, for the ``kv_key_space: pre_rope`` ablation.

Cached keys are post-RoPE: k' = k·cos + rot(k)·sin with (cos, sin) at the key's position (and
possibly an attention scaling s folded into both). The inverse rotation is
k = (k'·cos − rot(k')·sin) / s², exact for every RoPE variant whose rotary module returns
(cos, sin) this way (Llama, Llama-3 scaling, Qwen2).
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import rotate_half


def unrotate_keys(keys: torch.Tensor, position_ids: torch.Tensor, rotary_emb) -> torch.Tensor:
    """keys: [..., B, H, S, d] post-RoPE; position_ids: [B, S] → pre-RoPE keys of the same shape."""
    cos, sin = rotary_emb(keys, position_ids)  # [B, S, d]
    cos, sin = cos.unsqueeze(-3).to(keys.dtype), sin.unsqueeze(-3).to(keys.dtype)  # [B, 1, S, d]
    scale2 = cos * cos + sin * sin
    return (keys * cos - rotate_half(keys) * sin) / scale2
