"""The method's configuration: every knob of ``docs/method.md`` as one dataclass, plus named presets.

The config is saved next to each checkpoint (``kava_config.json``) so a trained model always
carries the exact method it was trained with; evaluation reads the inference mode from it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from kava import curricula
from kava.compression import EVICTIONS
from kava.losses import ELEMENTWISE, TERMS, term_on
from kava.methods import METHODS, lookup
from kava.runtime.validation import Bool, ConfigError, Int, Number, config_class, one_of

LATENT_MODES = ("jacobi", "sequential")
CE_AVERAGES = ("example", "token")


def _rows_init(value: str) -> str:
    if value != "mean" and not (value.startswith("copy:") and value[len("copy:"):]):
        raise ValueError(f"expected mean or copy:<token text>, got {value!r}")
    return value
KEY_SPACES = ("post_rope", "pre_rope")
EVICTION_SCOPES = ("per_head", "shared")
SNAPKV_POOLINGS = ("avgpool", "maxpool")
FINETUNE = ("lora", "full")
LORA_DROPOUT_MASKS = ("per_adapter", "per_input")
CURRICULA = curricula.CHOICES  # "none" and every registered curriculum (kava.curricula)
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("is empty")
    return text


@config_class("method")
class KavaConfig:
    """Method knobs (docs/method.md §2–§5). Defaults are the paper's KaVa setting."""

    method: str = Field("kava", description="the method's name, set by the preset (kava.methods); it names the method in checkpoints and reports")
    # §3 student latents
    num_latents: Int = Field(24, ge=1, title="M", description="latent tokens the student reasons in, and compressed cache entries per layer and head")
    num_iterations: Int = Field(3, ge=0, title="T", description="Jacobi refinements of the latents; 0 = pause tokens")
    latent_mode: Annotated[str, one_of(LATENT_MODES)] = Field(
        "jacobi", description="jacobi: all M latents refined T times in parallel (PCCoT); sequential: one after another (Coconut)")
    use_projection: Bool = Field(True, description="map a latent's last hidden state through the projection before feeding it back")
    projection_dim: Int | None = Field(None, ge=1, title="d_p", description="the projection's inner width; null: the hidden size")
    # Training only, when teacher and student both run. The student's `[bos] Q` is the teacher's
    # (same tokens, positions and weights), so by default the student runs just `<bot>` and its
    # latents on the teacher's question cache, which stays in the graph: the student losses train
    # it as its own pass would. False runs the student's own init pass over the question, as
    # inference does; the two differ only where dropout (LoRA dropout) draws different masks in
    # the teacher's and the student's pass over the question.
    student_shares_question_cache: Bool = Field(True, description="training: the student runs on the teacher's [bos] Q cache instead of its own pass")
    # Training only. The paper's teacher pass is a training-mode forward, so LoRA dropout draws
    # new masks into it and the kept entries and CODI/KV targets change from pass to pass (8 of 12
    # selections differed between two passes over one batch). False runs the teacher pass without
    # dropout: deterministic targets, and a teacher CE (and a shared question cache) without
    # dropout too. It holds under gradient checkpointing (the replay keeps the pass's modes).
    teacher_dropout: Bool = Field(True, description="training: LoRA dropout is on in the teacher's pass (the paper); false: deterministic targets")
    # §2 sequences
    teacher_drop_last_step: Bool = Field(True, description="the teacher's trace leaves out its last step (it holds the answer)")
    teacher_uses_cot: Bool = Field(True, description="the teacher reads the trace; false only for the No-CoT baseline")
    answer_prompt: Annotated[str, AfterValidator(_not_blank)] = Field(
        "The answer is:", description="the text between the reasoning and the answer, in training and inference")
    use_chat_template: Bool = Field(False, description="wrap the question in the tokenizer's chat template")
    # §4 compression
    eviction: Annotated[str, one_of(EVICTIONS)] = Field("rkv", description="how the teacher's trace cache is cut to M entries (docs/method.md §4)")
    eviction_lambda: Number = Field(0.1, ge=0, le=1, title="λ", description="weight of importance against redundancy in the rkv score")
    # per_head (the paper): each layer and KV head keeps its own M entries, so latent slot m is
    # matched with a different CoT token in every head. shared: one set of M positions per example
    # (top-M of the score averaged over layers and heads), so slot m stands for one CoT token in
    # every layer and head — a consistent target a small student might learn more easily (a knob
    # of the ablation grid; the demo keeps per_head).
    eviction_scope: Annotated[str, one_of(EVICTION_SCOPES)] = Field(
        "per_head", description="per_head: each layer and KV head keeps its own entries (the paper); shared: one set per example")
    # The published rules of the eviction table (docs/method.md §4), with their references' defaults.
    # Their observation window is the teacher's last answer rows, their "recent" tokens the last
    # CoT entries, their sinks the first ones.
    rkv_window: Int = Field(8, ge=1, description="rkv-official: the last answer rows whose attention scores the trace (R-KV window_size)")
    rkv_recent: Int = Field(8, ge=0, description="rkv-official: the last CoT entries always kept (R-KV keeps its window_size most recent tokens); below num_latents")
    rkv_kernel: Int = Field(7, ge=1, description="rkv-official: max-pool kernel along the trace, odd (R-KV kernel_size)")
    rkv_threshold: Number = Field(0.5, ge=-1, le=1, description="rkv-official: the cosine above which R-KV zeroes a row's last similar key (cal_similarity)")
    snapkv_window: Int = Field(32, ge=1, description="snapkv: the last answer rows whose attention is summed (SnapKV window_size)")
    snapkv_kernel: Int = Field(5, ge=1, description="snapkv: pooling kernel along the trace, odd (SnapKV kernel_size)")
    snapkv_pooling: Annotated[str, one_of(SNAPKV_POOLINGS)] = Field("avgpool", description="snapkv: avgpool or maxpool (SnapKV pooling)")
    h2o_heavy_ratio: Number = Field(0.5, ge=0, le=1, description="h2o: the share int(M·ratio) of the M slots for heavy hitters; the rest keep the most recent CoT entries (H2O's runs split equally)")
    streamingllm_sinks: Int = Field(4, ge=0, description="streamingllm: the first CoT entries kept as attention sinks, at most num_latents (StreamingLLM start_size)")
    kv_key_space: Annotated[str, one_of(KEY_SPACES)] = Field("post_rope", description="the keys L_KV compares")
    # A knob of its own, so that matching pre-RoPE keys does not silently change which entries are
    # kept. The paper: post-RoPE for both.
    selection_key_space: Annotated[str, one_of(KEY_SPACES)] = Field(
        "post_rope", description="the keys the eviction's redundancy term compares")
    # §5 losses
    student_ce: Bool = Field(True, description="train the student's answer CE (L_S)")
    # example: a short answer weighs as much as a long trace, and an example's term does not depend
    # on its batch mates (tested). token: the official Coconut / iCoT / CODI code's loss, torch's
    # CrossEntropyLoss mean over every target token of the micro-batch (coconut.py).
    ce_average: Annotated[str, one_of(CE_AVERAGES)] = Field(
        "example", description="the CEs' batch mean: example (each example's token mean, then their mean) or token (over every target token, as the official codes)")
    teacher_ce: Bool = Field(True, description="train the teacher's trace-and-answer CE (L_T)")
    alpha_codi: Number = Field(10.0, ge=0, title="α1", description="weight of the hidden-state distillation L_CODI; 0 skips it")
    alpha_kv: Number = Field(1.0, ge=0, title="α2", description="weight of the compressed-cache distillation L_KV; 0 skips it")
    codi_loss: Annotated[str, one_of(ELEMENTWISE)] = Field("smooth_l1", description="the elementwise loss of L_CODI")
    kv_loss: Annotated[str, one_of(ELEMENTWISE)] = Field("smooth_l1", description="the elementwise loss of L_KV")
    kv_layerwise_std: Bool = Field(True, description="normalise L_CODI and L_KV per layer by the teacher's standard deviation")
    # Curricula (kava.curricula). Coconut: at stage k the first k trace steps become k·c
    # continuous thoughts, the rest stays text (the official GSM8k run: c = 2, K = 3, 3 epochs a
    # stage). iCoT: one more trace token removed from the front each stage (the official GSM8k run:
    # Δ = 8 tokens an epoch, λ = 4, everything from 39 on). Both reset the optimizer when a stage
    # starts, as their papers do.
    curriculum: Annotated[str, one_of(CURRICULA)] = Field("none", description="a staged curriculum (coconut, icot); none for every other method")
    stage_steps: Int = Field(0, ge=0, description="optimizer steps per curriculum stage; > 0 with a curriculum (set by the run)")
    reset_optimizer_per_stage: Bool = Field(True, description="a fresh optimizer when a curriculum stage starts")
    thoughts_per_step: Int = Field(2, ge=1, title="c", description="Coconut: continuous thoughts that replace one trace step")
    max_stage: Int = Field(3, ge=1, title="K", description="Coconut: the last stage, where every step is replaced")
    start_stage: Int = Field(1, ge=0, description="Coconut: the first stage trained; 0 trains the CoT stage too (kava starts from a CoT model)")
    removal_smoothing: Number | None = Field(4.0, gt=0, title="λ", description="iCoT: extra tokens removed with P(o) ∝ exp(−λ·o); null: no smoothing")
    remove_all_at: Int | None = Field(None, ge=1, description="iCoT: the removal count from which the whole trace goes; null: never at once")
    # fine-tuning
    finetune: Annotated[str, one_of(FINETUNE)] = Field("lora", description="lora: PEFT LoRA adapters; full: every weight trains")
    lora_r: Int = Field(128, ge=1, description="LoRA rank")
    lora_alpha: Int = Field(32, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: Number = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input")
    # per_adapter (PEFT): every adapted layer draws its own mask. per_input: layers reading the same
    # tensor share one (q/k/v, gate/up), 4 draws per block instead of 7 — cheaper on a CPU, but
    # correlated noise (kava.model.lora_dropout; docs/performance.md).
    lora_dropout_masks: Annotated[str, one_of(LORA_DROPOUT_MASKS)] = Field(
        "per_adapter", description="per_adapter: each adapted layer draws its own mask (PEFT); per_input: layers reading one tensor share it")
    lora_targets: tuple[str, ...] = Field(DEFAULT_LORA_TARGETS, description="module names that get LoRA adapters")
    # mean: in-distribution and distinct rows. copy:<text>: official Coconut (run.py) starts
    # <|latent|>, <|start-latent|> and <|end-latent|> as copies of the row of "<<".
    new_rows_init: Annotated[str, AfterValidator(_rows_init)] = Field(
        "mean", description="the new tokens' rows: mean (the mean embedding plus seeded noise) or copy:<text> (each a copy of that single token's row, as official Coconut's copy:<<)")
    seed: Int = Field(0, description="draws the new token rows' initialisation, the random eviction and iCoT's removal smoothing")
    extra: dict[str, Any] = Field(default_factory=dict, description="free-form notes saved with the config")

    def __post_init__(self) -> None:
        """The checks that span knobs (the single-knob ones sit on the fields)."""
        if not (self.uses_student or self.uses_teacher):
            raise ConfigError("method: the configuration trains nothing: enable student_ce, teacher_ce or a distillation weight")
        curriculum = curricula.lookup(self.curriculum)
        if curriculum is not None:
            curriculum.check_config(self)
        self._check_eviction_rule()

    def _check_eviction_rule(self) -> None:
        """The references' own constraints, checked where the chosen rule reads the knob."""
        for name in ("rkv_kernel", "snapkv_kernel"):
            if getattr(self, name) % 2 == 0:  # padding kernel // 2 keeps the length only for odd kernels
                raise ConfigError(f"method.{name}: must be odd, got {getattr(self, name)}")
        if self.eviction == "rkv-official" and self.rkv_recent >= self.num_latents:
            raise ConfigError(f"method.rkv_recent: R-KV keeps fewer recent entries than its budget (num_latents "
                              f"{self.num_latents}), got {self.rkv_recent}")
        if self.eviction == "streamingllm" and self.streamingllm_sinks > self.num_latents:
            raise ConfigError(f"method.streamingllm_sinks: at most num_latents ({self.num_latents}), got {self.streamingllm_sinks}")

    # ---- derived behaviour -------------------------------------------------------------
    def _runs(self, loss_pass: str) -> bool:
        """Whether a trained loss term (`kava.losses.TERMS`) that needs ``loss_pass`` has weight."""
        return any(term_on(name, self) for name, t in TERMS.items() if t.weight and loss_pass in t.passes)

    @property
    def uses_student(self) -> bool:
        """Whether the latent student runs in training (any student term has weight)."""
        return self._runs("student")

    @property
    def uses_teacher(self) -> bool:
        return self._runs("teacher")

    @property
    def shares_question_cache(self) -> bool:
        """Whether the student reuses the teacher's ``[bos] Q`` cache in training (both must run)."""
        return self.student_shares_question_cache and self.uses_teacher and self.uses_student

    @property
    def inference_mode(self) -> Literal["latent", "cot", "direct"]:
        """How a model trained with this config answers: latents, a written CoT, or directly (a
        curriculum may change it: iCoT's model has no trace left to write)."""
        mode = "latent" if self.uses_student else "cot" if self.teacher_uses_cot else "direct"
        curriculum = curricula.lookup(self.curriculum)
        return mode if curriculum is None else curriculum.answer_mode(self, mode)

    def curriculum_schedule(self) -> curricula.Curriculum | None:
        """The curriculum's schedule under this config (`kava.curricula`); None without one. Training
        asks for it first, so a run without ``stage_steps`` stops before its first step."""
        curriculum = curricula.lookup(self.curriculum)
        if curriculum is None:
            return None
        if self.stage_steps < 1:
            raise ConfigError(f"method.stage_steps: the {self.curriculum} curriculum needs the optimizer steps per stage "
                              f"(> 0), got {self.stage_steps}")
        return curriculum.from_config(self)

    @property
    def lora_enabled(self) -> bool:
        return self.finetune == "lora"

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KavaConfig":
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "KavaConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "KavaConfig":
        return dataclasses.replace(self, **changes)


class _Presets(Mapping[str, Mapping[str, Any]]):
    """name → its preset's knobs, read from the registry each time (a method registered later is in it)."""

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return METHODS[name].knobs

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)


PRESETS: Mapping[str, Mapping[str, Any]] = _Presets()  # the presets of `kava.methods.METHODS`


def preset(name: str, **overrides: Any) -> KavaConfig:
    """The named method preset, with optional knob overrides applied on top."""
    return KavaConfig(**{"method": name, **lookup(name).knobs, **overrides})
