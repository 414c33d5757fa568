"""The CPU demo: KaVa beside written chain of thought and a direct answer, trained from scratch.

Recipe (why each step):
1. A tiny Llama (4 layers, hidden 128, 2 KV heads; ~1M parameters) is trained **from scratch
   with full fine-tuning** — LoRA exists to keep a pretrained model's knowledge, and a random
   model has none to keep.
2. ``nocot`` and ``cot`` are trained from scratch on fresh synthetic problems each step.
3. The latent methods (``kava``; ``pccot``, ``codi``, ``pause``, ``icot``, ``coconut`` with ``--full``) start from the
   CoT model of the same seed and are trained with their own objective. This mirrors the paper,
   whose student starts from an instruct model that can already reason in text, and it is what
   makes the KV targets meaningful: a teacher that cannot write a CoT has no CoT cache to distil.
   Their compute is therefore the CoT run plus their own phase.
4. Every model is evaluated on the same fixed held-out test problems (settings were chosen on
   the separate validation split, never on the test split).
5. While training, every run is evaluated a few times on a fixed validation subset: its learning
   curve (validation accuracy against training time, evaluation excluded).

This module is the demo's backend: the settings (`DemoSettings`) and one run (`train_run`), on the
synthetic task (`kava.demo.task`) or, with ``DemoSettings.dataset`` (``kava demo --task``), on a
registered one (`kava.demo.dataset_tasks`: mult4, mult5, prosqa).
`kava demo` runs it as a preset grid of `kava sweep` (`kava.experiments.demo_preset`), which keeps
each run's record (``metrics.json``) and writes the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kava.config import KavaConfig, preset
from kava.data.records import Record
from kava.demo.task import SyntheticTask, TaskConfig
from kava.demo.tokenizer import UNK_ID, build_tokenizer, tiny_llama_config
from kava.methods import METHODS, demo_methods, lookup
from kava.model.card import write_card
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource
from kava.runtime.layout import RUN_CONFIG
from kava.runtime.outputs import as_json
from kava.runtime.stop import StoppedAfterSaving


DEMO_DATASET = "kava-demo-task"  # the data on the models' cards: kava.demo.task's synthetic GSM8k-AUG-like problems
TRACE_TOKENS = 30  # the demo task's longest trace, in the demo tokenizer's tokens (measured over 500 problems)


@dataclass
class DemoSettings:
    """Everything the demo runs; the defaults are the `kava demo` main job."""

    methods: tuple[str, ...] = field(default_factory=demo_methods)
    seeds: tuple[int, ...] = (0,)
    task: TaskConfig = field(default_factory=TaskConfig)
    # Per phase: nocot and cot train from scratch, "latent" methods fine-tune the CoT model.
    # Sized to the 10-minute budget on 2 cores. Two fresh-clone runs: 500 / 1200 / 1600 steps took
    # 10.2 min; 500 / 1000 / 1500 took 9.6 min, but CoT cut to 1000 steps had not converged (its
    # learning curve on validation: 52 % at the end, against 75 % for 1200 steps) and KaVa after it
    # ended at 30 % (34 % after the 1200-step CoT). So CoT keeps 1200 steps, and No-CoT, flat at
    # 2-6 % on its validation curve from 100 to 500 steps, gives 100 of its steps to the budget.
    # (benchmarks/studies/demo_recipe_search.jsonl holds every validation run.)
    steps: dict[str, int] = field(default_factory=lambda: {"nocot": 400, "cot": 1200, "latent": 1500})
    # Latent lr, validation split, 1600 KaVa steps after a 1500-step CoT: 2e-3 33.0 %, 1e-3 37.0 %,
    # 4e-3 worse (14.5 vs 19.5 % at 600 steps); with alpha_codi = 1: 2e-3 35.0, 1e-3 43.0, 5e-4 39.5 %.
    lr: dict[str, float] = field(default_factory=lambda: {"nocot": 3e-3, "cot": 3e-3, "latent": 1e-3})
    # α_CODI for every latent method with a CODI term (kava, pccot, codi). The paper's 10 makes
    # L_CODI ~85 % of KaVa's loss here and crowds out L_KV (0.292 vs its mean-target baseline 0.319
    # at lr 1e-3); at 1: L_KV 0.259 vs 0.331, KaVa 43.0 % vs 37.0 %, PCCoT 41.0 % vs 36.0 % (validation).
    alpha_codi: float = 1.0
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    num_latents: int = 8
    num_iterations: int = 3
    # The paper drops the trace's last step from the teacher (docs/method.md §2). Here that removes the
    # answer from the KV targets (the oracle in `kava demo-diagnose` reads 0-1.5 % from them), so
    # the demo keeps it: 35.5 % vs 16.5 % on the validation split after 6000 steps (digit tokens).
    teacher_drop_last_step: bool = False
    # Post-RoPE key targets (the paper's) ask latent slot m to reproduce the rotary phase of a
    # teacher position that differs per example; with the last step kept, matching pre-RoPE keys
    # reached 14.0 % vs 8.5 % after 2000 steps (validation split, digit tokens).
    kv_key_space: str = "pre_rope"
    test_size: int = 500
    eval_batch_size: int = 100
    save_every: int = 200  # checkpoint interval: an interrupted demo resumes from here
    # Learning curves: each run is evaluated every max_steps // curve_points steps and at its end
    # (curve_points = 0: never) on the first curve_valid_size validation questions. Evaluating does
    # not change what is trained (`run_identity` leaves these out), but a run's record holds its
    # curve, so a finished run is reused only with the curve settings it was recorded with.
    curve_points: int = 5
    curve_valid_size: int = 100
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    # KavaConfig knobs set on top of every latent method's config (a sweep's ablation variant,
    # e.g. {"eviction": "crop"}); empty for the demo itself, so its runs' identities are unchanged.
    method_overrides: dict[str, Any] = field(default_factory=dict)
    # The task: None is the synthetic word problems above (``task``); a name of
    # `kava.demo.dataset_tasks.DATASET_TASKS` (mult4, mult5, prosqa) trains and scores on that
    # registered dataset instead (``kava demo --task``), and ``task`` is then unused.
    dataset: str | None = None
    # The tiny Llama's shape: `MODEL_KNOBS` fields over `tiny_llama_config`'s (empty: its 4 layers,
    # width 128, ~1M parameters). On multiplication the published iCoT model that learns 4×4 is a
    # 2-layer, width-768 one (Bai et al. 2025); this is how a grid trains that shape here.
    model: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_model_knobs(self.model)

    @classmethod
    def full(cls) -> "DemoSettings":
        return cls(methods=demo_methods(full=True), seeds=(0, 1, 2))

    def long(self) -> "DemoSettings":
        """Every method trained far longer (about an hour for one seed), to show where each goes;
        10 learning-curve points per run instead of 5 (one every 1000 latent steps)."""
        return replace(self, steps={"nocot": 10000, "cot": 3000, "latent": 10000}, curve_points=10)

    def curriculum_knobs(self, curriculum: str) -> dict[str, int]:
        """A curriculum's schedule over the latent phase, as the curriculum sets it
        (`kava.curricula.Curriculum.demo_knobs`; Coconut: its stages share the phase equally; iCoT:
        the whole trace gone after 60 % of it). The synthetic task's traces are 20–30 tokens in 2–3
        steps; a dataset task's longest trace is measured on its records (`DatasetTask.trace_tokens`)."""
        from kava.curricula import lookup

        kind = lookup(curriculum)
        return {} if kind is None else kind.demo_knobs(self.steps["latent"], trace_tokens(self))

    def method_config(self, method: str) -> KavaConfig:
        """The method's preset, fully fine-tuned; a latent method's with the demo's latent recipe,
        but for the knobs it keeps (`Method.keeps`), and ``method_overrides`` on top."""
        over: dict[str, Any] = {"finetune": "full", "seed": 0}
        if lookup(method).latent:
            over.update(teacher_drop_last_step=self.teacher_drop_last_step, kv_key_space=self.kv_key_space,
                        selection_key_space=self.kv_key_space)
            recipe = {"alpha_codi": self.alpha_codi, "num_latents": self.num_latents, "num_iterations": self.num_iterations}
            over.update({k: v for k, v in recipe.items() if k not in METHODS[method].keeps})
            over.update(self.curriculum_knobs(METHODS[method].knobs.get("curriculum", "none")))
            over.update(self.method_overrides)
        return preset(method, **over)


