"""Teacher-cache oracle: how much of the answer the compressed chain-of-thought cache carries.

KV distillation can at best make the student's latent cache equal the compressed teacher cache
(docs/method.md §4). This diagnostic puts that cache itself after the question — ``[bos] Q``, then the
M kept entries of every layer and KV head at their own positions, then the answer prompt ``P``
at the position it has in the teacher sequence — and decodes the answer greedily with the
model's own weights. Accuracy near the teacher's means the target carries the answer, so the
limit lies in producing it from latents; accuracy near No-CoT's means that even a perfect match
would not help (too few entries, a bad eviction, or a teacher that cannot answer from C').

With M at least the trace length nothing is evicted, and the result is the model answering
after the gold C' — e.g. the teacher's own accuracy when its last step is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import DynamicCache

from kava.data.answers import answers_match, extract_answer, parse_gold
from kava.data.records import Record
from kava.model.sequences import SequenceBuilder, positions_from_mask
from kava.evaluation.decoding import Opening, decode_from
from kava.model.cache import cache_of, kv_of
from kava.model.teacher_compression import teacher_targets


@dataclass
class OracleResult:
    accuracy: float
    predictions: list[str]  # decoded answer text per record, in the records' order
    kept_entries: float  # mean number of teacher entries per layer and head placed in the cache


def teacher_cache_oracle(
    model,
    records: Sequence[Record],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 16,
    overrides: dict[str, Any] | None = None,
) -> OracleResult:
    """Answer every record from ``[bos] Q`` + its compressed teacher cache + ``P`` (see module doc).

    The compression (M, eviction, λ, whether the last step is dropped) is the model's config —
    the settings of its KV-distillation targets — unless ``overrides`` (KavaConfig fields, e.g.
    ``{"num_latents": 64, "teacher_drop_last_step": False}``) asks for others for this call.
    """
    cfg = replace(model.config, **(overrides or {}))
    if not (cfg.uses_teacher and cfg.uses_student and cfg.alpha_kv > 0 and cfg.teacher_uses_cot):
        raise ValueError(
            f"the oracle needs a config that builds compressed CoT targets (alpha_kv > 0 with a CoT teacher, "
            f"e.g. the kava preset); got method {cfg.method!r} with alpha_kv={cfg.alpha_kv}"
        )
    if not records:
        raise ValueError("no records for the oracle")
    was_training = model.training
    model.eval()
    builder = SequenceBuilder(model.tokenizer, cfg)  # the teacher sequences of these settings
    predictions: list[str] = []
    correct = kept = 0
    try:
        with torch.no_grad():
            for first in range(0, len(records), batch_size):
                chunk = list(records[first : first + batch_size])
                opening, n_kept = _oracle_opening(model, builder, cfg, chunk)
                gen = decode_from(model, opening, max_new_tokens)
                for tokens, done, record in zip(gen.tokens, gen.finished, chunk):
                    text = builder.tok.decode(tokens[:-1] if done else tokens, skip_special_tokens=False)
                    predictions.append(text)
                    correct += answers_match(extract_answer(text), parse_gold(record.answer))
                kept += n_kept
    finally:
        model.train(was_training)
    return OracleResult(correct / len(records), predictions, kept / len(records))


def _oracle_opening(model, builder: SequenceBuilder, cfg, records: list[Record]) -> tuple[Opening, float]:
    device = model.device
    batch = {k: v.to(device) for k, v in builder.training_batch(records).items()}
    targets = teacher_targets(model, batch, cfg).kv
    k_t, v_t, slots = targets.k_cached, targets.v, targets.slot_mask  # [L,B,H,M,d], [B,M]

    prompt = builder.direct_prompt([r.question for r in records], with_answer_prompt=False)
    q_ids, q_mask = prompt["prompt_ids"].to(device), prompt["prompt_mask"].to(device)
    out = model.decode(model.embed(q_ids), q_mask, positions_from_mask(q_mask), DynamicCache())
    kv = [(torch.cat([k, k_t[i]], dim=2), torch.cat([v, v_t[i]], dim=2)) for i, (k, v) in enumerate(kv_of(out.cache))]

    B = len(records)
    tail = torch.tensor(builder.prompt_ids, device=device).expand(B, -1)
    mask = torch.cat([q_mask, slots.long(), torch.ones_like(tail)], dim=1)
    # P sits where the teacher had it: after its question and its N_C trace tokens.
    start = q_mask.sum(-1) + batch["t_cot_mask"].sum(-1)
    pos = start.view(B, 1) + torch.arange(tail.shape[1], device=device).view(1, -1)
    res = model.decode(model.embed(tail), mask, pos, cache_of(kv))
    return Opening.after(model, res, mask, pos[:, -1] + 1, forward_passes=0), float(slots.sum())
