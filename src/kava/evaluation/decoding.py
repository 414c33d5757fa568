"""Batched answer generation for every inference mode, reusing the KV-cache (docs/method.md §6).

Three modes, chosen by ``model.config.inference_mode``:

- ``latent`` (KaVa, PCCoT, CODI, pause): ``[bos] Q <bot>``, the M latents (init pass + T
  iterations, or the sequential / pause variants), then one pass over ``<eot> P`` on that cache,
  whose last position predicts the first answer token;
- ``cot``: ``[bos] Q``, then the written chain of thought and the answer are decoded;
- ``direct`` (No-CoT): ``[bos] Q P``, then the answer is decoded.

After the opening pass every further token costs one single-token pass on the growing cache.

Cost is counted per question, as the paper does: a forward pass is one decoder call on the
batch, and a question stops counting once it has emitted eos. So a latent model spends
``passes_before + 1 + (generated - 1)`` passes, where ``generated`` counts the emitted tokens
including eos; for KaVa ``passes_before = 1 + T``. The last emitted token is never fed back, so
it adds no pass and no cache entry.

Batches mix prompt lengths. Prompts are left-padded, position ids come from the attention mask,
and a question that emits eos leaves the batch, so later passes run only the unfinished ones.
Each question's tokens, passes and cache size are therefore those it gets alone.
Sampling draws each question's tokens from its own seeded generator for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from kava.model.sequences import positions_from_mask
from kava.model.cache import cache_of

MODES = ("latent", "cot", "direct")


@dataclass(frozen=True)
class Sampling:
    """Temperature / nucleus sampling; ``None`` in its place means greedy decoding."""

    temperature: float
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (leave sampling out for greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")


@dataclass
class Generation:
    """What one batch produced, row by row."""

    tokens: list[list[int]]  # emitted ids, including the eos when one was emitted
    finished: list[bool]  # whether the row emitted eos before the token limit
    forward_passes: list[int]
    cache_tokens: list[int]  # real (unmasked) entries per layer and KV head in the final cache


@dataclass
class Opening:
    """State after the passes that precede the first answer (or CoT) token: what `decode_from`
    continues from. Diagnostics build their own (e.g. a cache holding the teacher's entries)."""

    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, S] over the cache
    next_position: torch.Tensor  # [B] position id of the next fed token
    logits: torch.Tensor  # [B, V] predicting the first emitted token
    forward_passes: int

    @classmethod
    def after(cls, model, out, attention_mask: torch.Tensor, next_position: torch.Tensor, forward_passes: int) -> "Opening":
        """The opening left by decoder output ``out``, whose last column predicts the first token."""
        return cls(out.cache, attention_mask, next_position, _last_logits(model, out), forward_passes)


def generate(
    model,
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    question_ids: Sequence[int] | None = None,
    mode: str | None = None,
) -> Generation:
    """Decode the answers to `questions` as one batch in `mode` (default: the model's inference mode).

    `question_ids` are stable per-question numbers (e.g. dataset indices) that seed each
    question's sampler, so a sampled answer does not depend on batch size or order; they default
    to the positions in `questions`. The model should be in eval mode (dropout off).
    """
    if not questions:
        raise ValueError("no questions to decode")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = list(range(len(questions))) if question_ids is None else list(question_ids)
    if len(ids) != len(questions):
        raise ValueError(f"{len(ids)} question_ids for {len(questions)} questions")
    with torch.no_grad():
        return decode_from(model, _open(model, questions, mode or model.config.inference_mode), max_new_tokens, sampling, ids)


def decode_from(model, opening: Opening, max_new_tokens: int, sampling: Sampling | None = None,
                question_ids: Sequence[int] | None = None) -> Generation:
    """Emit tokens from ``opening`` until eos or ``max_new_tokens`` (greedy unless ``sampling``);
    `question_ids` seed each row's sampler as in `generate`."""
    ids = list(range(opening.logits.shape[0])) if question_ids is None else list(question_ids)
    return _decode(model, opening, max_new_tokens, _Chooser(sampling, ids))


