"""Bad input gives one clear error naming the field or value (method core)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from kava.config import ConfigError, KavaConfig, preset
from kava.data.records import Record, RecordError
from kava.model.kava_model import KavaModel

from conftest import make_tokenizer, tiny_model


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"num_latents": 0}, "num_latents"),
        ({"num_iterations": -1}, "num_iterations"),
        ({"eviction_lambda": 1.5}, "eviction_lambda"),
        ({"eviction_lambda": -0.1}, "eviction_lambda"),
        ({"eviction": "lru"}, "eviction"),
        ({"kv_loss": "huber"}, "kv_loss"),
        ({"kv_key_space": "rope"}, "kv_key_space"),
        ({"eviction_scope": "layer"}, "eviction_scope"),
        ({"rkv_kernel": 6}, "rkv_kernel: must be odd"),
        ({"snapkv_kernel": 4}, "snapkv_kernel: must be odd"),
        ({"rkv_threshold": 1.5}, "rkv_threshold"),
        ({"snapkv_pooling": "minpool"}, "snapkv_pooling"),
        ({"h2o_heavy_ratio": 1.5}, "h2o_heavy_ratio"),
        ({"eviction": "rkv-official", "num_latents": 8}, "rkv_recent"),
        ({"eviction": "streamingllm", "num_latents": 3}, "streamingllm_sinks"),
        ({"alpha_kv": -1}, "alpha_kv"),
        ({"student_shares_question_cache": "no"}, "student_shares_question_cache"),
    ],
)
def test_bad_knobs_are_named(over, needle):
    with pytest.raises(ConfigError, match=needle):
        preset("kava", **over)


def test_unknown_preset_and_option():
    with pytest.raises(ConfigError, match="method.preset: .quiet-star. is not one of kava"):
        preset("quiet-star")
    with pytest.raises(ConfigError, match="num_latent"):
        preset("kava", num_latent=3)
    with pytest.raises(ConfigError, match="method.num_latentz: unknown key"):
        KavaConfig.from_dict({"num_latentz": 3})


def test_config_round_trip(tmp_path):
    cfg = preset("codi", eviction="crop", lora_targets=("q_proj",))
    cfg.save(tmp_path / "c.json")
    assert KavaConfig.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    "record, needle",
    [
        (Record("What is 2+2?", (), "4"), "'steps' is empty"),
        (Record("What is 2+2?", ("<<2+2=4>>",), ""), "'answer'"),
        (Record("   ", ("<<2+2=4>>",), "4"), "'question' is empty"),
        (Record("What?", ("<<2+2=4>>", " "), "4"), r"'steps'\[1\]"),
    ],
)
def test_bad_records_are_named(record, needle):
    model = KavaModel(tiny_model(), make_tokenizer(), preset("kava", num_latents=2, lora_r=2))
    with pytest.raises(RecordError, match=needle) as err:
        model.builder.training_batch([Record("ok?", ("<<1+1=2>>",), "2"), record])
    assert "batch record 1" in str(err.value)


def test_nocot_accepts_records_without_steps():
    model = KavaModel(tiny_model(), make_tokenizer(), preset("nocot", lora_r=2))
    batch = model.builder.training_batch([Record("What is 2+2?", (), "4")])
    assert "t_input_ids" in batch


def _word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "The", "answer", "is", ":", "a", "1", "2"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_answer_prompt_the_tokenizer_cannot_represent():
    with pytest.raises(ConfigError, match="answer_prompt.*Therefore"):
        KavaModel(tiny_model(vocab=20), _word_tokenizer(), preset("kava", lora_r=2, answer_prompt="Therefore:"))


def test_unsupported_architecture():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=400))
    with pytest.raises(ConfigError, match="unsupported architecture 'gpt2'"):
        KavaModel(gpt2, make_tokenizer(), preset("kava"))

