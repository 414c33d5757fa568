"""Accuracy and cost of a model on a set of records: per-question predictions and a summary.

Answers are checked with CODI's protocol (``kava.data.answers``): the last number of the answer
text, compared numerically with the gold answer. For CoT the answer text is what follows the
first answer prompt (``"The answer is:"``) in the decoded trace, when the model wrote one, so the
intermediate values of the chain of thought are never taken for the answer; otherwise the
whole trace is used (the last number of an unfinished trace is the model's best guess).

Cost follows docs/method.md §6: forward passes and generated tokens per question, the KV-cache it
ends with, and latency. Questions are decoded in batches sorted by question length (less
padding; results do not depend on the batching, see ``decoding``), and a question's latency is
its batch's wall time divided by the batch size.

An evaluation can be streamed and resumed (``kava eval`` does, see ``results``): ``on_batch``
receives each batch's predictions as it finishes, ``should_stop`` ends it between batches, and
``done`` hands back the predictions of an interrupted run, which are not decoded again. Since a
question's result does not depend on its batch mates, the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


from kava.data.answers import answers_match, extract_answer, parse_gold
from kava.data.choice_answers import LETTERS
from kava.data.datasets import LoadedDataset
from kava.data.grading import grade
from kava.data.records import Record
from kava.evaluation.answering import DEFAULT_MAX_NEW_TOKENS, read_text
from kava.evaluation.decoding import Sampling, generate
from kava.runtime.outputs import write_atomic
from kava.runtime.progress import progress as progress_display

PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"


class EvaluationStopped(Exception):
    """``should_stop`` ended an evaluation between batches; ``done`` of ``total`` questions were handed to ``on_batch``."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"stopped after {done} of {total} questions")
        self.done, self.total = done, total


@dataclass
class EvalResult:
    predictions: list[dict[str, Any]]  # one per question, in the order of the records
    summary: dict[str, Any]


def evaluate(
    model,
    records: Sequence[Record] | LoadedDataset,
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    sampling: Sampling | None = None,
    progress: bool = True,
    done: Mapping[int, dict[str, Any]] | None = None,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Decode every record's question in the model's inference mode and score the answers.

    `records` may be a `LoadedDataset`, whose name, source and skipped-row count then appear in
    the summary. `max_new_tokens` defaults by mode (`DEFAULT_MAX_NEW_TOKENS`). The model is put
    in eval mode for the run and restored afterwards. `done` maps record indices to predictions
    already made (a resumed run); `on_batch` is called with each new batch's predictions;
    `should_stop()` is asked after each batch and, when true, raises `EvaluationStopped`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(records)
    if not items:
        raise ValueError("no records to evaluate")
    mode = model.config.inference_mode
    limit = DEFAULT_MAX_NEW_TOKENS[mode] if max_new_tokens is None else max_new_tokens
    golds = [parse_gold(r.answer) if r.answer_kind == "numeric" else None for r in items]
    by_index: dict[int, dict[str, Any]] = dict(done or {})
    order = sorted((i for i in range(len(items)) if i not in by_index), key=lambda i: len(items[i].question))
    was_training = model.training
    model.eval()
    try:
        with progress_display(len(items), f"eval ({mode})", initial=len(by_index), unit="q", disable=not progress) as bar:
            for first in range(0, len(order), batch_size):
                batch = order[first : first + batch_size]
                t0 = time.perf_counter()
                gen = generate(model, [items[i].question for i in batch], max_new_tokens=limit,
                               sampling=sampling, question_ids=batch)
                latency = (time.perf_counter() - t0) / len(batch)
                new = [_prediction(model, i, items[i], golds[i], gen, row, latency) for row, i in enumerate(batch)]
                by_index.update((p["index"], p) for p in new)
                if on_batch is not None:
                    on_batch(new)
                bar.update(len(batch))
                if should_stop is not None and len(by_index) < len(items) and should_stop():
                    raise EvaluationStopped(len(by_index), len(items))
    finally:
        model.train(was_training)
    predictions = [by_index[i] for i in range(len(items))]
    summary = summarize(predictions)
    summary.update(_run_info(model, records, batch_size, limit, sampling))
    return EvalResult(predictions, summary)


def _scored(record: Record, gold: float | None, part: str) -> dict[str, Any]:
    """The answer fields of a prediction row, by the record's answer kind (`kava.data.grading`).

    Numeric rows keep their historical fields (a float ``answer``; ``gold_value`` is set by the caller); math and
    choice rows hold the answer text read, the rule that read it and a flag for an unreadable one,
    plus the labels reports group by (MATH's subject and level)."""
    if record.answer_kind == "numeric":
        pred = extract_answer(part)
        return {"answer": pred, "correct": answers_match(pred, gold)}
    graded = grade(record, part)
    return {"answer_kind": record.answer_kind, "answer": graded.answer, "correct": graded.correct,
            "answer_rule": graded.rule, "answer_flag": graded.flag, **record.meta}


def _prediction(model, index: int, record: Record, gold: float | None, gen, row: int, latency: float) -> dict[str, Any]:
    tokens = gen.tokens[row]
    text, part = read_text(model, gen, row, model.config.inference_mode)
    cache_tokens = gen.cache_tokens[row]
    return {
        "index": index,
        "question": record.question,
        "gold": record.answer,
        **({"gold_value": gold} if record.answer_kind == "numeric" else {}),
        "prediction": text,
        **_scored(record, gold, part),
        "finished": gen.finished[row],
        "forward_passes": gen.forward_passes[row],
        "generated_tokens": len(tokens),
        "cache_tokens": cache_tokens,
        "cache_entries": cache_tokens * model.n_layers * model.n_kv_heads * 2,
        "latency_s": latency,
    }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval: unlike the normal one it stays in [0, 1] and is sane at 0 or n."""
    if n < 1:
        raise ValueError("a confidence interval needs at least one trial")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy with its 95 % Wilson interval, mean costs and throughput of a list of predictions.

    ``total_time_s`` is the decoding time, the sum of the questions' latencies (their batches'
    wall times), so it adds up correctly over the processes of a resumed evaluation.
    """
    n = len(predictions)
    correct = sum(p["correct"] for p in predictions)

    def mean(key: str) -> float:
        return sum(p[key] for p in predictions) / n

    lo, hi = wilson_interval(correct, n)
    total_time = sum(p["latency_s"] for p in predictions)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [lo, hi],
        "mean_forward_passes": mean("forward_passes"),
        "mean_generated_tokens": mean("generated_tokens"),
        "mean_cache_tokens": mean("cache_tokens"),
        "mean_cache_entries": mean("cache_entries"),
        "finished_fraction": mean("finished"),
        "no_answer_fraction": sum(p["answer"] is None for p in predictions) / n,
        "mean_latency_s": mean("latency_s"),
        "total_time_s": total_time,
        "questions_per_s": n / total_time,
        **breakdowns(predictions),
    }