def _open(model, questions: Sequence[str], mode: str) -> Opening:
    builder = model.builder
    device = model.device
    if mode == "latent":
        prefix = builder.student_prefix(questions)
        state = model.latents(prefix["s_prefix_ids"].to(device), prefix["s_prefix_mask"].to(device))
        tail = torch.tensor([builder.eot_id, *builder.prompt_ids], device=device).expand(len(questions), -1)
        mask = torch.cat([state.attention_mask, torch.ones_like(tail)], dim=1)
        pos = state.next_position.view(-1, 1) + torch.arange(tail.shape[1], device=device).view(1, -1)
        out = model.decode(model.embed(tail), mask, pos, cache_of(state.kv))
        return Opening.after(model, out, mask, pos[:, -1] + 1, state.forward_passes + 1)
    if mode in ("cot", "direct"):
        prompt = builder.direct_prompt(questions, with_answer_prompt=mode == "direct")
        ids, mask = prompt["prompt_ids"].to(device), prompt["prompt_mask"].to(device)
        out = model.decode(model.embed(ids), mask, positions_from_mask(mask), DynamicCache())
        return Opening.after(model, out, mask, mask.sum(-1), 1)
    raise ValueError(f"unknown inference mode {mode!r}; expected one of {', '.join(MODES)}")


def _last_logits(model, out) -> torch.Tensor:
    # Prompts are left-padded and the latent tail has equal length, so the last column is real.
    return model.logits(out.last_hidden_state[:, -1]).float()


def _decode(model, opening: Opening, max_new_tokens: int, chooser: "_Chooser") -> Generation:
    """Feed each chosen token back until eos or the limit. A row that finishes leaves the batch
    (its cache rows are dropped), so later passes spend nothing on it."""
    builder = model.builder
    B = opening.logits.shape[0]
    device = opening.logits.device
    tokens: list[list[int]] = [[] for _ in range(B)]
    passes = [opening.forward_passes] * B
    cache_tokens = [0] * B
    rows = torch.arange(B, device=device)  # the question each batch row holds
    cache, mask, pos, logits = opening.cache, opening.attention_mask, opening.next_position, opening.logits
    for step in range(max_new_tokens):
        chosen = chooser(logits, rows.tolist())
        for r, t in zip(rows.tolist(), chosen.tolist()):
            tokens[r].append(t)
        active = chosen != builder.eos_id
        if step == max_new_tokens - 1 or not active.any():
            break
        if not active.all():
            for r, n in zip(rows[~active].tolist(), mask[~active].sum(-1).tolist()):
                cache_tokens[r] = n
            keep = active.nonzero().flatten()
            cache.batch_select_indices(keep)
            rows, mask, pos, chosen = rows[keep], mask[keep], pos[keep], chosen[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        out = model.decode(model.embed(chosen.view(-1, 1)), mask, pos.view(-1, 1), cache)
        for r in rows.tolist():
            passes[r] += 1
        pos = pos + 1
        cache, logits = out.cache, _last_logits(model, out)
    for r, n in zip(rows.tolist(), mask.sum(-1).tolist()):
        cache_tokens[r] = n
    finished = [bool(t) and t[-1] == builder.eos_id for t in tokens]
    return Generation(tokens, finished, passes, cache_tokens)


class _Chooser:
    """Greedy argmax, or temperature / top-p sampling with one generator per question."""

    def __init__(self, sampling: Sampling | None, question_ids: Sequence[int]):
        self.sampling = sampling
        self.generators = None
        if sampling is not None:
            self.generators = [torch.Generator().manual_seed(sampling.seed * 1_000_003 + q) for q in question_ids]

    def __call__(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """The next token of each batch row; ``rows`` says which question each row holds."""
        if self.sampling is None:
            return logits.argmax(-1)
        probs = top_p_filter(torch.softmax(logits / self.sampling.temperature, dim=-1), self.sampling.top_p).cpu()
        picks = [torch.multinomial(p, 1, generator=self.generators[r]) for p, r in zip(probs, rows)]
        return torch.cat(picks).to(logits.device)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches `top_p` (the top one always)."""
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(-1) - sorted_p
    sorted_p = sorted_p.masked_fill(mass_before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)