def trace_tokens(s: DemoSettings) -> int:
    """The longest trace of the settings' task, in its tokenizer's tokens (iCoT's demo schedule)."""
    if s.dataset is None:
        return TRACE_TOKENS
    from kava.demo.dataset_tasks import dataset_task

    return dataset_task(s.dataset).trace_tokens


MODEL_KNOBS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


def check_model_knobs(model: dict[str, Any]) -> None:
    """ValueError (one line, naming the knob) unless ``model`` is a valid shape override of the tiny Llama."""
    if not isinstance(model, dict):
        raise ValueError(f"model: expected a mapping of {', '.join(MODEL_KNOBS)}, got {model!r}")
    for key, value in model.items():
        if key not in MODEL_KNOBS:
            raise ValueError(f"model.{key}: not a model knob; choose from {', '.join(MODEL_KNOBS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key}: expected a positive integer, got {value!r}")
    default = tiny_llama_config(UNK_ID + 1)  # the smallest vocabulary that holds the special ids
    shape = {k: getattr(default, k) for k in MODEL_KNOBS} | model
    width, heads, kv_heads = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    if width % heads or (width // heads) % 2:  # rotary embeddings need an even head width
        raise ValueError(f"model.hidden_size {width} is not an even multiple of num_attention_heads {heads} "
                         "(each head's width must be even)")
    if heads % kv_heads:
        raise ValueError(f"model.num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")


def demo_model(tokenizer, config: KavaConfig, seed: int, lm_state: dict[str, torch.Tensor] | None = None,
               shape: dict[str, int] | None = None) -> KavaModel:
    """A fresh tiny Llama (``shape``: `MODEL_KNOBS` overrides), or one holding ``lm_state`` (the CoT
    model's weights) before kava wraps it, so the new special-token rows start from the trained
    embeddings rather than random ones."""
    torch.manual_seed(seed)
    from transformers import LlamaForCausalLM

    lm_config = tiny_llama_config(len(tokenizer) + 3, **(shape or {}))
    lm = LlamaForCausalLM(lm_config)
    if lm_state is not None:
        lm.load_state_dict(lm_state)
    return KavaModel(lm, tokenizer, config, base_source=ModelSource("config", config=lm_config.to_dict()))


def engine_stream(task: SyntheticTask) -> Callable[[int, int], Iterator]:
    """The engine's record stream: fresh problems, reproducible from (seed, position)."""

    def stream(seed: int, start: int):
        it = task.train_stream(seed)
        for _ in range(start):
            next(it)
        return it

    return stream


CURVE_METRIC = "valid_accuracy"  # the eval_fn value a learning curve plots


def _curve_eval(s: DemoSettings, valid: Sequence[Record]) -> Callable[[KavaModel], dict[str, float]]:
    """The engine's ``eval_fn`` of a learning curve: accuracy on the validation subset."""
    from kava.evaluation.evaluate import evaluate

    def eval_fn(model: KavaModel) -> dict[str, float]:
        return {CURVE_METRIC: evaluate(model, valid, batch_size=s.eval_batch_size, progress=False).summary["accuracy"]}

    return eval_fn


def _timings(history: list[dict[str, float]]) -> dict[str, Any]:
    """A run's training time, its learning curve and what the curve's evaluations cost, from its history.

    Training time sums the steps' own times (``step_time_s``): evaluation does not count, and a
    resumed run counts its steps from before the interruption too. Each evaluation is a point
    {step, train_time_s (so far), accuracy}.
    """
    elapsed, curve = 0.0, []
    for entry in history:
        elapsed += entry["step_time_s"]
        if f"eval/{CURVE_METRIC}" in entry:
            curve.append({"step": entry["step"], "train_time_s": elapsed, "accuracy": entry[f"eval/{CURVE_METRIC}"]})
    return {"train_time_s": elapsed, "curve": curve,
            "curve_eval_time_s": sum(entry.get("eval_time_s", 0.0) for entry in history)}


def trained_task(run_dir: str | Path) -> TaskConfig:
    """The task a demo run was trained on, from the configuration its folder records."""
    path = Path(run_dir) / RUN_CONFIG
    try:
        settings = json.loads(path.read_text())["settings"]
        task = settings["task"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} missing: {run_dir} is not a demo run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} does not record the demo task ({type(e).__name__}: {e})") from None
    if settings.get("dataset") is not None:
        raise ValueError(f"{run_dir} was trained on the dataset {settings['dataset']!r}, not the synthetic task")
    return TaskConfig(**task)


