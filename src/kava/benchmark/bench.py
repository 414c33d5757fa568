"""`kava bench`: what a KaVa training step and a KaVa answer cost beside the baselines.

Methods are interleaved in one process (one step, or one batch of answers, of each method in
turn, round after round) and compared by paired medians: the ratio of two methods' times within
a round, median over rounds. A machine that speeds up or slows down between rounds then moves
both sides of each ratio together, which matters on a shared, noisy CPU.

Two effects would still favour one method, and the protocol removes both. Memory: a step that
reaches a new peak of the process's heap pays the kernel's page faults for it (seconds on
SmolLM2), so every method first runs untimed on the largest batch. Position: whatever runs first
in a round can pay for what changed since the round before, so the method order rotates each
round and the rounds are a multiple of the number of methods (each method is first equally often).
Minor page faults and system time are recorded per span (`resource.getrusage`); a round whose
step spent more than `BenchSettings.flag_sys_share` of its wall time in the kernel is flagged.

Training steps are timed on the demo model (full fine-tuning, the demo's M and T) and on
SmolLM2-135M (LoRA, the paper's M = 24, T = 3); a step is forward + backward + optimizer step,
split into teacher / eviction / student (`KavaModel.spans`) and backward. A curriculum's batches
change with the step (Coconut's thoughts grow, iCoT's trace shrinks), so each of its batches is built
at its own point of the curriculum (`curriculum_batches`) and its median step is a mid-curriculum
one. Inference is timed on
the trained models of a finished `kava demo` (a random model never stops writing, so only trained
models give real CoT lengths), at batch 32 and batch 1.
"""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from kava.config import preset
from kava.methods import METHODS, benched

TRAIN_METHODS = tuple(m.name for m in benched() if m.bench_step)
# name in the report → (the demo run timed, the inference mode it must answer in)
INFERENCE_RUNS = {m.bench_answers: (m.name, preset(m.name).inference_mode) for m in benched() if m.bench_answers}
Batch = dict[str, torch.Tensor]
STEP_PARTS = ("step", "forward", "teacher", "eviction", "student", "backward", "optimizer")


@dataclass
class BenchSettings:
    """How much to measure; `quick()` fits in under 10 minutes on 2 cores. Timed rounds are
    rounded up to a multiple of the number of methods (each is first in a round equally often)."""

    demo_rounds: int = 12
    smollm2_rounds: int = 8
    smollm2_batch: int = 4
    smollm2_latents: int = 24
    inference_rounds: int = 6
    batch1_questions: int = 16
    warmup: int = 1  # untimed rounds first, every method on the largest batch: the heap reaches its peak
    flag_sys_share: float = 0.05  # a round whose step spends more of its wall time in the kernel is flagged

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(demo_rounds=8, smollm2_rounds=4, inference_rounds=3, batch1_questions=8)


Clock = Callable[[], float]


def _usage() -> tuple[float, int]:
    """This process's system CPU seconds and minor page faults so far."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_stime, u.ru_minflt


class SpanTimer:
    """Wall time, system time and minor page faults per named span within one step (see
    `KavaModel.spans`): ``totals[name]``, ``totals[name + "_sys"]``, ``totals[name + "_faults"]``."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, (sys0, faults0) = self.clock(), _usage()
        try:
            yield
        finally:
            sys1, faults1 = _usage()
            self.totals[name] += self.clock() - start
            self.totals[f"{name}_sys"] += sys1 - sys0
            self.totals[f"{name}_faults"] += faults1 - faults0


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a_i / b_i."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def ratio_spread(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The paired ratio with its spread over rounds: median, min, max and the number of rounds."""
    r = [x / y for x, y in zip(a, b, strict=True)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r), "rounds": len(r)}


def rotated(names: Sequence[str], r: int) -> list[str]:
    """Round ``r``'s order: the list rotated by r, so over len(names) rounds each name is first once."""
    k = r % len(names)
    return list(names[k:]) + list(names[:k])


