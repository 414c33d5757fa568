"""One demo-recipe experiment on the validation split: train one method, log accuracy over time.

The search behind `DemoSettings` (the goal: the default `kava demo` shows KaVa working). Each
call trains one method (from scratch, or from a CoT checkpoint for the latent methods), evaluates
it on the validation split every ``--eval-every`` steps, and appends one JSON line to ``--log``
(settings, validation accuracy per eval, wall time). Never touches the test split.

    python benchmarks/studies/demo_recipe_search.py --method cot --steps 1500 --out /tmp/s/cot
    python benchmarks/studies/demo_recipe_search.py --method kava --init /tmp/s/cot/final --steps 800 \
        --set kv_key_space=pre_rope teacher_drop_last_step=false alpha_kv=10 --out /tmp/s/kava-a
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch


def _overrides(items: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON where they are (numbers, booleans), else strings."""
    def value(text: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    return {k: value(v) for k, v in (item.split("=", 1) for item in items)}


def main() -> None:
    from kava.demo.run import DemoSettings, demo_model, engine_stream
    from kava.demo.task import SyntheticTask, TaskConfig
    from kava.demo.tokenizer import build_tokenizer
    from kava.evaluation.evaluate import evaluate
    from kava.methods import lookup
    from kava.model.kava_model import KavaModel
    from kava.training.engine import train
    from kava.training.run_config import TrainConfig

    p = argparse.ArgumentParser()
    p.add_argument("--method", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--init", default=None, help="CoT run's final/ folder the latent method starts from")
    p.add_argument("--set", nargs="*", default=[], help="KavaConfig overrides key=value (JSON values)")
    p.add_argument("--settings", nargs="*", default=[], help="DemoSettings overrides key=value (JSON values)")
    p.add_argument("--task", nargs="*", default=[], help="TaskConfig overrides key=value (JSON values)")
    p.add_argument("--eval-every", type=int, default=None, help="default: only at the end")
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--log", default="benchmarks/studies/demo_recipe_search.jsonl")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    s = DemoSettings()
    s = replace(s, **_overrides(args.settings))
    phase = "latent" if lookup(args.method).latent else args.method
    config = s.method_config(args.method).replace(**_overrides(args.set))
    task = SyntheticTask(TaskConfig(**_overrides(args.task)))
    valid = task.valid_set(args.valid)
    init = KavaModel.from_pretrained(args.init).lm.state_dict() if args.init else None
    model = demo_model(build_tokenizer(), config, args.seed, init)

    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    eval_time = [0.0]

    def eval_fn(m):
        t = time.perf_counter()
        ev = evaluate(m, valid, batch_size=100, progress=False)
        eval_time[0] += time.perf_counter() - t
        point = {"train_s": time.perf_counter() - t0 - eval_time[0], "accuracy": ev.summary["accuracy"],
                 "passes": ev.summary["mean_forward_passes"]}
        curve.append(point)
        print(json.dumps(point), flush=True)
        return {"accuracy": ev.summary["accuracy"]}

    cfg = TrainConfig(batch_size=args.batch_size or s.batch_size, micro_batch_size=args.batch_size or s.batch_size,
                      max_steps=args.steps, lr=args.lr or s.lr[phase], weight_decay=s.weight_decay,
                      warmup_ratio=s.warmup_ratio, seed=args.seed, cpu=True, save_every=100000, keep_last=1,
                      report_to=(), eval_every=args.eval_every or args.steps)
    result = train(model, engine_stream(task), cfg, output_dir=args.out, eval_fn=eval_fn)
    last = {k: sum(h[k] for h in result.history[-50:]) / min(50, len(result.history))
            for k in result.history[-1] if k not in ("step", "lr", "max_memory_gb", "eval_time_s") and not k.startswith("eval/")}
    entry = {"method": args.method, "steps": args.steps, "lr": cfg.lr, "batch_size": cfg.batch_size,
             "init": args.init, "set": args.set, "settings": args.settings, "task": args.task, "seed": args.seed,
             "curve": curve, "last50": last, "total_s": time.perf_counter() - t0, "out": args.out}
    with open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry))


if __name__ == "__main__":
    main()
