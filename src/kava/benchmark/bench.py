"""`kava bench`: what a KaVa training step and a KaVa answer cost beside the baselines.

Methods are interleaved in one process (one step, or one batch of answers, of each method in
turn, round after round) and compared by paired medians: the ratio of two methods' times within
a round, median over rounds. A machine that speeds up or slows down between rounds then moves
both sides of each ratio together, which matters on a shared, noisy CPU.

Training steps are timed on the demo model (full fine-tuning, the demo's M and T) and on
SmolLM2-135M (LoRA, the paper's M = 24, T = 3); a step is forward + backward + optimizer step,
split into teacher / eviction / student (`KavaModel.spans`) and backward. Inference is timed on
the trained models of a finished `kava demo` (a random model never stops writing, so only trained
models give real CoT lengths), at batch 32 and batch 1.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

TRAIN_METHODS = ("kava", "pccot", "codi", "cot")
# name in the report → (the demo run timed, the inference mode it must answer in)
INFERENCE_RUNS = {"kava": ("kava", "latent"), "cot": ("cot", "cot"), "direct": ("nocot", "direct")}


@dataclass
class BenchSettings:
    """How much to measure; `quick()` fits in under 10 minutes on 2 cores."""

    demo_rounds: int = 12
    smollm2_rounds: int = 4
    smollm2_batch: int = 4
    smollm2_latents: int = 24
    inference_rounds: int = 5
    batch1_questions: int = 16
    warmup: int = 1  # untimed rounds first: allocator and kernel caches settle

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(demo_rounds=6, smollm2_rounds=2, inference_rounds=3, batch1_questions=8)


class SpanTimer:
    """Wall time per named span within one step (see `KavaModel.spans`)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a_i / b_i."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _median(rows: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in rows)


def time_training_steps(models: dict[str, Any], batches: Sequence[dict[str, torch.Tensor]], rounds: int,
                        warmup: int) -> dict[str, list[dict[str, float]]]:
    """Per method, one dict of seconds per timed round: step, forward, backward, optimizer and the
    model's spans (teacher, eviction, student). Every method sees the same batch in a round."""
    timers = {name: SpanTimer() for name in models}
    optimizers = {}
    for name, model in models.items():
        model.train()
        model.spans = timers[name]
        optimizers[name] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for r in range(warmup + rounds):
        batch = batches[r % len(batches)]
        for name, model in models.items():
            timers[name].totals.clear()
            t0 = time.perf_counter()
            out = model(batch)
            t1 = time.perf_counter()
            out.loss.backward()
            t2 = time.perf_counter()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if r >= warmup:
                times[name].append({"step": t3 - t0, "forward": t1 - t0, "backward": t2 - t1,
                                    "optimizer": t3 - t2, **timers[name].totals})
    for model in models.values():
        model.spans = None
    return times


