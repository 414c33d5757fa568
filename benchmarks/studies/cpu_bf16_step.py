"""Does bf16 autocast speed up a demo training step on this CPU? (it has AMX-BF16)

Each (round, precision) is its own process — accelerate's state is a per-process singleton, so
one process cannot switch precision — and rounds alternate fp32 / bf16, so both see the same
machine noise. Each process trains CoT and KaVa for ``--steps`` steps on the demo model through
the training engine (``TrainConfig.mixed_precision``) and prints one JSON line of median step
times (first 5 steps dropped); the parent prints paired medians.

    python benchmarks/studies/cpu_bf16_step.py --rounds 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def one(precision: str, steps: int, threads: int) -> dict[str, float]:
    import tempfile

    import torch

    import kava.demo.run as run
    from kava.demo.task import SyntheticTask, TaskConfig
    from kava.demo.tokenizer import build_tokenizer
    from kava.training.engine import train
    from kava.training.run_config import TrainConfig

    torch.set_num_threads(threads)
    tok, task, s = build_tokenizer(), SyntheticTask(TaskConfig()), run.DemoSettings()
    times = {}
    for method in ("cot", "kava"):
        model = run.demo_model(tok, s.method_config(method), 0)
        cfg = TrainConfig(batch_size=s.batch_size, micro_batch_size=s.batch_size, max_steps=steps, lr=1e-3, cpu=True,
                          save_every=10**6, keep_last=1, report_to=(), mixed_precision=precision)
        with tempfile.TemporaryDirectory() as d:
            history = train(model, run.engine_stream(task), cfg, output_dir=d).history
        times[method] = statistics.median(h["step_time_s"] for h in history[5:])
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=("no", "bf16"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.steps, args.threads)))
        return
    rows: dict[str, list[dict[str, float]]] = {"no": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in rows:
            out = subprocess.run([sys.executable, __file__, "--child", precision, "--steps", str(args.steps),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            rows[precision].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for method in ("cot", "kava"):
        fp32 = statistics.median(r[method] for r in rows["no"])
        bf16 = statistics.median(r[method] for r in rows["bf16"])
        print(f"{method}: fp32 {fp32:.3f} s, bf16 autocast {bf16:.3f} s per step ({bf16 / fp32:.2f}x)")


if __name__ == "__main__":
    main()
