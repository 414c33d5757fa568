"""The teacher-cache oracle: with nothing evicted it must be the model answering after the written
trace; results must not depend on batch mates; overrides must not leak into the model."""

from __future__ import annotations

import pytest
import torch

from kava.config import preset
from kava.data.records import Record
from kava.evaluation.oracle import teacher_cache_oracle

from conftest import decoding_model as build


def _greedy_after_trace(model, record: Record, drop_last: bool, max_new: int, keep: int | None = None) -> str:
    """Reference: plain greedy decoding of ``[bos] Q C[:keep] P`` without a cache, P and the answer
    at the positions they have after the whole trace C."""
    b = model.builder
    q, c = b.question_ids(record.question), b.cot_ids(record.steps, drop_last=drop_last)
    kept = c[:keep]
    ids = q + kept + list(b.prompt_ids)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            n_tail = len(ids) + len(out) - len(q) - len(kept)
            pos = list(range(len(q) + len(kept))) + list(range(len(q) + len(c), len(q) + len(c) + n_tail))
            embeds = model.embed(torch.tensor([ids + out]))  # the model's own rows for its new tokens
            logits = model.lm(inputs_embeds=embeds, position_ids=torch.tensor([pos])).logits
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if nxt == b.eos_id:
                break
    if out[-1] == b.eos_id:
        out = out[:-1]
    return b.tok.decode(out, skip_special_tokens=False)


@pytest.mark.parametrize("drop_last", [True, False])
def test_with_nothing_evicted_the_oracle_is_the_model_answering_after_its_trace(records, drop_last):
    model = build("kava", num_latents=64)
    res = teacher_cache_oracle(model, records, batch_size=3, max_new_tokens=6,
                               overrides={"teacher_drop_last_step": drop_last})
    assert res.predictions == [_greedy_after_trace(model, r, drop_last, 6) for r in records]
    n_c = [len(model.builder.cot_ids(r.steps, drop_last=drop_last)) for r in records]
    assert res.kept_entries == pytest.approx(sum(n_c) / len(n_c))


@pytest.mark.parametrize("key_space", ["post_rope", "pre_rope"])
def test_crop_oracle_is_the_trace_prefix_with_the_prompt_where_the_whole_trace_ends(records, key_space):
    # Pre-RoPE targets are what the loss compares; the oracle must still feed the cached keys.
    model = build("kava", num_latents=5, eviction="crop", kv_key_space=key_space)
    res = teacher_cache_oracle(model, records, batch_size=3, max_new_tokens=6)
    assert res.predictions == [_greedy_after_trace(model, r, True, 6, keep=5) for r in records]


def test_compressed_oracle_keeps_m_entries_and_ignores_batch_mates(records):
    model = build("kava", num_latents=4)
    together = teacher_cache_oracle(model, records, batch_size=3, max_new_tokens=6)
    alone = teacher_cache_oracle(model, records, batch_size=1, max_new_tokens=6)
    assert together.predictions == alone.predictions
    assert together.kept_entries == 4  # every trace here is longer than M
    # Evicting entries changes what the model sees: not the same as the full trace.
    full = teacher_cache_oracle(model, records, batch_size=3, max_new_tokens=6, overrides={"num_latents": 64})
    assert full.kept_entries > 4


def test_overrides_leave_the_model_alone_and_configs_without_targets_are_refused(records):
    model = build("kava", num_latents=4)
    before = model.config
    teacher_cache_oracle(model, records[:1], overrides={"num_latents": 64, "teacher_drop_last_step": False})
    assert model.config is before and model.builder.config is before
    assert model.config.num_latents == 4
    with pytest.raises(ValueError, match="alpha_kv"):
        teacher_cache_oracle(build("pccot"), records)
    assert preset("pccot").alpha_kv == 0