def step_table(times: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median seconds per part of the step, per method."""
    keys = ("step", "forward", "teacher", "eviction", "student", "backward", "optimizer")
    return {name: {k: _median(rows, k) for k in keys} for name, rows in times.items()}


def time_inference(models: dict[str, Any], questions: Sequence[str], batch_size: int, rounds: int,
                   warmup: int) -> dict[str, dict[str, float]]:
    """Per model: median latency per question (s), and the mean forward passes, emitted
    tokens and cache entries per question, answering ``questions`` in batches of ``batch_size``."""
    from kava.evaluation.decoding import generate
    from kava.evaluation.answering import DEFAULT_MAX_NEW_TOKENS

    chunks = [questions[i:i + batch_size] for i in range(0, len(questions), batch_size)]
    latency: dict[str, list[float]] = {mode: [] for mode in models}
    costs: dict[str, dict[str, float]] = {}
    for r in range(warmup + rounds):
        for mode, model in models.items():
            model.eval()
            passes, tokens, cache = [], [], []
            start = time.perf_counter()
            for chunk in chunks:
                gen = generate(model, chunk, max_new_tokens=DEFAULT_MAX_NEW_TOKENS[model.config.inference_mode])
                passes += gen.forward_passes
                tokens += [len(t) for t in gen.tokens]
                cache += gen.cache_tokens
            if r >= warmup:
                latency[mode].append((time.perf_counter() - start) / len(questions))
            costs[mode] = {"forward_passes": statistics.fmean(passes), "tokens": statistics.fmean(tokens),
                           "cache_entries": statistics.fmean(cache)}
    return {mode: {"latency_s": statistics.median(latency[mode]), **costs[mode],
                   "_latencies": latency[mode]} for mode in models}


def _demo_models() -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    from kava.demo.run import DemoSettings, demo_model, engine_stream
    from kava.demo.task import SyntheticTask
    from kava.demo.tokenizer import build_tokenizer

    s = DemoSettings()
    tok = build_tokenizer()
    models = {m: demo_model(tok, s.method_config(m), seed=0) for m in TRAIN_METHODS}
    records = list(itertools.islice(engine_stream(SyntheticTask(s.task))(0, 0), 4 * s.batch_size))
    builder = models["kava"].builder
    return models, [builder.training_batch(records[i::4]) for i in range(4)]


def _smollm2_models(s: BenchSettings, data_dir: str | Path | None) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    from kava.config import preset
    from kava.data.datasets import load_dataset
    from kava.model.kava_model import KavaModel
    from kava.model.loading import smollm2_source

    records = load_dataset("gsm8k-aug", "valid", data_dir=data_dir, limit=4 * s.smollm2_batch).records
    models = {}
    for m in TRAIN_METHODS:
        lm, tok = smollm2_source().load()
        torch.manual_seed(0)
        over = {} if m == "codi" else {"num_latents": s.smollm2_latents, "num_iterations": 3}
        models[m] = KavaModel(lm, tok, preset(m, **over))
    builder = models["kava"].builder
    n = s.smollm2_batch
    return models, [builder.training_batch(records[i * n:(i + 1) * n]) for i in range(4)]


def _inference_models(demo_dir: Path) -> tuple[dict[str, Any], list[str], float | None]:
    from kava.demo.run import trained_task
    from kava.demo.task import SyntheticTask
    from kava.model.kava_model import KavaModel

    runs = {name: demo_dir / "runs" / f"{run}-seed0" for name, (run, _) in INFERENCE_RUNS.items()}
    models = {name: KavaModel.from_pretrained(run / "final") for name, run in runs.items()}
    for name, model in models.items():
        if model.config.inference_mode != INFERENCE_RUNS[name][1]:
            raise ValueError(f"{runs[name]} answers in {model.config.inference_mode!r} mode, not {INFERENCE_RUNS[name][1]!r}")
    questions = [r.question for r in SyntheticTask(trained_task(runs["kava"])).test_set(64)]
    summary = demo_dir / "summary.json"
    wall = json.loads(summary.read_text()).get("total_time_s") if summary.exists() else None
    return models, questions, wall


def check_demo_dir(demo_dir: str | Path) -> Path:
    """The demo folder inference is timed on; refused at once (before any work) if incomplete."""
    d = Path(demo_dir)
    missing = [f"runs/{run}-seed0/final" for run, _ in INFERENCE_RUNS.values()
               if not (d / "runs" / f"{run}-seed0" / "final").is_dir()]
    if missing:
        raise FileNotFoundError(f"{d}: no trained demo models ({', '.join(missing)} missing); run `kava demo --out {d}` "
                                "first, or pass --demo DIR")
    return d


def run_bench(out_dir: str | Path, demo_dir: str | Path, settings: BenchSettings | None = None, *,
              data_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything and write ``out_dir/report.json``; returns the report."""
    s = settings or BenchSettings()
    demo = check_demo_dir(demo_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"settings": asdict(s), "torch_threads": torch.get_num_threads(), "training": {}}

    for name, build, rounds in (("demo", _demo_models, s.demo_rounds),
                                ("smollm2", lambda: _smollm2_models(s, data_dir), s.smollm2_rounds)):
        log(f"training steps: {name} model, {rounds} rounds of {', '.join(TRAIN_METHODS)}")
        models, batches = build()
        times = time_training_steps(models, batches, rounds, s.warmup)
        steps = {m: [row["step"] for row in times[m]] for m in TRAIN_METHODS}
        report["training"][name] = {
            "median_s": step_table(times),
            "kava_step_over_pccot_step": paired_ratio(steps["kava"], steps["pccot"]),
            "kava_step_over_cot_step": paired_ratio(steps["kava"], steps["cot"]),
            "eviction_share_of_step": statistics.median(row["eviction"] / row["step"] for row in times["kava"]),
        }
        del models

    log("inference: trained demo models, batch 32 and batch 1")
    models, questions, wall = _inference_models(demo)
    inference = {
        "batch32": time_inference(models, questions[:32], 32, s.inference_rounds, s.warmup),
        "batch1": time_inference(models, questions[:s.batch1_questions], 1, s.inference_rounds, s.warmup),
    }
    ratios = {}
    for key, suffix in (("batch32", ""), ("batch1", "_batch1")):
        rows = inference[key]
        ratios[f"kava_latency_over_cot{suffix}"] = paired_ratio(rows["kava"]["_latencies"], rows["cot"]["_latencies"])
        for row in rows.values():
            del row["_latencies"]
    report["inference"] = inference
    report["demo_wall_time_s"] = wall
    report.update({
        # The headline ratios: training on SmolLM2 (the reference), eviction on both models.
        "kava_step_over_pccot_step": report["training"]["smollm2"]["kava_step_over_pccot_step"],
        "kava_step_over_cot_step": report["training"]["smollm2"]["kava_step_over_cot_step"],
        "eviction_share_of_step": max(t["eviction_share_of_step"] for t in report["training"].values()),
        "kava_forward_passes_over_cot": inference["batch32"]["kava"]["forward_passes"] / inference["batch32"]["cot"]["forward_passes"],
        **ratios,
    })
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables (milliseconds)."""
    lines = []
    for name, t in report["training"].items():
        lines += [f"Training step, {name} model (median ms; kava/pccot {t['kava_step_over_pccot_step']:.2f}, "
                  f"kava/cot {t['kava_step_over_cot_step']:.2f}, eviction {100 * t['eviction_share_of_step']:.1f} % of a kava step)", "",
                  "| method | step | forward | teacher | eviction | student | backward | optimizer |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, row in t["median_s"].items():
            lines.append(f"| {m} | " + " | ".join(f"{1000 * row[k]:.1f}" for k in
                                                    ("step", "forward", "teacher", "eviction", "student", "backward", "optimizer")) + " |")
        lines.append("")
    for key, rows in report["inference"].items():
        lines += [f"Inference, {key} (per question)", "", "| mode | latency ms | forward passes | tokens | cache entries |",
                  "|---|---|---|---|---|"]
        for mode, row in rows.items():
            lines.append(f"| {mode} | {1000 * row['latency_s']:.2f} | {row['forward_passes']:.1f} | {row['tokens']:.1f} | "
                         f"{row['cache_entries']:.1f} |")
        lines.append("")
    head = ("kava_step_over_pccot_step", "kava_step_over_cot_step", "eviction_share_of_step",
            "kava_forward_passes_over_cot", "kava_latency_over_cot", "kava_latency_over_cot_batch1")
    lines += ["| ratio | value |", "|---|---|"] + [f"| {k} | {report[k]:.3f} |" for k in head]
    if report.get("demo_wall_time_s"):
        lines.append(f"\nThe demo's wall time (its summary.json): {report['demo_wall_time_s'] / 60:.1f} min")
    return "\n".join(lines)
