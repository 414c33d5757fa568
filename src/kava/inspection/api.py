"""`inspect_question`: everything `kava inspect` shows about one question, as one typed result.

One latent pass serves both the per-pass LM-head readings (through `run_latents`' ``observe``
hook) and the student side of the K/V comparison; one teacher pass (`teacher_targets`,
the eviction training used) gives the kept tokens and the comparison's targets. Nothing here
recomputes the Jacobi loop or the eviction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kava.config import KavaConfig
from kava.data.answers import extract_answer
from kava.data.records import Record
from kava.model.sequences import SequenceBuilder
from kava.evaluation.answering import Answer, answer_questions
from kava.inspection.kept_tokens import KeptTokens, kept_tokens
from kava.inspection.latent_tokens import LatentTokens, pass_labels, top_tokens
from kava.inspection.similarity import KVSimilarity, kv_similarity
from kava.model.teacher_compression import teacher_targets


@dataclass
class Inspection:
    """One question seen from inside a latent model. ``kept`` and ``similarity`` need a reference
    trace and are None without one."""

    question: str
    answer: Answer  # the model's own latent answer, as `kava.api.generate` gives it
    latents: LatentTokens
    config: KavaConfig  # the settings of the eviction and of the comparison's key space
    trace: Record | None = None  # question, steps and the answer the teacher sequence ends with
    kept: KeptTokens | None = None
    similarity: KVSimilarity | None = None

    def to_json(self) -> dict:
        cfg = self.config
        return {
            "question": self.question,
            "model_answer": {"text": self.answer.text, "number": self.answer.answer},
            "settings": {"method": cfg.method, "num_latents": cfg.num_latents, "num_iterations": cfg.num_iterations,
                         "latent_mode": cfg.latent_mode, "eviction": cfg.eviction, "eviction_lambda": cfg.eviction_lambda,
                         "eviction_scope": cfg.eviction_scope, "kv_key_space": cfg.kv_key_space,
                         "teacher_drop_last_step": cfg.teacher_drop_last_step},
            "latents": self.latents.to_json(),
            "trace": None if self.trace is None else {"steps": list(self.trace.steps), "answer": self.trace.answer},
            "kept_tokens": None if self.kept is None else self.kept.to_json(),
            "kv_similarity": None if self.similarity is None else self.similarity.to_json(),
        }


def check_latent_model(model) -> None:
    if not model.config.uses_student:
        raise ValueError(f"this model ({model.config.method}) was not trained to reason in latents: "
                         "there is nothing to inspect")


def trace_answer(steps: Sequence[str]) -> str:
    """The answer a trace ends with: the last number of its last step (``<<7*3=21>>`` → ``21``)."""
    number = extract_answer(steps[-1]) if steps else None
    if number is None:
        raise ValueError("the trace's last step holds no number to end the teacher sequence with; give the answer")
    return f"{number:g}"


def target_config(config: KavaConfig) -> KavaConfig:
    """The settings that build compressed teacher targets: the model's own when it was trained with
    L_KV; otherwise (PCCoT, CODI, pause, Coconut) the same with α_KV = 1, i.e. what KaVa's eviction
    would have given it to match; without Coconut's curriculum, whose stages only shape training."""
    return config if config.alpha_kv > 0 else config.replace(alpha_kv=1.0, curriculum="none")


def inspect_question(model, question: str, steps: Sequence[str] | None = None, answer: str | None = None,
                     top_k: int = 5, reply: Answer | None = None) -> Inspection:
    """Look inside ``model`` on ``question`` (docs/method.md §3–§4); with a reference trace ``steps``
    (and its ``answer``, by default the last step's result) also the eviction and the K/V match.
    ``reply``: the model's greedy latent answer when the caller already has it (not decoded again)."""
    check_latent_model(model)
    if not question.strip():
        raise ValueError("the question is empty")
    cfg = target_config(model.config)
    trace = None
    if steps is not None:
        trace = Record(question, tuple(steps), answer if answer is not None else trace_answer(steps))
        trace.validate(where="the trace")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if reply is None:
                [reply] = answer_questions(model, [question], mode="latent")
            hidden: list[torch.Tensor] = []
            prefix = model.builder.student_prefix([question])
            state = model.latents(prefix["s_prefix_ids"].to(model.device), prefix["s_prefix_mask"].to(model.device),
                                  observe=hidden.append)
            latents = top_tokens(model, torch.cat(hidden), top_k, pass_labels(len(hidden), cfg.latent_mode))
            result = Inspection(question, reply, latents, cfg, trace)
            if trace is not None:
                builder = model.builder if cfg is model.config else SequenceBuilder(model.tokenizer, cfg)
                batch = {k: v.to(model.device) for k, v in builder.training_batch([trace]).items()}
                targets = teacher_targets(model, batch, cfg).kv
                result.kept = kept_tokens(model, batch, targets)
                result.similarity = kv_similarity(*model.latent_kv(state), targets, cfg.kv_key_space)
    finally:
        model.train(was_training)
    return result
