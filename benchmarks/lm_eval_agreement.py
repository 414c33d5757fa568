"""lm-eval's ``kava`` model type against ``kava eval`` on the demo's 500 test questions, question by question.

    python benchmarks/lm_eval_agreement.py --model MODEL_DIR [--model MODEL_DIR ...] --out docs/bench/lm_eval_agreement.json

For each model (and its trained mode) both harnesses answer the same questions; the report counts
questions whose answer text or score differ, and compares accuracy and mean forward passes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lm_eval
import torch

from kava.demo.run import DemoSettings
from kava.demo.task import SyntheticTask
from kava.evaluation.harness import TASKS_DIR, task_manager
from kava.evaluation.resumable import evaluate_checkpoint


def compare(model_dir: Path, data: Path, work: Path) -> dict:
    tasks = work / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "kava_demo_test.yaml").write_text(
        f"include: {TASKS_DIR / '_kava_template_yaml'}\ntask: kava_demo_test\ndataset_kwargs:\n  name: {data}\n")
    (tasks / "utils.py").write_text((TASKS_DIR / "utils.py").read_text())
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model="kava", model_args={"pretrained": str(model_dir)}, tasks=["kava_demo_test"],
                                  batch_size=16, device="cpu", log_samples=True,
                                  task_manager=task_manager(tasks, include_defaults=False))
    lm_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = evaluate_checkpoint(model_dir, data, out=work / "kava-eval", batch_size=16, progress=False)
    kava_time = time.perf_counter() - t0
    samples = sorted(res["samples"]["kava_demo_test"], key=lambda s: s["doc"]["index"])
    preds = sorted((json.loads(l) for l in (work / "kava-eval" / "predictions.jsonl").read_text().splitlines()),
                   key=lambda p: p["index"])
    mode = res["config"]["kava_mode"]
    text_differs = [p["index"] for s, p in zip(samples, preds)
                    if not p["prediction"].endswith(s["resps"][0][0]) or (mode != "cot" and s["resps"][0][0] != p["prediction"])]
    score_differs = [p["index"] for s, p in zip(samples, preds) if s["exact_match"] != float(p["correct"])]
    return {"model": str(model_dir), "mode": mode, "method": res["config"]["kava_method"], "questions": len(preds),
            "lm_eval_accuracy": res["results"]["kava_demo_test"]["exact_match,none"], "kava_eval_accuracy": summary["accuracy"],
            "questions_scored_differently": score_differs, "questions_with_different_text": text_differs,
            "lm_eval_mean_forward_passes": res["config"]["kava_mean_forward_passes"],
            "kava_eval_mean_forward_passes": summary["mean_forward_passes"],
            "lm_eval_s": round(lm_time, 1), "kava_eval_s": round(kava_time, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", action="append", required=True, type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = SyntheticTask(DemoSettings().task).test_set(DemoSettings().test_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo-test.jsonl"
        data.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in test))
        for i, model in enumerate(args.model):
            rows.append(compare(model, data, Path(tmp) / f"m{i}"))
            print(json.dumps(rows[-1]))
    args.out.write_text(json.dumps({"dataset": f"the demo's {len(test)} test questions", "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
