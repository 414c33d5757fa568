"""Answering questions with a trained model: the Python API behind `kava.api.generate` and `kava infer`.

Built on the evaluation's decoder (`kava.evaluation.decoding`) and on the same reading of the
answer, so an answer here is the prediction `kava eval` records for the same question, model and
settings. A model answers in the mode it was trained for unless asked otherwise: a KaVa model can
also write its chain of thought (``cot``; its teacher half was trained to) or answer at once
(``direct``; untrained for it, so expect little).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kava.data.answers import extract_answer
from kava.evaluation.decoding import MODES, Generation, Sampling, generate

# Token limits when the caller gives none: a CoT needs room for the trace, an answer does not.
DEFAULT_MAX_NEW_TOKENS = {"latent": 32, "direct": 32, "cot": 256}


@dataclass
class Answer:
    """One question's answer and what it cost."""

    question: str
    mode: str
    text: str  # what the model wrote, eos excluded (the whole trace in cot mode)
    answer: float | None  # the number read from it (after the answer prompt in cot mode); None if none
    finished: bool  # emitted eos within the token limit
    forward_passes: int
    generated_tokens: int
    cache_tokens: int  # entries per layer and KV head in the final cache
    latency_s: float  # its batch's wall time divided by the batch size
    # With `kava.api.generate(..., inspect=True)` in latent mode: a `kava.inspection.Inspection`
    # of the question (its latents read as tokens); kept out of `to_json`.
    inspection: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "inspection"}


def answer_part(trace: str, answer_prompt: str) -> str:
    """The text after the first answer prompt of a CoT trace, or the whole trace without one."""
    prompt = answer_prompt.strip()
    cut = trace.find(prompt)
    return trace if cut < 0 else trace[cut + len(prompt) :]


def read_text(model, gen: Generation, row: int, mode: str) -> tuple[str, str]:
    """The decoded text of one row and the part of it that holds the answer (all of it but in CoT)."""
    tokens = gen.tokens[row]
    text = model.builder.tok.decode(tokens[:-1] if gen.finished[row] else tokens, skip_special_tokens=False)
    return text, answer_part(text, model.config.answer_prompt) if mode == "cot" else text


def read_answer(model, gen: Generation, row: int, mode: str) -> tuple[str, float | None]:
    """The decoded text of one row and the number it answers (CODI's protocol, docs/method.md §6)."""
    text, part = read_text(model, gen, row, mode)
    return text, extract_answer(part)


def check_mode(model, mode: str | None) -> str:
    """The mode to answer in; latent answers need latents the model was trained to produce."""
    mode = mode or model.config.inference_mode
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "latent" and not model.config.uses_student:
        raise ValueError(f"this model ({model.config.method}) was not trained to reason in latents; use mode "
                         f"{model.config.inference_mode!r}")
    return mode


def answer_questions(model, questions: Sequence[str], *, mode: str | None = None, sampling: Sampling | None = None,
                     max_new_tokens: int | None = None, batch_size: int = 32) -> list[Answer]:
    """Answer every question (in batches; a question's answer does not depend on its batch mates).

    Sampled answers are seeded per question by its position in ``questions`` and ``sampling.seed``.
    """
    mode = check_mode(model, mode)
    empty = [i for i, q in enumerate(questions) if not q.strip()]
    if empty:
        raise ValueError(f"question {empty[0] + 1} is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = DEFAULT_MAX_NEW_TOKENS[mode] if max_new_tokens is None else max_new_tokens
    answers: list[Answer] = []
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(questions), batch_size):
            chunk = list(questions[first : first + batch_size])
            t0 = time.perf_counter()
            gen = generate(model, chunk, max_new_tokens=limit, sampling=sampling,
                           question_ids=range(first, first + len(chunk)), mode=mode)
            latency = (time.perf_counter() - t0) / len(chunk)
            for row, question in enumerate(chunk):
                text, number = read_answer(model, gen, row, mode)
                answers.append(Answer(question, mode, text, number, gen.finished[row], gen.forward_passes[row],
                                      len(gen.tokens[row]), gen.cache_tokens[row], latency))
    finally:
        model.train(was_training)
    return answers
