"""SmolLM2-135M-Instruct, untrained for this task, on GSM8k test in CoT and direct (No-CoT) modes.

A reference point for the harness on real weights, not a result of the method: the model is
wrapped with LoRA at init (a no-op) and prompted in kava's plain-text format ``Q`` (CoT) or
``Q The answer is:`` (direct), which it was never trained on, so accuracies are near zero. What
the run shows is the cost side: forward passes, generated tokens, cache size and speed.

Usage: python benchmarks/eval_smollm2.py [--limit 50] [--batch-size 16] [--out DIR] [--threads N] [--data-dir DIR]

GSM8k is read from --data-dir, else $KAVA_DATA_DIR (e.g. ../shared/data), else the hub (openai/gsm8k).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from kava.config import preset
from kava.data.datasets import DatasetError, load_dataset
from kava.evaluation.evaluate import evaluate, write_results
from kava.model.kava_model import KavaModel
from kava.model.loading import smollm2_source

MODES = {"cot": "cot", "direct": "nocot"}  # inference mode -> method preset that answers that way


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=50, help="first N GSM8k test questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cot-max-new-tokens", type=int, default=256)
    parser.add_argument("--direct-max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="outputs/bench/eval_smollm2")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 avoids oversubscription when other jobs share the cores)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding gsm8k/test.jsonl (default: $KAVA_DATA_DIR, else the hub)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        data = load_dataset("gsm8k", "test", data_dir=args.data_dir, limit=args.limit)
    except DatasetError as e:
        parser.error(str(e))

    t0 = time.perf_counter()
    base_lm, base_tok = smollm2_source().load()
    print(f"loaded SmolLM2-135M-Instruct in {time.perf_counter() - t0:.0f} s")
    limits = {"cot": args.cot_max_new_tokens, "direct": args.direct_max_new_tokens}
    summaries = {}
    for mode, name in MODES.items():
        # KavaModel adds LoRA layers and special tokens in place: give each mode its own copy.
        model = KavaModel(copy.deepcopy(base_lm), copy.deepcopy(base_tok), preset(name, lora_r=8, lora_dropout=0.0))
        result = evaluate(model, data, batch_size=args.batch_size, max_new_tokens=limits[mode])
        write_results(result, Path(args.out) / mode)
        s = summaries[mode] = result.summary
        lo, hi = s["accuracy_ci95"]
        print(f"{mode:6s}: accuracy {s['accuracy']:.1%} [95% CI {lo:.1%}-{hi:.1%}] on {s['n']} questions, "
              f"mean forward passes {s['mean_forward_passes']:.1f}, mean generated tokens "
              f"{s['mean_generated_tokens']:.1f}, finished (eos) {s['finished_fraction']:.0%}, "
              f"mean cache {s['mean_cache_tokens']:.0f} tokens/layer, {s['total_time_s']:.0f} s")
    (Path(args.out) / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
