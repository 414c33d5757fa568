"""Batched decoding: padding invariance, pass counts, cache reuse and seeded sampling."""

from __future__ import annotations

import pytest
import torch

from kava.model.sequences import positions_from_mask
from kava.evaluation.decoding import Generation, Sampling, generate, top_p_filter
from kava.model.kava_model import KavaModel

from conftest import ARCHS, decoding_model

QUESTIONS = [
    "Tom has 12 apples. He gets 7 more. How many apples does he have?",
    "A baker makes 24 loaves.",
    "Sara reads 3 books a week for 4 weeks and then 2 more books. How many?",
    "How many?",
]
PRESETS = ["kava", "codi", "pause", "cot", "nocot"]
MAX_NEW = 12


build = decoding_model


def row(gen: Generation, b: int) -> tuple:
    return gen.tokens[b], gen.finished[b], gen.forward_passes[b], gen.cache_tokens[b]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_padding_invariance(name, arch):
    model = build(name, arch)
    batched = generate(model, QUESTIONS, max_new_tokens=MAX_NEW)
    assert len({len(t) for t in batched.tokens}) > 1, "questions should stop at different steps"
    for b, q in enumerate(QUESTIONS):
        assert row(batched, b) == row(generate(model, [q], max_new_tokens=MAX_NEW), 0), (name, arch, b)


@pytest.mark.parametrize("name", PRESETS)
def test_forward_pass_and_cache_counts(name):
    model = build(name)
    cfg, builder = model.config, model.builder
    gen = generate(model, QUESTIONS, max_new_tokens=MAX_NEW)
    before = {"kava": 1 + cfg.num_iterations, "codi": 1 + cfg.num_latents, "pause": 1, "cot": 0, "nocot": 0}[name]
    for b, q in enumerate(QUESTIONS):
        n = len(gen.tokens[b])
        assert 1 <= n <= MAX_NEW
        assert gen.finished[b] == (gen.tokens[b][-1] == builder.eos_id)
        assert gen.finished[b] or n == MAX_NEW
        assert builder.eos_id not in gen.tokens[b][:-1]
        # latent: init + T (+ opening <eot> P pass) + one per further token; text: prefill + one per further token
        opening = 1
        assert gen.forward_passes[b] == before + opening + (n - 1)
        prompt = len(builder.question_ids(q))
        fed = n - 1  # the last emitted token is never fed back
        if cfg.inference_mode == "latent":
            expected = prompt + 1 + cfg.num_latents + 1 + len(builder.prompt_ids) + fed
        elif cfg.inference_mode == "direct":
            expected = prompt + len(builder.prompt_ids) + fed
        else:
            expected = prompt + fed
        assert gen.cache_tokens[b] == expected


def greedy_without_cache(model: KavaModel, question: str, max_new_tokens: int) -> list[int]:
    """Reference decoder: re-run the whole sequence from scratch for every token."""
    builder = model.builder
    if model.config.inference_mode == "latent":
        prefix = builder.student_prefix([question])
        state = model.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"])
        tail = torch.tensor([[builder.eot_id, *builder.prompt_ids]])
        # The latent cache is what the last latent pass's inputs produce on top of the prefix.
        head = torch.cat([model.embed(prefix["s_prefix_ids"]), state.latents, model.embed(tail)], dim=1)
    else:
        prompt = builder.direct_prompt([question], with_answer_prompt=model.config.inference_mode == "direct")
        head = model.embed(prompt["prompt_ids"])
    out: list[int] = []
    for _ in range(max_new_tokens):
        embeds = torch.cat([head, model.embed(torch.tensor([out], dtype=torch.long))], dim=1)
        mask = torch.ones(1, embeds.shape[1], dtype=torch.long)
        hidden = model.decode(embeds, mask, positions_from_mask(mask), None).last_hidden_state
        out.append(int(model.logits(hidden[:, -1]).argmax(-1)))
        if out[-1] == builder.eos_id:
            break
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", ["kava", "codi", "cot"])
def test_cached_greedy_equals_recomputation(name, arch):
    model = build(name, arch)
    gen = generate(model, QUESTIONS, max_new_tokens=MAX_NEW)
    with torch.no_grad():
        for b, q in enumerate(QUESTIONS):
            assert gen.tokens[b] == greedy_without_cache(model, q, MAX_NEW), (name, b)


def test_sampling_is_seeded_and_batch_independent():
    model = build("kava")
    s = Sampling(temperature=1.5, top_p=0.9, seed=7)
    a = generate(model, QUESTIONS, max_new_tokens=MAX_NEW, sampling=s)
    assert a.tokens == generate(model, QUESTIONS, max_new_tokens=MAX_NEW, sampling=s).tokens
    other = generate(model, QUESTIONS, max_new_tokens=MAX_NEW, sampling=Sampling(temperature=1.5, top_p=0.9, seed=8))
    assert other.tokens != a.tokens
    assert a.tokens != generate(model, QUESTIONS, max_new_tokens=MAX_NEW).tokens
    # Each question's sampler is seeded by its id, so batching does not change its draws.
    for b, q in enumerate(QUESTIONS):
        alone = generate(model, [q], max_new_tokens=MAX_NEW, sampling=s, question_ids=[b])
        assert row(alone, 0) == row(a, b)


def test_top_p_filter_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01]])
    kept = top_p_filter(probs, 0.75)
    torch.testing.assert_close(kept[0], torch.tensor([0.625, 0.375, 0.0, 0.0]))
    torch.testing.assert_close(kept[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_bad_arguments_are_refused():
    model = build("nocot")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, QUESTIONS, max_new_tokens=0)
    with pytest.raises(ValueError, match="no questions"):
        generate(model, [], max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0.0)
