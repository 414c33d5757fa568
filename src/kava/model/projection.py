"""The latent projection φ (docs/method.md §3): maps a last-layer hidden state to the next latent input."""

from __future__ import annotations

import torch
from torch import nn


class LatentProjection(nn.Module):
    """Linear(d, d_p) → GELU → Linear(d_p, d) → LayerNorm(d).

    The LayerNorm brings the post-final-norm hidden state back to the scale of input embeddings,
    which is why PCCoT/CODI found it necessary.
    """

    def __init__(self, hidden_size: int, projection_dim: int | None = None):
        super().__init__()
        d_p = projection_dim or hidden_size
        self.net = nn.Sequential(
            nn.Linear(hidden_size, d_p), nn.GELU(), nn.Linear(d_p, hidden_size), nn.LayerNorm(hidden_size)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)
