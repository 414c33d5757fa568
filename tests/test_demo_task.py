"""The demo's synthetic task and its word-level tokenizer."""

from __future__ import annotations

import re
from itertools import islice

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from kava.demo.task import TEST_SEED, VALID_SEED, SyntheticTask, TaskConfig, generate
from kava.demo.tokenizer import BOS_ID, EOS_ID, PAD_ID, build_tokenizer, tiny_llama_config

EQUATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>")
NL_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
APPLY = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__}


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def encode(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# ---- task ------------------------------------------------------------------------------


def test_generation_is_deterministic_by_seed_and_prefix_stable():
    assert generate(50, seed=7) == generate(50, seed=7)
    assert generate(50, seed=7) != generate(50, seed=8)
    assert generate(20, seed=7) == generate(50, seed=7)[:20]


@pytest.mark.parametrize("trace, pattern", [("equation", EQUATION), ("nl", NL_STEP)])
def test_traces_are_correct_chains_ending_at_the_answer(trace, pattern):
    cfg = TaskConfig(trace=trace)
    for r in generate(500, seed=1, cfg=cfg):
        value = int(re.search(r"\d+", r.question).group())  # the first number is the start
        for step in r.steps:
            m = pattern.fullmatch(step) if trace == "equation" else pattern.search(step)
            assert m, step
            a, op, k, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert a == value, (r, step)
            assert APPLY[op](a, k) == c and (op != "/" or a == k * c), step  # division is exact
            assert 2 <= c <= cfg.max_value
            assert op in "*/" or 2 <= k <= cfg.max_amount  # added or removed amounts are single digits
            value = c
        assert str(value) == r.answer


def test_both_trace_styles_describe_the_same_problems():
    eq, nl = generate(100, 3, TaskConfig(trace="equation")), generate(100, 3, TaskConfig(trace="nl"))
    assert [(r.question, r.answer, len(r.steps)) for r in eq] == [(r.question, r.answer, len(r.steps)) for r in nl]
    assert nl[0].steps[0].startswith(nl[0].question.split()[0])  # "Tom has 12 + 7 = 19 apples."


@pytest.mark.parametrize("lo, hi", [(2, 4), (3, 3), (1, 2)])
def test_operation_count_stays_in_range(lo, hi):
    counts = {len(r.steps) for r in generate(300, seed=2, cfg=TaskConfig(min_ops=lo, max_ops=hi))}
    assert counts == set(range(lo, hi + 1))


def test_config_rejects_bad_shapes():
    for bad in (dict(min_ops=3, max_ops=2), dict(min_ops=0), dict(max_value=10), dict(max_amount=1), dict(trace="latex")):
        with pytest.raises(ValueError):
            TaskConfig(**bad)


def test_held_out_splits_are_fixed_distinct_and_disjoint():
    a, b = SyntheticTask(), SyntheticTask()
    assert a.test_set() == b.test_set() and a.valid_set() == b.valid_set()
    test_q, valid_q = {r.question for r in a.test_set()}, {r.question for r in a.valid_set()}
    assert len(test_q) == len(a.test_set()) == 500 and len(valid_q) == len(a.valid_set()) == 200
    assert not test_q & valid_q
    assert a.test_set(10) == a.test_set()[:10]
    with pytest.raises(ValueError):
        a.valid_set(201)


def test_train_stream_never_yields_a_held_out_question():
    task = SyntheticTask(TaskConfig(min_ops=2, max_ops=2))
    # Seeding the stream like a held-out split would replay it: every such problem must be skipped.
    for seed in (TEST_SEED, VALID_SEED, 0):
        drawn = list(islice(task.train_stream(seed), 1000))
        assert not {r.question for r in drawn} & task.held_out_questions
    assert list(islice(task.train_stream(5), 20)) == list(islice(task.train_stream(5), 20))


# ---- tokenizer -------------------------------------------------------------------------


def test_numbers_are_groups_of_up_to_three_digits(tok):
    tokens = tok.convert_ids_to_tokens(encode(tok, "Tom has 120 apples. <<120/4=30>> 1234 007"))
    assert tokens == ["Tom", "▁has", "▁120", "▁apples", ".", "▁",
                      "<", "<", "120", "/", "4", "=", "30", ">", ">", "▁123", "4", "▁007"]  # fmt: skip
    assert tok.unk_token_id not in encode(tok, " ".join(str(n) for n in range(0, 100_000, 7)))


@pytest.mark.parametrize("trace", ["equation", "nl"])
def test_segments_encode_like_the_joined_text_and_decode_verbatim(tok, trace):
    for r in generate(300, seed=4, cfg=TaskConfig(trace=trace)):
        segments = [r.question, " " + " ".join(r.steps), " The answer is:", " " + r.answer]
        ids = [i for s in segments for i in encode(tok, s)]
        text = "".join(segments)
        assert ids == encode(tok, text)
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
        assert re.findall(r"\d+", tok.decode(encode(tok, segments[-1])))[-1] == r.answer


def test_bos_is_prepended_only_with_special_tokens(tok):
    plain = encode(tok, "Tom has 3 apples.")
    assert tok("Tom has 3 apples.")["input_ids"] == [BOS_ID, *plain]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)


def test_unknown_words_map_to_unk(tok):
    ids = encode(tok, "Tom has 3 zebras!")
    assert ids.count(tok.unk_token_id) == 2  # "▁zebras" and "!"
    assert tok.decode(encode(tok, "Tom has 3 apples.")) == "Tom has 3 apples."


def test_special_tokens_survive_save_and_load(tmp_path):
    tok = build_tokenizer()
    base = len(tok)
    tok.add_special_tokens({"additional_special_tokens": ["<bot>", "<eot>", "<latent>"]})
    assert len(tok) == base + 3
    text = "Tom has 3 apples.<bot><latent><latent><eot> The answer is: 3"
    ids = encode(tok, text)
    assert ids.count(tok.convert_tokens_to_ids("<latent>")) == 2
    tok.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert encode(loaded, text) == ids and loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(ids) == text
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")


def test_tiny_config_builds_a_gqa_llama(tok):
    cfg = tiny_llama_config(len(tok) + 3)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers, cfg.hidden_size) == (4, 2, 4, 128)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    assert cfg._attn_implementation == "sdpa"
    assert tiny_llama_config(10, attn_implementation="eager", num_hidden_layers=2).num_hidden_layers == 2
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.tensor([tok("Tom has 3 apples.")["input_ids"]])
    out = model(input_ids=ids, use_cache=True)
    assert out.logits.shape == (1, ids.shape[1], cfg.vocab_size)
    keys = out.past_key_values.layers[0].keys
    assert keys.shape == (1, 2, ids.shape[1], 32)  # 2 KV heads of width 128 / 4
