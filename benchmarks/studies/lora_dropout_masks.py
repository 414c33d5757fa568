"""``lora_dropout_masks``: what one mask per input (q/k/v share one, gate/up another) saves, and
whether it changes what training reaches, beside PEFT's one mask per adapter.

1. cost (``--cost``): SmolLM2-135M-Instruct KaVa training steps (LoRA r 128, dropout 0.1, M 24,
   T 3, batch 4, GSM8k-AUG validation records), the two settings interleaved with `kava bench`'s
   protocol (warm-up on the largest batch, order rotated each round): median step / teacher /
   student / backward ms and the paired step ratio with its spread.
2. training (``--train``): paired demo-scale KaVa runs, LoRA (r 16, dropout 0.1) on the trained
   CoT model of a finished `kava demo` (the same start for every run), each seed trained with
   both settings on the same data order; validation accuracy (the demo task's validation split)
   and the last 10 % of the loss terms, and the per-seed differences.

    python benchmarks/studies/lora_dropout_masks.py --cost --train --demo outputs/demo --out docs/bench

Writes ``OUT/lora_dropout_masks.json`` (each part under its key; a part not run keeps its old value).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

SETTINGS = ("per_adapter", "per_input")


def cost(rounds: int, batch: int, data_dir: str | None) -> dict[str, Any]:
    from kava.benchmark.bench import ratio_spread, step_table, time_training_steps, whole_rounds
    from kava.config import preset
    from kava.data.datasets import load_dataset
    from kava.model.kava_model import KavaModel
    from kava.model.loading import smollm2_source

    records = load_dataset("gsm8k-aug", "valid", data_dir=data_dir, limit=4 * batch).records
    models = {}
    for masks in SETTINGS:
        lm, tok = smollm2_source().load()
        torch.manual_seed(0)
        models[masks] = KavaModel(lm, tok, preset("kava", num_latents=24, num_iterations=3, lora_dropout=0.1,
                                                  lora_dropout_masks=masks))
    builder = models[SETTINGS[0]].builder
    batches = [builder.training_batch(records[i * batch:(i + 1) * batch]) for i in range(4)]
    rounds = whole_rounds(rounds, len(SETTINGS))
    times = time_training_steps(models, batches, rounds, warmup=1)
    steps = {m: [row["step"] for row in times[m]] for m in SETTINGS}
    table = step_table(times)
    return {"model": "SmolLM2-135M-Instruct, LoRA r 128, dropout 0.1, M 24, T 3", "batch": batch, "rounds": rounds,
            "threads": torch.get_num_threads(), "median_ms": {m: {k: 1000 * v for k, v in row.items()
                                                                   if not k.endswith(("_sys", "_faults"))}
                                                               for m, row in table.items()},
            "per_input_step_over_per_adapter": ratio_spread(steps["per_input"], steps["per_adapter"]),
            "per_input_teacher_over_per_adapter": ratio_spread([r["teacher"] for r in times["per_input"]],
                                                                [r["teacher"] for r in times["per_adapter"]])}


def train(demo_dir: Path, seeds: list[int], steps: int, lr: float, valid_size: int, out: Path) -> dict[str, Any]:
    from kava.demo.run import DemoData, DemoSettings, train_run, trained_task
    from kava.evaluation.evaluate import evaluate
    from kava.model.kava_model import KavaModel

    cot_dir = demo_dir / "runs" / "cot-seed0"
    cot = KavaModel.from_pretrained(cot_dir / "final")
    base = DemoSettings(task=trained_task(cot_dir), curve_points=0, steps={"nocot": 0, "cot": 0, "latent": steps},
                        lr={"nocot": 0.0, "cot": 0.0, "latent": lr})
    data = DemoData.build(base)
    valid = data.task.valid_set(valid_size)
    runs: dict[str, dict[str, Any]] = {m: {} for m in SETTINGS}
    for seed in seeds:
        for masks in SETTINGS:
            s = replace(base, method_overrides={"finetune": "lora", "lora_r": 16, "lora_alpha": 32,
                                                "lora_dropout": 0.1, "lora_dropout_masks": masks})
            run_dir = out / "runs" / f"{masks}-seed{seed}"
            if run_dir.exists():
                raise FileExistsError(f"{run_dir} exists: pass another --runs folder")
            record, model = train_run(run_dir, s, "kava", seed, data, cot_model=cot, evaluate_test=False,
                                      progress=False)
            history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
            tail = history[-max(1, len(history) // 10):]
            terms = ("ce_student", "ce_teacher", "codi", "kv", "kv_mean_baseline")
            acc = evaluate(model, valid, batch_size=100, progress=False).summary["accuracy"]
            runs[masks][str(seed)] = {"valid_accuracy": acc, "train_time_s": record["train_time_s"],
                                      "last_10pct": {k: statistics.fmean(h[k] for h in tail) for k in terms}}
            print(f"seed {seed} {masks}: valid {100 * acc:.1f} %, train {record['train_time_s']:.0f} s, "
                  f"kv {runs[masks][str(seed)]['last_10pct']['kv']:.4f}", flush=True)
    diffs = [runs["per_input"][str(s)]["valid_accuracy"] - runs["per_adapter"][str(s)]["valid_accuracy"] for s in seeds]
    return {"setup": f"demo model, KaVa from the seed-0 CoT model of {demo_dir.name}, LoRA r 16 alpha 32 dropout 0.1, "
                     f"{steps} steps at lr {lr}, validation {valid_size}", "runs": runs,
            "valid_accuracy_diff_per_seed": diffs, "valid_accuracy_diff_mean": statistics.fmean(diffs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost", action="store_true")
    p.add_argument("--train", action="store_true")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--demo", type=Path, default=Path("outputs/demo"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=3e-3, help="LoRA's lr (the demo's full fine-tuning uses 1e-3)")
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--runs", type=Path, default=Path("outputs/bench/lora_dropout_masks"), help="training runs' folder")
    p.add_argument("--data-dir", default=None, help="folder holding gsm8k-aug/valid.txt (default: $KAVA_DATA_DIR, "
                   "else the hub)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("outputs/bench"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    path = a.out / "lora_dropout_masks.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if a.cost:
        from kava.data.datasets import DatasetError

        try:
            report["cost"] = cost(a.rounds, a.batch, a.data_dir)
        except DatasetError as e:
            p.error(str(e))
        print(json.dumps(report["cost"], indent=2), flush=True)
    if a.train:
        report["training"] = train(a.demo, [int(s) for s in a.seeds.split(",")], a.steps, a.lr, a.valid, a.runs)
    a.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
