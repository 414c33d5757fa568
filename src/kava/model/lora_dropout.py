"""LoRA dropout with one mask per input instead of one per adapter (``lora_dropout_masks``).

PEFT gives every adapted linear layer its own dropout: in a Llama block q, k and v read the same
hidden states and each draws a Bernoulli mask over them, and so do gate and up. On a CPU those
draws are a large share of a pass (about a quarter of a SmolLM2 teacher pass). With
``per_input``, an adapter whose input is the very tensor the previous adapter dropped reuses
that dropped tensor: q/k/v share one mask, gate/up another, o and down keep their own (4 draws
per layer instead of 7). The trade: the noise on q, k and v (and on gate and up) is correlated,
which is a different regulariser from PEFT's; `benchmarks/studies/lora_dropout_masks.py` measures both.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F


class _LastDrop:
    """The last input dropped and its dropped copy; the copy is released when the input dies."""

    def __init__(self) -> None:
        self.input: weakref.ref | None = None
        self.version = -1
        self.output: torch.Tensor | None = None

    def get(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.input is not None and self.input() is x and self.version == x._version:
            return self.output
        return None

    def put(self, x: torch.Tensor, out: torch.Tensor) -> None:
        self.input = weakref.ref(x, self._forget)
        self.version, self.output = x._version, out

    def _forget(self, ref: weakref.ref) -> None:
        if self.input is ref:
            self.input, self.output = None, None


class SharedInputDropout(nn.Dropout):
    """`nn.Dropout` that returns the same dropped tensor for the same input tensor (same object,
    not modified in place) as the call before it, across every module sharing its ``memo``."""

    def __init__(self, p: float, memo: _LastDrop) -> None:
        super().__init__(p)
        self.memo = memo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        out = self.memo.get(x)
        if out is None:
            out = F.dropout(x, self.p, True)
            self.memo.put(x, out)
        return out


def share_dropout_masks(model: nn.Module, p: float) -> int:
    """Replace every LoRA layer's dropout in ``model`` with one `SharedInputDropout` memo; returns
    how many were replaced (0 when ``p`` is 0: PEFT then uses no dropout at all)."""
    if p == 0:
        return 0
    memo = _LastDrop()
    replaced = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, nn.ModuleDict):
            for name in list(drops):
                drops[name] = SharedInputDropout(p, memo)
                replaced += 1
    return replaced
