"""What each latent "says": its hidden state read through the LM head, pass by pass.

A latent is a vector, not a token, but the last-layer hidden state at a latent slot is what the
LM head would turn into a next token there — and what φ turns into the next slot's input in the
following Jacobi pass (docs/method.md §3). Reading it through the head after the init pass and after
every iteration shows whether the latents drift towards the trace's numbers, and whether the
Jacobi iterations settle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LatentTokens:
    """Top-k next-token readings of every latent slot after every pass of one question."""

    passes: list[str]  # a label per pass: "init", "iter 1" … "iter T" (or "sequential")
    token_ids: torch.Tensor  # [P, M, k] most likely first
    probs: torch.Tensor  # [P, M, k] their softmax probabilities, descending
    tokens: list[list[list[str]]]  # [P][M][k] the token texts

    def to_json(self) -> dict:
        return {
            "passes": [
                {"pass": label, "slots": [
                    [{"token": t, "id": int(i), "prob": float(p)} for t, i, p in zip(toks, ids, ps)]
                    for toks, ids, ps in zip(slot_toks, slot_ids.tolist(), slot_ps.tolist())
                ]}
                for label, slot_toks, slot_ids, slot_ps in zip(self.passes, self.tokens, self.token_ids, self.probs)
            ]
        }


def pass_labels(n_passes: int, latent_mode: str) -> list[str]:
    """How the passes that `run_latents` reports are called: the init pass, then each iteration."""
    if latent_mode == "sequential":
        return ["sequential"]
    return ["init"] + [f"iter {t}" for t in range(1, n_passes)]


def top_tokens(model, hidden: torch.Tensor, k: int, labels: list[str]) -> LatentTokens:
    """Read hidden states [P, M, D] (one question's latent slots, pass by pass) through the LM head."""
    vocab = model.lm.get_output_embeddings().weight.shape[0]
    if not 1 <= k <= vocab:
        raise ValueError(f"top-k must lie in 1..{vocab} (the vocabulary), got {k}")
    probs = torch.softmax(model.logits(hidden).float(), dim=-1)
    top_p, top_i = probs.topk(k, dim=-1)  # sorted, most likely first
    decode = model.tokenizer.decode
    texts = [[[decode([i]) for i in slot] for slot in p] for p in top_i.tolist()]
    return LatentTokens(labels, top_i.cpu(), top_p.cpu(), texts)