@dataclass
class DemoData:
    """What every run of one demo shares: the task, its fixed test set, the training stream and
    the learning curve's evaluation (None without curves), the tokenizer and the data's name on
    the models' cards. Built once, not once per run. ``task`` is the synthetic task, or None for a
    dataset task (`kava.demo.dataset_tasks`)."""

    task: SyntheticTask | None
    test: list[Record]
    stream: Callable[[int, int], Iterator]
    curve_eval: Callable[[KavaModel], dict[str, float]] | None
    tokenizer: Callable[[], Any] = build_tokenizer  # a fresh one per model (kava adds its special tokens to it)
    dataset: str = DEMO_DATASET

    @classmethod
    def build(cls, s: DemoSettings) -> "DemoData":
        if s.dataset is not None:
            from kava.demo.dataset_tasks import dataset_task

            source = dataset_task(s.dataset)
            curve_eval = _curve_eval(s, source.valid_set(s.curve_valid_size)) if s.curve_points else None
            return cls(None, source.test_set(s.test_size), source.stream(), curve_eval, source.new_tokenizer, s.dataset)
        task = SyntheticTask(s.task)
        curve_eval = _curve_eval(s, task.valid_set(s.curve_valid_size)) if s.curve_points else None
        return cls(task, task.test_set(s.test_size), engine_stream(task), curve_eval)