GROUP_KEYS = ("subject", "level")  # MATH's labels, which prediction rows carry (`_scored`)


def breakdowns(predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a non-numeric answer kind adds to the summary (nothing for numeric rows).

    - ``by_subject`` / ``by_level`` (MATH): accuracy with its interval per group, since one
      number over 500 problems from 7 subjects and 5 levels hides where a model stands;
    - ``options`` (multiple choice): how often each letter was predicted and was gold, and the
      chance accuracy (1 / options), so a model that always says "C" is seen for what it is;
    - ``answer_rules``: how many answers each extraction rule read, and ``unparseable``: how
      many answers were found but could not be read (counted wrong).
    """
    graded = [p for p in predictions if "answer_rule" in p]
    if not graded:
        return {}
    out: dict[str, Any] = {}
    for key in GROUP_KEYS:
        groups: dict[str, list[bool]] = {}
        for p in graded:
            if key in p:
                groups.setdefault(str(p[key]), []).append(bool(p["correct"]))
        if groups:
            out[f"by_{key}"] = {name: _group(groups[name]) for name in sorted(groups)}
    choice = [p for p in graded if p.get("answer_kind") == "choice"]
    if choice:
        out["options"] = {
            "predicted": dict(sorted(Counter(p["answer"] or "none" for p in choice).items())),
            "gold": dict(sorted(Counter(p["gold"] for p in choice).items())),
            "chance_accuracy": 1 / len(LETTERS),
        }
    out["answer_rules"] = dict(sorted(Counter(p["answer_rule"] for p in graded).items()))
    out["unparseable"] = sum(p.get("answer_flag") == "unparseable" for p in graded)
    return out


def breakdown_lines(summary: Mapping[str, Any]) -> list[str]:
    """The breakdowns of a summary (`breakdowns`) as lines for a terminal; none for numeric data."""
    lines = []
    for key in GROUP_KEYS:
        groups = summary.get(f"by_{key}")
        if groups:
            cells = [f"{name} {g['correct']}/{g['n']} ({g['accuracy']:.1%})" for name, g in groups.items()]
            lines.append(f"  by {key}: " + ", ".join(cells))
    options = summary.get("options")
    if options:
        lines.append("  options predicted: " + ", ".join(f"{k} {v}" for k, v in options["predicted"].items())
                     + "; gold: " + ", ".join(f"{k} {v}" for k, v in options["gold"].items())
                     + f"; chance accuracy {options['chance_accuracy']:.0%}")
    if "answer_rules" in summary:
        lines.append("  answers read by: " + ", ".join(f"{k} {v}" for k, v in summary["answer_rules"].items())
                     + f"; unparseable {summary['unparseable']}")
    return lines


def _group(correct: list[bool]) -> dict[str, Any]:
    n, k = len(correct), sum(correct)
    return {"n": n, "correct": k, "accuracy": k / n, "accuracy_ci95": list(wilson_interval(k, n))}


def _run_info(model, records, batch_size: int, max_new_tokens: int, sampling: Sampling | None) -> dict[str, Any]:
    cfg = model.config
    info: dict[str, Any] = {
        "mode": cfg.inference_mode,
        "method": cfg.method,
        "num_latents": cfg.num_latents if cfg.inference_mode == "latent" else None,
        "num_iterations": cfg.num_iterations if cfg.inference_mode == "latent" else None,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "sampling": None if sampling is None else asdict(sampling),
        "skipped": 0,
        "latency_note": "latency_s = wall time of the question's batch / batch size",
        "cache_note": "cache_tokens = real entries per layer and KV head at the end (prompt + latents "
        "+ fed tokens); cache_entries = cache_tokens x layers x KV heads x 2 (keys and values)",
    }
    if isinstance(records, LoadedDataset):
        info.update(dataset=records.name, split=records.split, source=records.source, skipped=records.skipped)
    return info


def write_results(result: EvalResult, out_dir: str | Path) -> Path:
    """Write ``predictions.jsonl`` and ``summary.json`` into `out_dir`; returns the folder.

    Each file is written beside its final name and then renamed, so a reader (or a crash) never
    sees half of one; the summary comes last, so its presence means the predictions are complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / PREDICTIONS_FILE, "".join(json.dumps(p) + "\n" for p in result.predictions))
    write_atomic(out / SUMMARY_FILE, json.dumps(result.summary, indent=2) + "\n")
    return out

