"""Which trace tokens the teacher-cache eviction keeps, per layer and KV head.

The KV distillation target of a question is M entries of the teacher's chain-of-thought cache
per layer and KV head (docs/method.md §4). Which ones survive the eviction says what the student is
asked to carry in its latents: the results of the steps, the operators, or the brackets. The
kept positions come from `kava.model.teacher_compression.teacher_targets` (the very eviction training used);
this module only turns them into per-token counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kava.model.teacher_compression import CompressedKV


def kept_mask(indices: torch.Tensor, slot_mask: torch.Tensor, length: int) -> torch.Tensor:
    """[L, B, H, S] bool: which columns of the teacher sequence each layer and head keeps.

    ``indices`` [L, B, H, M] and ``slot_mask`` [B, M] as in `CompressedKV`; unmatched slots (a
    trace shorter than M) point at column 0 and are not counted.
    """
    L, B, H, M = indices.shape
    valid = slot_mask.view(1, B, 1, M).expand(L, B, H, M).to(torch.int64)
    counts = torch.zeros(L, B, H, length, dtype=torch.int64, device=indices.device)
    return counts.scatter_add(-1, indices, valid) > 0


@dataclass
class KeptTokens:
    """One question's teacher sequence and what each layer and KV head keeps of its trace."""

    tokens: list[str]  # the teacher sequence's tokens, padding left out: [bos] Q C' P A [eos]
    cot: torch.Tensor  # [S] bool, the trace tokens C' (the only ones eviction chooses among)
    kept: torch.Tensor  # [L, H, S] bool
    num_latents: int  # M, the entries kept per layer and head

    @property
    def counts(self) -> torch.Tensor:
        """[S] how many (layer, head) pairs keep each token."""
        return self.kept.sum(dim=(0, 1))

    @property
    def per_layer(self) -> torch.Tensor:
        """[L] how many distinct trace tokens each layer keeps in at least one head."""
        return self.kept.any(dim=1).sum(-1)

    def to_json(self) -> dict:
        L, H, _ = self.kept.shape
        return {
            "num_latents": self.num_latents,
            "layers": L,
            "kv_heads": H,
            "tokens": [{"token": t, "trace": bool(c), "kept_by": int(n)}
                       for t, c, n in zip(self.tokens, self.cot.tolist(), self.counts.tolist())],
            "kept_positions": [[torch.nonzero(head).flatten().tolist() for head in layer] for layer in self.kept],
        }


def kept_tokens(model, batch: dict[str, torch.Tensor], compressed: CompressedKV) -> KeptTokens:
    """The kept trace tokens of the first (only) example of a teacher ``batch``, padding dropped."""
    real = batch["t_attention_mask"][0].bool()
    mask = kept_mask(compressed.indices, compressed.slot_mask, real.shape[0])[:, 0]  # [L, H, S]
    decode = model.tokenizer.decode
    tokens = [decode([i]) for i in batch["t_input_ids"][0][real].tolist()]
    return KeptTokens(tokens, batch["t_cot_mask"][0][real].cpu(), mask[:, :, real].cpu(), compressed.indices.shape[-1])