def phase_of(method: str) -> str:
    """The training phase whose steps and lr a method's demo run uses: nocot, cot or latent."""
    return "latent" if METHODS[method].latent else method


def train_config(s: DemoSettings, method: str, seed: int):
    """The engine settings of one demo run (its phase's steps and lr)."""
    from kava.training.run_config import TrainConfig

    phase = phase_of(method)
    return TrainConfig(
        batch_size=s.batch_size, micro_batch_size=s.batch_size, max_steps=s.steps[phase], lr=s.lr[phase],
        weight_decay=s.weight_decay, warmup_ratio=s.warmup_ratio, seed=seed, cpu=True,
        save_every=s.save_every, keep_last=1, report_to=(),
    )


def run_identity(s: DemoSettings, method: str, seed: int) -> dict[str, Any]:
    """What a run of (method, seed) under ``s`` trains: its method config, engine settings and task.
    Two settings that give one identity train the same model (a sweep checks a latent run's CoT
    model by it)."""
    from kava.training.engine import plain_config

    return as_json({"method": s.method_config(method).to_dict(), "train": plain_config(train_config(s, method, seed)),
                    "task": asdict(s.task), **({"dataset": s.dataset} if s.dataset is not None else {}),
                    **({"model": s.model} if s.model else {})})


def train_run(run_dir: str | Path, s: DemoSettings, method: str, seed: int, data: DemoData, *,
              cot_model: KavaModel | None = None, evaluate_test: bool = True, resume: bool = False,
              progress: bool = True) -> tuple[dict[str, Any], KavaModel]:
    """Train (and evaluate on the test set) one demo run; returns what it measured and the model.

    One (method, seed) of the demo base of `kava sweep` (which `kava demo` runs as a preset grid):
    the sweep decides whether a run is finished and records the result. Latent methods start from
    ``cot_model`` (the CoT model of the same seed). With ``resume`` an interrupted run continues
    from its last checkpoint. The result: ``train_time_s``, the learning ``curve`` and what its
    evaluations cost, and the test ``summary`` (None without ``evaluate_test``).
    """
    from kava.training.engine import train

    run_dir = Path(run_dir)
    latent = METHODS[method].latent
    if latent and cot_model is None:
        raise ValueError(f"{method} starts from the CoT model of seed {seed}: train or load it first")
    cfg = train_config(s, method, seed)
    init = cot_model.lm.state_dict() if latent else None
    model = demo_model(data.tokenizer(), s.method_config(method), seed, init, s.model)
    print(f"[seed {seed}] training {method} for {cfg.max_steps} steps", flush=True)
    # Evaluating does not change the trained model: the curve's cadence stays out of the run's identity.
    curve_cfg = replace(cfg, eval_every=max(1, cfg.max_steps // s.curve_points)) if data.curve_eval else cfg
    result = train(model, data.stream, curve_cfg, output_dir=run_dir, eval_fn=data.curve_eval, resume=resume,
                   progress=progress, dataset=data.dataset)
    if result.interrupted:
        raise StoppedAfterSaving(f"stopped while training {method}; checkpoint in {result.checkpoint}")
    record: dict[str, Any] = {**_timings(result.history), "summary": None}
    if evaluate_test:
        record["summary"] = score_run(run_dir, s, data, model, progress=progress)
    return record, model


def score_run(run_dir: str | Path, s: DemoSettings, data: DemoData, model: KavaModel | None = None, *,
              progress: bool = True) -> dict[str, Any]:
    """Score a trained demo run on its test set: predictions in ``<run>/eval/``, the result on its
    final model's card; returns the summary. Without ``model`` the run's ``final/`` model is loaded,
    so a finished run is re-scored on another test set without training again (`kava sweep`)."""
    from kava.evaluation.evaluate import evaluate, write_results
    from kava.runtime.layout import FINAL

    final = Path(run_dir) / FINAL
    if model is None:
        if not final.is_dir():
            raise FileNotFoundError(f"{final}: the run's final model is missing, so it cannot be scored again")
        model = KavaModel.from_pretrained(final)
    ev = evaluate(model, data.test, batch_size=s.eval_batch_size, progress=progress)
    write_results(ev, Path(run_dir) / "eval")
    # A dataset task's test set cut to test_size is a limited evaluation (the synthetic task's is whole).
    write_card(final, result={**ev.summary, "dataset": data.dataset, "split": "test",
                              "limit": s.test_size if s.dataset is not None else None})
    return ev.summary
