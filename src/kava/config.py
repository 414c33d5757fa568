"""The method's configuration: every knob of ``method.md`` as one dataclass, plus named presets.

The config is saved next to each checkpoint (``kava_config.json``) so a trained model always
carries the exact method it was trained with; evaluation reads the inference mode from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kava.compression import EVICTIONS
from kava.losses import ELEMENTWISE

LATENT_MODES = ("jacobi", "sequential")
KEY_SPACES = ("post_rope", "pre_rope")
EVICTION_SCOPES = ("per_head", "shared")
FINETUNE = ("lora", "full")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ConfigError(ValueError):
    """An invalid option; the message names the option and the offending value."""


@dataclass
class KavaConfig:
    """Method knobs (method.md §2–§5). Defaults are the paper's KaVa setting."""

    method: str = "kava"
    # §3 student latents
    num_latents: int = 24  # M
    num_iterations: int = 3  # T (0 = pause tokens)
    latent_mode: str = "jacobi"  # one of LATENT_MODES
    use_projection: bool = True
    projection_dim: int | None = None  # d_p, defaults to the hidden size
    # Training only, when teacher and student both run. The student's `[bos] Q` is the teacher's
    # (same tokens, positions and weights), so by default the student runs just `<bot>` and its
    # latents on the teacher's question cache, which stays in the graph: the student losses train
    # it as its own pass would. False runs the student's own init pass over the question, as
    # inference does; the two differ only where dropout (LoRA dropout) draws different masks in
    # the teacher's and the student's pass over the question.
    student_shares_question_cache: bool = True
    # §2 sequences
    teacher_drop_last_step: bool = True
    teacher_uses_cot: bool = True  # False only for the No-CoT baseline
    answer_prompt: str = "The answer is:"
    use_chat_template: bool = False
    # §4 compression
    eviction: str = "rkv"  # a name of kava.compression.EVICTIONS
    eviction_lambda: float = 0.1
    # per_head (the paper): each layer and KV head keeps its own M entries, so latent slot m is
    # matched with a different CoT token in every head. shared: one set of M positions per example
    # (top-M of the score averaged over layers and heads), so slot m stands for one CoT token in
    # every layer and head — a consistent target a small student can learn (the CPU demo's choice).
    eviction_scope: str = "per_head"  # one of EVICTION_SCOPES
    kv_key_space: str = "post_rope"  # one of KEY_SPACES: the keys L_KV compares
    # The keys redundancy (eviction) compares: a knob of its own, so that matching pre-RoPE keys
    # does not silently change which entries are kept. The paper: post-RoPE for both.
    selection_key_space: str = "post_rope"  # one of KEY_SPACES
    # §5 losses
    student_ce: bool = True
    teacher_ce: bool = True
    alpha_codi: float = 10.0
    alpha_kv: float = 1.0
    codi_loss: str = "smooth_l1"  # a name of kava.losses.ELEMENTWISE
    kv_loss: str = "smooth_l1"
    kv_layerwise_std: bool = True
    # fine-tuning
    finetune: str = "lora"  # one of FINETUNE
    lora_r: int = 128
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    seed: int = 0  # only the `random` eviction draws from it
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the config

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        self.validate()

    # ---- derived behaviour -------------------------------------------------------------
    @property
    def uses_student(self) -> bool:
        """Whether the latent student runs in training (any student term has weight)."""
        return self.student_ce or self.alpha_codi > 0 or self.alpha_kv > 0

    @property
    def uses_teacher(self) -> bool:
        return self.teacher_ce or self.alpha_codi > 0 or self.alpha_kv > 0

    @property
    def shares_question_cache(self) -> bool:
        """Whether the student reuses the teacher's ``[bos] Q`` cache in training (both must run)."""
        return self.student_shares_question_cache and self.uses_teacher and self.uses_student

    @property
    def inference_mode(self) -> Literal["latent", "cot", "direct"]:
        """How a model trained with this config answers: latents, a written CoT, or directly."""
        if self.uses_student:
            return "latent"
        return "cot" if self.teacher_uses_cot else "direct"

    @property
    def lora_enabled(self) -> bool:
        return self.finetune == "lora"

    # ---- validation and (de)serialisation ----------------------------------------------
    def validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"option '{name}': {value!r} is not one of {', '.join(allowed)}")

        if not isinstance(self.num_latents, int) or self.num_latents < 1:
            raise ConfigError(f"option 'num_latents' (M) must be an integer >= 1, got {self.num_latents!r}")
        if not isinstance(self.num_iterations, int) or self.num_iterations < 0:
            raise ConfigError(f"option 'num_iterations' (T) must be an integer >= 0, got {self.num_iterations!r}")
        if not 0.0 <= float(self.eviction_lambda) <= 1.0:
            raise ConfigError(f"option 'eviction_lambda' (λ) must lie in [0, 1], got {self.eviction_lambda!r}")
        choice("eviction", tuple(EVICTIONS))
        choice("codi_loss", tuple(ELEMENTWISE))
        choice("kv_loss", tuple(ELEMENTWISE))
        choice("latent_mode", LATENT_MODES)
        choice("kv_key_space", KEY_SPACES)
        choice("selection_key_space", KEY_SPACES)
        choice("eviction_scope", EVICTION_SCOPES)
        choice("finetune", FINETUNE)
        for name in ("alpha_codi", "alpha_kv"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"option '{name}' must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.student_shares_question_cache, bool):
            raise ConfigError(
                f"option 'student_shares_question_cache' must be true or false, got {self.student_shares_question_cache!r}"
            )
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ConfigError(f"option 'projection_dim' must be >= 1, got {self.projection_dim!r}")
        if not self.answer_prompt.strip():
            raise ConfigError("option 'answer_prompt' is empty")
        if self.lora_r < 1:
            raise ConfigError(f"option 'lora_r' must be >= 1, got {self.lora_r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"option 'lora_dropout' must lie in [0, 1), got {self.lora_dropout!r}")
        if not (self.uses_student or self.uses_teacher):
            raise ConfigError("the configuration trains nothing: enable student_ce, teacher_ce or a distillation weight")
        if self.uses_student and not self.student_ce and self.alpha_kv == 0 and self.alpha_codi == 0:
            raise ConfigError("student enabled without any student loss")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KavaConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
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


# Each preset is a row of the results table, trained in the same framework (method.md §5).
PRESETS: dict[str, dict[str, Any]] = {
    "kava": {},
    "pccot": {"alpha_kv": 0.0},
    "codi": {"alpha_kv": 0.0, "latent_mode": "sequential", "num_latents": 6},
    "cot": {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_drop_last_step": False},
    "nocot": {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_uses_cot": False},
    "pause": {"num_iterations": 0, "teacher_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0},
}


def preset(name: str, **overrides: Any) -> KavaConfig:
    """The named method preset, with optional knob overrides applied on top."""
    if name not in PRESETS:
        raise ConfigError(f"unknown method preset {name!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(KavaConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    return KavaConfig(**{"method": name, **PRESETS[name], **overrides})
