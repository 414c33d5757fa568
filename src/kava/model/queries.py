"""Keeping the attention queries of chosen rows during a forward pass, for R-KV's importance score.

Importance (docs/method.md §4) needs the attention probabilities of the answer rows only. Asking the
model for attention maps would force eager attention and materialise every layer's S×S map;
instead the teacher runs on any attention implementation (SDPA by default) while these hooks keep
each layer's pre-RoPE query at the answer rows (the output of ``q_proj``, or of the q-norm after
it: `kava.model.arch`), and `kava.compression.answer_attention` recomputes exactly those rows from
them and the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def capture_queries(decoder, rows: torch.Tensor, module: str = "q_proj", heads_first: bool = False
                    ) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every decoder layer appends its pre-RoPE queries at ``rows`` ([B, A] column
    indices) to the yielded list, detached, as [B, A, H_q·d], in layer order. ``module`` names the
    attention submodule that outputs them, ``heads_first`` whether its output is [B, H_q, S, d].

    The hooks are removed on exit, so recomputation under gradient checkpointing adds nothing.
    """
    captured: list[torch.Tensor] = []

    def keep(hooked, args, output: torch.Tensor) -> None:
        q = (output.transpose(1, 2) if heads_first else output).detach().flatten(2)  # [B, S, H_q·d]
        captured.append(q.gather(1, rows.unsqueeze(-1).expand(-1, -1, q.shape[-1])))

    handles = [getattr(layer.self_attn, module).register_forward_hook(keep) for layer in decoder.layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
