"""Shared fixtures: tiny random Llama / Qwen2 models with grouped-query attention and a small
byte-level tokenizer trained on the spot, so the fast tests need no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from kava.data.records import Record

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

CORPUS = [
    "Tom has 12 apples. He gets 7 more. How many apples does he have?",
    "<<12+7=19>> <<19-5=14>> <<14*3=42>> The answer is: 42",
    "A baker makes 24 loaves and sells 9 of them. The answer is: 15",
    "Sara reads 3 books a week for 4 weeks. <<3*4=12>>",
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(arch: str = "llama", vocab: int = 330, seed: int = 0, **kw):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        attn_implementation="sdpa", tie_word_embeddings=False,
    )
    common.update(kw)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def records() -> list[Record]:
    return [
        Record("Tom has 12 apples. He gets 7 more. How many apples does he have?", ("<<12+7=19>>",  "<<19-5=14>>", "<<14*3=42>>"), "42"),
        Record("A baker makes 24 loaves.", ("<<24-9=15>>", "<<15*1=15>>"), "15"),
        Record("Sara reads 3 books a week for 4 weeks and then 2 more books. How many?", ("<<3*4=12>>", "<<12+2=14>>", "<<14+0=14>>", "<<14*1=14>>"), "14"),
    ]
