"""lm-evaluation-harness model type ``kava``: score a kava model with ``lm_eval`` (the ``kava[lm-eval]`` extra).

    kava lm-eval --model kava --model_args pretrained=RUN/final,mode=latent --tasks kava_gsm8k

People who train reasoning models report lm-eval numbers; this makes a latent model one more
``--model`` there. Answers come from kava's own batched decoding (`answer_questions`, the code
``kava eval`` runs), so lm-eval scores exactly what ``kava eval`` scores: the task's text is the
question, kava adds ``[bos]``, the latents or the trace and the answer prompt itself.

What lm-eval gets back from ``generate_until`` is the text ``kava eval`` reads its answer from:
in ``cot`` mode the part after the answer prompt (lm-eval's ``hf`` model strips a reasoning
trace before ``think_end_token`` the same way), otherwise the whole answer; the task's ``until``
strings then cut it as lm-eval expects. Forward passes, generated tokens and cache entries per
answer are counted and reported in the results' ``config`` (`get_model_info`).

Likelihood requests (multiple-choice and perplexity tasks) are answered in ``direct`` and ``cot``
mode from the model's language model over ``[bos] context continuation``; in ``latent`` mode they
are refused: a latent answer's likelihood depends on latent passes that lm-eval's
(context, continuation) pair cannot express, and scoring the text alone would not be the latent
model.

lm-eval 0.4 has no plugin hook for model types (its registry is a fixed table), so importing
this module registers ``kava``; ``kava lm-eval`` does that, adds kava's task folder
(`TASKS_DIR`) and runs lm-eval's own command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm
from transformers import DynamicCache

from kava.model.sequences import positions_from_mask
from kava.evaluation.answering import DEFAULT_MAX_NEW_TOKENS, answer_part, answer_questions, check_mode
from kava.evaluation.decoding import Sampling
from kava.model.kava_model import KavaModel
from kava.model.persistence import find_model_dir

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
# lm-eval generation settings kava decodes with; any other key is refused rather than ignored.
GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "seed"}


@register_model("kava")
class KavaLM(LM):
    """A trained kava model as an lm-eval ``LM``.

    ``pretrained``: a run folder, checkpoint or model folder (as ``kava eval --model``); ``mode``:
    latent, cot or direct (default: the mode it was trained for); ``max_new_tokens`` overrides
    the task's ``max_gen_toks`` (default: kava's per-mode limit, as ``kava eval``).
    """

    def __init__(self, pretrained: str, mode: str | None = None, batch_size: int | str = 16,
                 max_new_tokens: int | str | None = None, device: str | None = None, **unused: Any) -> None:
        super().__init__()
        unknown = {k: v for k, v in unused.items() if v is not None and k != "max_batch_size"}
        if unknown:
            raise ValueError(f"--model_args: kava does not take {', '.join(sorted(unknown))} "
                             "(it takes pretrained, mode, batch_size, max_new_tokens, device)")
        if str(batch_size).startswith("auto"):
            raise ValueError("--batch_size auto: give kava a number (its decoding is batched, 16 by default)")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
        self.model = KavaModel.from_pretrained(find_model_dir(pretrained), device=device or "cpu")
        self.mode = check_mode(self.model, mode)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self._device = self.model.device
        self.costs: list[dict[str, int]] = []  # one per generated answer, in request order

    @property
    def tokenizer_name(self) -> str:
        return self.model.tokenizer.name_or_path.replace("/", "__")

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Answer each request's context as a question; requests that share generation settings are
        decoded together in kava's batches (an answer does not depend on its batch mates)."""
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._settings(request.args[1]), []).append(i)
        outputs: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc=f"kava ({self.mode})", disable=disable_tqdm)
        for (until, limit, sampling), indices in groups.items():
            for first in range(0, len(indices), self.batch_size):
                chunk = indices[first : first + self.batch_size]
                answers = answer_questions(self.model, [requests[i].args[0] for i in chunk], mode=self.mode,
                                           sampling=sampling, max_new_tokens=limit, batch_size=len(chunk))
                for i, answer in zip(chunk, answers):
                    text = answer_part(answer.text, self.model.config.answer_prompt) if self.mode == "cot" else answer.text
                    outputs[i] = cut_at(text, until)
                    self.costs.append({"forward_passes": answer.forward_passes,
                                       "generated_tokens": answer.generated_tokens,
                                       "cache_tokens": answer.cache_tokens})
                    self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
                bar.update(len(chunk))
        bar.close()
        return outputs

    def _settings(self, gen_kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int, Sampling | None]:
        """(until strings, token limit, sampling) of one request's ``gen_kwargs``."""
        extra = set(gen_kwargs) - GEN_KEYS
        if extra:
            raise ValueError(f"generation_kwargs: kava does not support {', '.join(sorted(extra))} "
                             f"(it supports {', '.join(sorted(GEN_KEYS))})")
        until = gen_kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        limit = self.max_new_tokens or int(gen_kwargs.get("max_gen_toks") or DEFAULT_MAX_NEW_TOKENS[self.mode])
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sampling = None
        if gen_kwargs.get("do_sample") and temperature > 0:
            sampling = Sampling(temperature, float(gen_kwargs.get("top_p", 1.0)), int(gen_kwargs.get("seed") or 0))
        return until, limit, sampling

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """log p(continuation | [bos] context) and whether greedy decoding would write it."""
        self._refuse_latent("loglikelihood")
        return [self._score(*request.args) for request in tqdm(requests, disable=disable_tqdm)]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        """log p(text | [bos]), the whole text in one window (kava's models take short inputs)."""
        self._refuse_latent("loglikelihood_rolling")
        return [self._score("", request.args[0])[0] for request in tqdm(requests, disable=disable_tqdm)]

    def _refuse_latent(self, kind: str) -> None:
        if self.mode == "latent":
            raise NotImplementedError(
                f"kava: {kind} requests need a text-only model: in latent mode an answer's likelihood depends on "
                "latent passes that a (context, continuation) pair cannot express. Use generate_until tasks "
                "(kava_gsm8k, ...), or mode=direct / mode=cot to score the model's language model on text")

    @torch.no_grad()
    def _score(self, context: str, continuation: str) -> tuple[float, bool]:
        builder = self.model.builder
        head = builder.bos_ids + (builder.encode(context) if context else [])
        tail = builder.encode(continuation)
        if not tail:
            raise ValueError(f"kava: an empty continuation cannot be scored (context {context[-40:]!r})")
        ids = torch.tensor([head + tail], device=self._device)
        mask = torch.ones_like(ids)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.decode(self.model.embed(ids), mask, positions_from_mask(mask), DynamicCache())
            logits = self.model.logits(out.last_hidden_state[:, len(head) - 1 : -1]).float()
        finally:
            self.model.train(was_training)
        target = ids[:, len(head):]
        logp = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).sum()
        return float(logp), bool((logits.argmax(-1) == target).all())

    def get_model_info(self) -> dict[str, Any]:
        """What the results' ``config`` records: the model, its mode and what its answers cost."""
        n = len(self.costs)
        info: dict[str, Any] = {"kava_method": self.model.config.method, "kava_mode": self.mode, "kava_answers": n}
        for key in ("forward_passes", "generated_tokens", "cache_tokens"):
            info[f"kava_mean_{key}"] = sum(c[key] for c in self.costs) / n if n else None
        return info


def task_manager(*extra: str | Path, include_defaults: bool = True) -> Any:
    """lm-eval's ``TaskManager`` with kava's tasks (and ``extra`` task folders) for ``simple_evaluate``;
    ``include_defaults=False`` skips indexing lm-eval's thousands of own tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)], include_defaults=include_defaults)


def cut_at(text: str, until: Sequence[str]) -> str:
    """The text before the first of the ``until`` strings (lm-eval's stop sequences)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text
