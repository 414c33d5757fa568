"""Which default for ``teacher_dropout``? A short paired KaVa run on SmolLM2-135M-Instruct.

The paper's teacher pass is a training-mode forward, so LoRA dropout (0.1 in every Table 6
config) makes its targets random. This script measures, for ``teacher_dropout`` on (the paper)
and off, from the same weights, data order and seeds:

1. target stability: on one batch in training mode, the share of kept (layer, KV head, slot)
   entries that differ between two passes, and the relative change of the CODI target;
2. a short training run (``--steps`` AdamW steps on gsm8k-train-aug): the loss terms, and on
   held-out GSM8k-AUG validation questions (eval mode, no dropout) the student's answer CE, L_CODI
   and L_KV, the quantities the student is trained to lower.

    python benchmarks/studies/teacher_dropout_smollm2.py --steps 40 --threads 1 --out outputs/bench/teacher_dropout

Writes ``OUT/teacher_dropout.json``. It is a CPU-sized check (M = 12, LoRA r = 32, batch 4), not a
reproduction of the paper's setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from kava.config import preset
from kava.data.datasets import DatasetError, load_dataset
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource
from kava.model.teacher_compression import teacher_targets


def target_stability(model: KavaModel, batch) -> dict[str, float]:
    model.train()
    with torch.no_grad():
        a, b = (teacher_targets(model, batch) for _ in range(2))
    valid = (a.kv.slot_mask & b.kv.slot_mask).view(1, *a.kv.slot_mask.shape[:1], 1, -1).expand_as(a.kv.indices)
    changed = ((a.kv.indices != b.kv.indices) & valid).sum() / valid.sum()
    codi = (a.distill_hidden - b.distill_hidden).norm() / a.distill_hidden.norm()
    return {"kept_entries_changed": changed.item(), "codi_target_relative_change": codi.item()}


def held_out(model: KavaModel, batches) -> dict[str, float]:
    model.eval()
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in batches:
            out = model(batch)
            for k, v in out.terms.items():
                sums.setdefault(k, []).append(v.item())
    return {k: statistics.fmean(v) for k, v in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--valid", type=int, default=32, help="held-out GSM8k-AUG validation questions")
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="outputs/bench/teacher_dropout")
    p.add_argument("--data-dir", default=None, help="folder holding gsm8k/train.jsonl and gsm8k-aug/valid.txt "
                   "(default: $KAVA_DATA_DIR, else the hub)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train = load_dataset("gsm8k-train-aug", data_dir=args.data_dir).records[: args.steps * args.batch_size]
        valid = load_dataset("gsm8k-aug", "valid", data_dir=args.data_dir).records[: args.valid]
    except DatasetError as e:
        p.error(str(e))

    lm, tok = ModelSource.parse("smollm2").load()
    models: dict[str, KavaModel] = {}
    for on in (True, False):
        torch.manual_seed(0)  # same LoRA init, projection and new rows for both
        cfg = preset("kava", num_latents=12, lora_r=32, lora_alpha=32, lora_dropout=0.1, teacher_dropout=on)
        models[f"teacher_dropout={on}"] = KavaModel(copy.deepcopy(lm), copy.deepcopy(tok), cfg)
    builder = next(iter(models.values())).builder
    batches = [builder.training_batch(train[i : i + args.batch_size]) for i in range(0, len(train), args.batch_size)]
    valid_batches = [builder.training_batch(valid[i : i + 8]) for i in range(0, len(valid), 8)]

    report: dict[str, dict] = {name: {"stability_at_init": target_stability(m, batches[0])} for name, m in models.items()}
    optimizers = {n: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=args.lr, weight_decay=0.1)
                  for n, m in models.items()}
    history: dict[str, list[dict[str, float]]] = {n: [] for n in models}
    t0 = time.perf_counter()
    for step, batch in enumerate(batches):
        for name, model in models.items():  # interleaved: the same batch and RNG state for both
            model.train()
            torch.manual_seed(step)
            out = model(batch)
            optimizers[name].zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 2.0)
            optimizers[name].step()
            history[name].append({"loss": out.loss.item(), **{k: v.item() for k, v in out.terms.items()}})
        print(f"step {step + 1}/{len(batches)} ({time.perf_counter() - t0:.0f} s): "
              + "  ".join(f"{n} loss {history[n][-1]['loss']:.3f}" for n in models), flush=True)
    last = max(1, len(batches) // 4)
    for name, model in models.items():
        report[name]["train_last_quarter"] = {k: statistics.fmean(h[k] for h in history[name][-last:])
                                              for k in history[name][-1]}
        report[name]["held_out"] = held_out(model, valid_batches)
        report[name]["stability_after"] = target_stability(model, batches[0])
    report["settings"] = vars(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_dropout.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
