"""How close the student's latent cache is to its distillation target.

L_KV pulls the student's latent keys and values (the cache of the last Jacobi pass) towards the
compressed teacher cache, slot by slot, in the configured key space (docs/method.md §4–§5). The cosine
between the two per layer and slot shows where that match holds — direction only, so a student
that learnt the targets up to scale still reads near 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def cosine_map(student: torch.Tensor, target: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
    """Cosine over the head dimension, [L, B, H, M, d] × 2 → [L, B, H, M]; NaN where a slot has no
    target (``slot_mask`` [B, M] False: a trace shorter than M)."""
    cos = torch.nn.functional.cosine_similarity(student.float(), target.float(), dim=-1).clamp(-1.0, 1.0)
    return cos.masked_fill(~slot_mask.bool().view(1, *slot_mask.shape[:1], 1, -1), float("nan"))


@dataclass
class KVSimilarity:
    """One question's student-vs-target cosines; the maps average over KV heads."""

    key_space: str  # "post_rope" or "pre_rope": where the keys were compared
    keys_per_head: torch.Tensor  # [L, H, M]
    values_per_head: torch.Tensor  # [L, H, M]

    @property
    def keys(self) -> torch.Tensor:
        """[L, M] mean over KV heads."""
        return self.keys_per_head.mean(dim=1)

    @property
    def values(self) -> torch.Tensor:
        return self.values_per_head.mean(dim=1)

    def to_json(self) -> dict:
        def rows(t: torch.Tensor) -> list:
            return [[None if math.isnan(v) else round(v, 6) for v in row] for row in t.tolist()]  # NaN → null

        return {"key_space": self.key_space, "keys": rows(self.keys), "values": rows(self.values),
                "keys_per_head": [rows(layer) for layer in self.keys_per_head],
                "values_per_head": [rows(layer) for layer in self.values_per_head]}


def kv_similarity(student_k: torch.Tensor, student_v: torch.Tensor, target, key_space: str) -> KVSimilarity:
    """Cosines of the first (only) example: student K/V [L, 1, H, M, d] against a `CompressedKV`."""
    k = cosine_map(student_k, target.k, target.slot_mask)[:, 0]
    v = cosine_map(student_v, target.v, target.slot_mask)[:, 0]
    return KVSimilarity(key_space, k.cpu(), v.cpu())
