"""Shared fixtures: tiny random Llama / Qwen2 models with grouped-query attention and a small
byte-level tokenizer trained on the spot, so the fast tests need no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from kava.config import preset
from kava.data.records import Record
from kava.demo.task import generate
from kava.model.kava_model import KavaModel
from kava.training.run_config import TrainConfig

# The tests never reach the hub (they must pass without network): fail at once, not after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Real data: the loader has no built-in folder (flag, else $KAVA_DATA_DIR, else the hub), so the
# tests name the project's copy, ../shared/data beside the checkout, through the environment, unless
# KAVA_DATA_DIR already names another copy. Subprocesses the tests start inherit it.
_SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
if not os.environ.get("KAVA_DATA_DIR"):
    os.environ["KAVA_DATA_DIR"] = str(_SHARED_DATA)
DATA_DIR = Path(os.environ["KAVA_DATA_DIR"]).expanduser().resolve()  # as the loader records it: links resolved

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


# Every supported family (kava.model.arch) as a tiny random GQA config: 4 query / 2 KV heads.
TINY_MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),  # q/k norms before RoPE
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),  # soft-capping, scaled embedding, sliding layers
    "gemma3_text": (Gemma3TextConfig, Gemma3ForCausalLM),  # + q/k norms, local and global RoPE
}
# What a family needs beyond the common tiny shape: short sliding windows (so the tests' sequences
# cross them), one sliding and one global layer, and eager attention where SDPA has no path.
ARCH_EXTRAS = {
    "mistral": {"sliding_window": 8},
    "gemma2": {"sliding_window": 8, "attn_implementation": "eager"},
    "gemma3_text": {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]},
}
ARCHS = tuple(TINY_MODELS)


def tiny_model(arch: str = "llama", vocab: int = 330, seed: int = 0, **kw):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        attn_implementation="sdpa", tie_word_embeddings=False,
    )
    config_cls, model_cls = TINY_MODELS[arch]
    return model_cls(config_cls(**(common | ARCH_EXTRAS.get(arch, {}) | kw))).eval()


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


def build_model(name: str = "kava", arch: str = "llama", *, seed: int = 0, perturb_lora: bool = True,
                finishing_eos: bool = False, **over) -> KavaModel:
    """A tiny random KavaModel in eval mode (M = 3, LoRA r = 4 without dropout unless overridden).

    ``perturb_lora``: LoRA's B starts at zero; perturb it so the adapter changes the forward.
    ``finishing_eos``: eos wins whenever the first hidden feature is large — random weights alone
    almost never emit eos, and this makes questions finish at different steps, each as a function
    of its own state only.
    """
    over = {"num_latents": 3, "lora_r": 4, "lora_dropout": 0.0, **over}
    model = KavaModel(tiny_model(arch, seed=seed), make_tokenizer(), preset(name, **over))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        if perturb_lora:
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        if finishing_eos:
            eos_row = model.lm.get_output_embeddings().weight[model.builder.eos_id]
            eos_row.zero_()
            eos_row[0] = 2.5  # 1.5 left every Gemma 2 No-CoT question running to the limit
    return model.eval()


def save_kava_and_cot(tmp_path_factory) -> dict:
    """Tiny KaVa (M = 4) and CoT models saved with all weights, as `kava train` leaves them:
    {"kava": folder, "cot": folder}."""
    from kava.model.loading import ModelSource

    out = {}
    for name in ("kava", "cot"):
        model = build_model(name, finetune="full", perturb_lora=False, num_latents=4)
        model.base_source = ModelSource("config", config=model.lm.config.to_dict())
        out[name] = tmp_path_factory.mktemp(name) / "final"
        model.save_pretrained(out[name])
    return out


def decoding_model(name: str, arch: str = "llama", **over) -> KavaModel:
    """The decoding tests' model: M = 4 and questions that finish at different steps."""
    return build_model(name, arch, finishing_eos=True, **{"num_latents": 4, **over})


def training_model(seed: int = 0, **over) -> KavaModel:
    """The training tests' model: KaVa, M = 4, LoRA dropout 0.1, LoRA as initialised, mode left to the engine."""
    over = {"num_latents": 4, "lora_r": 4, "lora_dropout": 0.1, **over}
    return KavaModel(tiny_model(seed=seed), make_tokenizer(), preset("kava", **over))


TRAIN_RECORDS = generate(40, seed=3)  # synthetic problems for the training tests


def train_config(**over) -> TrainConfig:
    return TrainConfig(**{"batch_size": 4, "micro_batch_size": 2, "max_steps": 6, "lr": 2e-3,
                          "save_every": 2, "report_to": (), **over})


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine run 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
