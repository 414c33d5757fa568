"""Teacher and student sequences and their per-example indices under padding (docs/method.md §2)."""

from __future__ import annotations

import pytest
import torch

from kava.config import preset
from kava.model.sequences import positions_from_mask
from kava.model.kava_model import KavaModel

from conftest import make_tokenizer, tiny_model


def _model(name="kava", **over):
    return KavaModel(tiny_model(), make_tokenizer(), preset(name, num_latents=3, lora_r=2, **over))


def test_teacher_layout_and_indices(records):
    m = _model()
    b = m.builder
    batch = b.training_batch(records)
    for i, r in enumerate(records):
        ids = batch["t_input_ids"][i]
        q = b.question_ids(r.question)
        c = b.cot_ids(r.steps, drop_last=True)
        a = b.answer_ids(r.answer)
        n = len(q) + len(c) + len(b.prompt_ids) + len(a)
        real = batch["t_attention_mask"][i].bool()
        assert ids[real].tolist() == q + c + b.prompt_ids + a
        assert real.sum() == n
        # One block of real tokens: padding only before the question and after eos.
        first = int(real.float().argmax())
        assert real[first : first + n].all()
        assert ids[batch["t_cot_mask"][i]].tolist() == c
        assert ids[batch["t_answer_mask"][i]].tolist() == b.prompt_ids + a
        assert ids[batch["t_ce_mask"][i]].tolist() == c + b.prompt_ids + a
        d = batch["t_distill_index"][i]
        lead = b.blank_lead(a)
        assert ids[d] == (b.prompt_ids + a)[len(b.prompt_ids) - 1 + lead] and ids[d + 1] == a[lead]
        # The last step is dropped from the teacher's CoT by default.
        assert b.tok.decode(c).strip() == " ".join(r.steps[:-1])


def test_teacher_question_columns_are_the_student_prefix(records):
    """The student reuses the teacher's cache over ``[bos] Q``: same ids, mask and positions."""
    batch = _model().builder.training_batch(records)
    Lq = batch["s_prefix_ids"].shape[1] - 1
    assert torch.equal(batch["t_input_ids"][:, :Lq], batch["s_prefix_ids"][:, :Lq])
    assert torch.equal(batch["t_attention_mask"][:, :Lq], batch["s_prefix_mask"][:, :Lq])
    t_pos = positions_from_mask(batch["t_attention_mask"])[:, :Lq]
    s_pos = positions_from_mask(batch["s_prefix_mask"])[:, :Lq]
    assert torch.equal(t_pos, s_pos)
    assert not batch["t_cot_mask"][:, :Lq].any() and not batch["t_ce_mask"][:, :Lq].any()


def test_full_cot_for_cot_baseline_and_none_for_nocot(records):
    cot = _model("cot").builder
    r = records[0]
    assert cot.tok.decode(cot.cot_ids(r.steps, drop_last=False)).strip() == " ".join(r.steps)
    nocot = _model("nocot").builder.training_batch(records)
    assert not nocot["t_cot_mask"].any()


def test_student_layout_left_padded_prefix_and_same_answer_ids(records):
    m = _model()
    b = m.builder
    batch = b.training_batch(records)
    Lp = batch["s_prefix_ids"].shape[1]
    for i, r in enumerate(records):
        n = int(batch["s_prefix_mask"][i].sum())
        assert batch["s_prefix_mask"][i, Lp - n:].all() and not batch["s_prefix_mask"][i, : Lp - n].any()
        assert batch["s_prefix_ids"][i, Lp - n:].tolist() == b.question_ids(r.question) + [b.bot_id]
        seg = batch["s_answer_ids"][i][batch["s_answer_mask"][i].bool()].tolist()
        assert seg == [b.eot_id] + b.prompt_ids + b.answer_ids(r.answer)
        # The student's answer tokens are exactly the teacher's: same first-digit position.
        t_ans = batch["t_input_ids"][i][batch["t_answer_mask"][i]].tolist()
        assert seg[1:] == t_ans
        # Both distillation states sit on the same token: the one before the first answer token.
        d, td = batch["s_distill_index"][i], batch["t_distill_index"][i]
        assert batch["s_answer_ids"][i, d] == batch["t_input_ids"][i, td]
        assert seg[d + 1] == batch["t_input_ids"][i, td + 1]
    assert batch["s_ce_mask"][:, 0].sum() == 0


def test_special_tokens_added_once_and_trainable_rows():
    tok = make_tokenizer()
    n = len(tok)
    m = KavaModel(tiny_model(), tok, preset("kava", lora_r=2))
    assert len(tok) == n + 3 and m.embedding.first_new_id == n
    assert m.embedding.new_rows.requires_grad and not m.embedding.base.weight.requires_grad
    ids = torch.tensor([[0, n, n + 1, n + 2]])
    e = m.embed(ids)
    torch.testing.assert_close(e[0, 1:], m.embedding.new_rows)
    torch.testing.assert_close(e[0, 0], m.embedding.base.weight[0])


@pytest.mark.parametrize("lone_space", [True, False])
def test_distillation_state_predicts_the_first_digit_not_a_lone_space(lone_space):
    from kava.data.records import Record
    from kava.demo.tokenizer import build_tokenizer
    from tokenizers import pre_tokenizers

    tok = build_tokenizer()
    if lone_space:  # as SmolLM2's tokenizer does: ' 21' is a space token, then digits
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ])
    m = KavaModel(tiny_model(vocab=len(tok) + 3), tok, preset("kava", num_latents=3, lora_r=2))
    b = m.builder
    recs = [Record("Tom has 5 apples.", ("<<5+2=7>>", "<<7*3=21>>"), "21"),
            Record("Mia has 12 cards. She gets 3 more.", ("<<12+3=15>>", "<<15-2=13>>"), "13")]
    batch = b.training_batch(recs)
    for i in range(len(recs)):
        ids = batch["t_input_ids"][i].tolist()
        td = int(batch["t_distill_index"][i])
        # The state at td predicts the answer's first digit token: past a lone space, or ':' then '▁21'.
        expected = ["▁", recs[i].answer[0]] if lone_space else [":", "▁" + recs[i].answer]
        assert tok.convert_ids_to_tokens(ids[td : td + 2]) == expected
        sd = int(batch["s_distill_index"][i])
        assert batch["s_answer_ids"][i, sd + 1].item() == ids[td + 1]
    assert b.blank_lead(b.encode("21") + [b.eos_id]) == 0  # nothing to skip without the space
    assert b.blank_lead(b.encode("  21") + [b.eos_id]) == (2 if lone_space else 1)