def whole_rounds(rounds: int, methods: int) -> int:
    """``rounds`` rounded up to a multiple of ``methods``."""
    return -(-rounds // methods) * methods


def largest(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batch with the most elements: the one that takes the heap to its peak."""
    return max(batches, key=lambda b: sum(t.numel() for t in b.values()))


def _median(rows: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in rows)


def time_training_steps(models: dict[str, Any], batches: Sequence[Batch] | Mapping[str, Sequence[Batch]], rounds: int,
                        warmup: int, clock: Clock = time.perf_counter) -> dict[str, list[dict[str, float]]]:
    """Per method, one dict per timed round: seconds of step, forward, backward, optimizer and the
    model's spans (teacher, eviction, student), each with ``_sys`` (kernel seconds) and ``_faults``
    (minor page faults), plus ``round`` and ``position`` (0 = first in its round).

    Every method sees the same batch in a round (or the same place in its own list, where
    ``batches`` maps methods to lists); the order rotates each round (``rounds`` must be a multiple
    of the number of methods); ``warmup`` untimed rounds run every method on its largest batch.
    """
    names = list(models)
    own = batches if isinstance(batches, Mapping) else {name: batches for name in names}
    if rounds % len(names):
        raise ValueError(f"rounds={rounds}: must be a multiple of the {len(names)} methods, so each is first equally often")
    timers = {name: SpanTimer(clock) for name in models}
    optimizers = {}
    for name, model in models.items():
        model.train()
        model.spans = timers[name]
        optimizers[name] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    peaks = {name: largest(own[name]) for name in names}
    for r in range(-warmup, rounds):
        for position, name in enumerate(rotated(names, r)):
            model, timer = models[name], timers[name]
            batch = peaks[name] if r < 0 else own[name][r % len(own[name])]
            timer.totals.clear()
            with timer("step"):
                with timer("forward"):
                    out = model(batch)
                with timer("backward"):
                    out.loss.backward()
                with timer("optimizer"):
                    optimizers[name].step()
                    optimizers[name].zero_grad(set_to_none=True)
            if r >= 0:
                times[name].append({"round": r, "position": position, **timer.totals})
    for model in models.values():
        model.spans = None
    return times


def step_table(times: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median seconds per part of the step, per method, with the step's median system seconds and
    minor page faults."""
    keys = STEP_PARTS + ("step_sys", "step_faults")
    return {name: {k: _median(rows, k) for k in keys} for name, rows in times.items()}


def flagged_rounds(times: dict[str, list[dict[str, float]]], sys_share: float) -> list[dict[str, Any]]:
    """The (round, method) steps that spent more than ``sys_share`` of their wall time in the kernel
    (page faults, heap growth): their times measure the allocator as much as the method."""
    flagged = [{"round": int(row["round"]), "method": name, "position": int(row["position"]),
                "step_s": row["step"], "sys_s": row["step_sys"], "minor_faults": int(row["step_faults"])}
               for name, rows in times.items() for row in rows if row["step_sys"] > sys_share * row["step"]]
    return sorted(flagged, key=lambda f: (f["round"], f["position"]))


def time_inference(models: dict[str, Any], questions: Sequence[str], batch_size: int, rounds: int,
                   warmup: int, clock: Clock = time.perf_counter) -> dict[str, dict[str, Any]]:
    """Per model: median latency per question (s) with every round's (``_latencies``), system
    seconds and minor faults per round, and the mean forward passes, emitted tokens and cache
    entries per question, answering ``questions`` in batches of ``batch_size``. The model order
    rotates each round (``rounds`` a multiple of the number of models)."""
    from kava.evaluation.decoding import generate
    from kava.evaluation.answering import DEFAULT_MAX_NEW_TOKENS

    names = list(models)
    if rounds % len(names):
        raise ValueError(f"rounds={rounds}: must be a multiple of the {len(names)} models, so each is first equally often")
    chunks = [questions[i:i + batch_size] for i in range(0, len(questions), batch_size)]
    latency: dict[str, list[float]] = {mode: [] for mode in models}
    usage: dict[str, list[dict[str, float]]] = {mode: [] for mode in models}
    costs: dict[str, dict[str, float]] = {}
    for r in range(-warmup, rounds):
        for mode in rotated(names, r):
            model = models[mode]
            model.eval()
            passes, tokens, cache = [], [], []
            start, (sys0, faults0) = clock(), _usage()
            for chunk in chunks:
                gen = generate(model, chunk, max_new_tokens=DEFAULT_MAX_NEW_TOKENS[model.config.inference_mode])
                passes += gen.forward_passes
                tokens += [len(t) for t in gen.tokens]
                cache += gen.cache_tokens
            if r >= 0:
                sys1, faults1 = _usage()
                latency[mode].append((clock() - start) / len(questions))
                usage[mode].append({"sys_s": sys1 - sys0, "minor_faults": faults1 - faults0})
            costs[mode] = {"forward_passes": statistics.fmean(passes), "tokens": statistics.fmean(tokens),
                           "cache_entries": statistics.fmean(cache)}
    return {mode: {"latency_s": statistics.median(latency[mode]), **costs[mode],
                   "sys_s_per_round": [u["sys_s"] for u in usage[mode]],
                   "minor_faults_per_round": [u["minor_faults"] for u in usage[mode]],
                   "_latencies": latency[mode]} for mode in models}


def curriculum_batches(builder, groups: Sequence[Sequence[Any]]) -> list[Batch]:
    """A curriculum method's batches, one per group of records: batch i is built at step
    i·end / (n − 1), from the curriculum's first step to ``end``, the step from which it no longer
    changes on the groups' traces (`Curriculum.settled_at`; Coconut: every trace step a thought;
    iCoT: the longest trace of the groups gone)."""
    cfg = builder.config
    schedule = cfg.curriculum_schedule()
    longest = max((len(builder.cot_ids(r.steps, drop_last=cfg.teacher_drop_last_step)) for group in groups for r in group),
                  default=0)
    end = schedule.settled_at(longest)
    return [builder.training_batch(group, step=i * end // max(1, len(groups) - 1)) for i, group in enumerate(groups)]


def _method_batches(models: dict[str, Any], groups: Sequence[Sequence[Any]]) -> dict[str, list[Batch]]:
    """Every method's batches: KaVa's (which hold the teacher's and the student's sequences) for the
    methods without a curriculum, each curriculum's own for the others."""
    shared = [models["kava"].builder.training_batch(group) for group in groups]
    return {m: curriculum_batches(model.builder, groups) if model.config.curriculum != "none" else shared
            for m, model in models.items()}


def _demo_models() -> tuple[dict[str, Any], dict[str, list[Batch]]]:
    from kava.demo.run import DemoSettings, demo_model, engine_stream
    from kava.demo.task import SyntheticTask
    from kava.demo.tokenizer import build_tokenizer

    s = DemoSettings()
    tok = build_tokenizer()
    models = {m: demo_model(tok, s.method_config(m), seed=0) for m in TRAIN_METHODS}
    records = list(itertools.islice(engine_stream(SyntheticTask(s.task))(0, 0), 4 * s.batch_size))
    return models, _method_batches(models, [records[i::4] for i in range(4)])


def _smollm2_models(s: BenchSettings, data_dir: str | Path | None) -> tuple[dict[str, Any], dict[str, list[Batch]]]:
    """SmolLM2 with LoRA, the paper's M and T but where a method keeps its own (`Method.keeps`);
    a curriculum moves one stage (one more token removed) per step, so its batches span it."""
    from kava.data.datasets import load_dataset
    from kava.model.kava_model import KavaModel
    from kava.model.loading import smollm2_source

    records = load_dataset("gsm8k-aug", "valid", data_dir=data_dir, limit=4 * s.smollm2_batch).records
    models = {}
    for m in TRAIN_METHODS:
        lm, tok = smollm2_source().load()
        torch.manual_seed(0)
        over = {k: v for k, v in {"num_latents": s.smollm2_latents, "num_iterations": 3}.items()
                if k not in METHODS[m].keeps}
        if METHODS[m].knobs.get("curriculum", "none") != "none":
            over["stage_steps"] = 1
        models[m] = KavaModel(lm, tok, preset(m, **over))
    n = s.smollm2_batch
    return models, _method_batches(models, [records[i * n:(i + 1) * n] for i in range(4)])


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
    report = demo_dir / "report" / "summary.json"  # kava demo's report (kava.experiments.demo_preset)
    train_time = json.loads(report.read_text()).get("train_time_all_runs_s") if report.exists() else None
    return models, questions, train_time


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
        rounds = whole_rounds(rounds, len(TRAIN_METHODS))
        log(f"training steps: {name} model, {s.warmup} warm-up + {rounds} rounds of {', '.join(TRAIN_METHODS)} (rotating)")
        models, batches = build()
        times = time_training_steps(models, batches, rounds, s.warmup)
        steps = {m: [row["step"] for row in times[m]] for m in TRAIN_METHODS}
        report["training"][name] = {
            "rounds": rounds,
            "median_s": step_table(times),
            "kava_step_over_pccot_step": ratio_spread(steps["kava"], steps["pccot"]),
            "kava_step_over_cot_step": ratio_spread(steps["kava"], steps["cot"]),
            "step_over_cot_step": {m: ratio_spread(steps[m], steps["cot"]) for m in TRAIN_METHODS},
            "eviction_share_of_step": statistics.median(row["eviction"] / row["step"] for row in times["kava"]),
            "flagged_rounds": flagged_rounds(times, s.flag_sys_share),
            "rounds_detail": times,
        }
        del models

    log("inference: trained demo models, batch 32 and batch 1")
    models, questions, demo_train_time = _inference_models(demo)
    rounds = whole_rounds(s.inference_rounds, len(models))
    inference = {
        "batch32": time_inference(models, questions[:32], 32, rounds, s.warmup),
        "batch1": time_inference(models, questions[:s.batch1_questions], 1, rounds, s.warmup),
    }
    ratios = {}
    for key, suffix in (("batch32", ""), ("batch1", "_batch1")):
        rows = inference[key]
        ratios[f"kava_latency_over_cot{suffix}"] = ratio_spread(rows["kava"]["_latencies"], rows["cot"]["_latencies"])
        for row in rows.values():
            row["latency_s_per_round"] = row.pop("_latencies")
    report["inference"] = inference
    report["demo_train_time_s"] = demo_train_time
    demo_t, smol_t = report["training"]["demo"], report["training"]["smollm2"]
    report["ratios"] = {
        "kava_step_over_pccot_step": smol_t["kava_step_over_pccot_step"],
        "kava_step_over_pccot_step_demo": demo_t["kava_step_over_pccot_step"],
        "kava_step_over_cot_step": smol_t["kava_step_over_cot_step"],
        "kava_step_over_cot_step_demo": demo_t["kava_step_over_cot_step"],
        **ratios,
    }
    report.update({
        "eviction_share_of_step": max(t["eviction_share_of_step"] for t in report["training"].values()),
        "kava_forward_passes_over_cot": inference["batch32"]["kava"]["forward_passes"] / inference["batch32"]["cot"]["forward_passes"],
    })
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables (milliseconds), the flagged rounds and the ratios with their spread."""
    lines = []
    for name, t in report["training"].items():
        lines += [f"Training step, {name} model (median ms over {t['rounds']} rotated rounds; eviction "
                  f"{100 * t['eviction_share_of_step']:.1f} % of a kava step)", "",
                  "| method | " + " | ".join(STEP_PARTS) + " | step sys ms | step minor faults | step ÷ cot's (paired) |",
                  "|---" * (len(STEP_PARTS) + 4) + "|"]
        for m, row in t["median_s"].items():
            over_cot = t["step_over_cot_step"][m]["median"]
            lines.append(f"| {m} | " + " | ".join(f"{1000 * row[k]:.1f}" for k in STEP_PARTS)
                         + f" | {1000 * row['step_sys']:.1f} | {row['step_faults']:.0f} | {over_cot:.2f} |")
        flagged = t["flagged_rounds"]
        lines.append("")
        lines.append(f"Flagged rounds (system time > {100 * report['settings']['flag_sys_share']:.0f} % of the step): "
                     + ("none" if not flagged else "; ".join(
                         f"round {f['round']} {f['method']} (position {f['position']}: {f['minor_faults']} faults, "
                         f"{1000 * f['sys_s']:.0f} of {1000 * f['step_s']:.0f} ms in the kernel)" for f in flagged)))
        lines.append("")
    for key, rows in report["inference"].items():
        lines += [f"Inference, {key} (per question)", "",
                  "| mode | latency ms | forward passes | tokens | cache entries | sys ms per round (median) |",
                  "|---|---|---|---|---|---|"]
        for mode, row in rows.items():
            lines.append(f"| {mode} | {1000 * row['latency_s']:.2f} | {row['forward_passes']:.1f} | {row['tokens']:.1f} | "
                         f"{row['cache_entries']:.1f} | {1000 * statistics.median(row['sys_s_per_round']):.1f} |")
        lines.append("")
    lines += ["| ratio (paired median) | value | min – max over rounds | rounds |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['median']:.3f} | {v['min']:.3f} – {v['max']:.3f} | {v['rounds']} |" for k, v in report["ratios"].items()]
    lines += [f"| eviction_share_of_step | {report['eviction_share_of_step']:.3f} | | |",
              f"| kava_forward_passes_over_cot | {report['kava_forward_passes_over_cot']:.3f} | | |"]
    if report.get("demo_train_time_s"):
        lines.append(f"\nThe demo's training time, all runs (its report's summary.json): "
                     f"{report['demo_train_time_s'] / 60:.1f} min")
    return "\n".join(lines)
