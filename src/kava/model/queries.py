"""Keeping the attention queries of chosen rows during a forward pass, for R-KV's importance score.

Importance (method.md §4) needs the attention probabilities of the answer rows only. Asking the
model for attention maps would force eager attention and materialise every layer's S×S map;
instead the teacher runs on any attention implementation (SDPA by default) while these hooks keep
each layer's ``q_proj`` output at the answer rows, and `kava.compression.answer_attention`
recomputes exactly those rows from them and the cache. Architectures that transform queries after
``q_proj`` other than by RoPE (Qwen3's q-norm, Gemma 2's logit soft-capping) need their own step here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def capture_queries(decoder, rows: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every decoder layer appends its pre-RoPE queries at ``rows`` ([B, A] column
    indices) to the yielded list, detached, as [B, A, H_q·d], in layer order.

    The hooks are removed on exit, so recomputation under gradient checkpointing adds nothing.
    """
    captured: list[torch.Tensor] = []

    def keep(module, args, output: torch.Tensor) -> None:
        captured.append(output.detach().gather(1, rows.unsqueeze(-1).expand(-1, -1, output.shape[-1])))

    handles = [layer.self_attn.q_proj.register_forward_hook(keep) for layer in decoder.layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
