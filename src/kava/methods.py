"""Every method kava trains, registered once: its preset and where it takes part.

A method's name is written once, here: the presets, the demo, the report's row order and the
bench all read it from `METHODS`, so a new baseline is one `register` call (here, or in a module
of its own imported before use). Imports nothing of kava's but the config error: `kava.config`,
which nearly every module imports, reads this registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kava.runtime.validation import ConfigError


@dataclass(frozen=True)
class Method:
    """One method: a row of the results table."""

    name: str
    # Its preset: the `KavaConfig` knobs it changes from the defaults (the paper's KaVa setting).
    knobs: dict[str, Any] = field(default_factory=dict)
    # Continues from the CoT model: the demo starts it from the CoT model of the same seed and gives
    # it the demo's latent recipe (M, T, α_CODI, key spaces, teacher trace) but for what it keeps; the
    # others train from scratch. Every method that trains the latent student, and iCoT.
    latent: bool = False
    # Knobs of the demo's latent recipe (num_latents, num_iterations, alpha_codi) the method keeps
    # from its preset because they define it: CODI its own M (its latents are sequential), pause T = 0 and no L_CODI.
    keeps: tuple[str, ...] = ()
    # Its place in tables, the report and the demo (lower first; ties in registration order).
    order: float = math.inf
    demo: bool = False  # trained by the default `kava demo`
    full_demo: bool = False  # trained by `kava demo --full`
    # `kava bench`: its place in the rounds (lower first; None: not benched), whether its training
    # step is timed, and the name its answers are timed under (None: they are not).
    bench: int | None = None
    bench_step: bool = False
    bench_answers: str | None = None


METHODS: dict[str, Method] = {}  # name → method, in registration order (the presets' order)


def register(method: Method) -> Method:
    """Add ``method`` to the registry; a name can be registered once."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def lookup(name: str) -> Method:
    """The registered method ``name``; a `ConfigError` naming the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method.preset: {name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]


def in_order() -> list[str]:
    """Every method's name in the tables' order (`Method.order`)."""
    return sorted(METHODS, key=lambda name: METHODS[name].order)


def demo_methods(full: bool = False) -> tuple[str, ...]:
    """The methods the default demo (or ``--full``) trains, in the tables' order."""
    return tuple(m for m in in_order() if (METHODS[m].full_demo if full else METHODS[m].demo))


def benched() -> list[Method]:
    """The methods `kava bench` times, in its order."""
    return sorted((m for m in METHODS.values() if m.bench is not None), key=lambda m: m.bench)


# Each preset is a row of the results table, trained in the same framework (docs/method.md §5).
register(Method("kava", latent=True, order=2, demo=True, full_demo=True, bench=0, bench_step=True,
                bench_answers="kava"))
register(Method("pccot", {"alpha_kv": 0.0}, latent=True, order=3, full_demo=True, bench=1, bench_step=True))
register(Method("codi", {"alpha_kv": 0.0, "latent_mode": "sequential", "num_latents": 6}, latent=True,
                keeps=("num_latents", "num_iterations"), order=4, full_demo=True, bench=2, bench_step=True))
register(Method("cot", {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_drop_last_step": False}, order=1,
                demo=True, full_demo=True, bench=3, bench_step=True, bench_answers="cot"))
register(Method("nocot", {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_uses_cot": False}, order=0,
                demo=True, full_demo=True, bench=4, bench_answers="direct"))
register(Method("pause", {"num_iterations": 0, "teacher_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0}, latent=True,
                keeps=("num_iterations", "alpha_codi"), order=5, full_demo=True))
# The curricula (kava.curricula): both continue from the CoT model, and keep their own M, T
# and α_CODI (iCoT has no student; Coconut's thoughts are K·c, its loss the student CE alone).
# The bench times each across its curriculum (`kava.benchmark.bench.curriculum_batches`); their
# answers are not timed: iCoT answers as No-CoT does, and Coconut's model is trained by `--full` only.
register(Method("icot", {"curriculum": "icot", "student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0,
                         "teacher_drop_last_step": False}, latent=True,
                keeps=("num_latents", "num_iterations", "alpha_codi"), order=6, full_demo=True, bench=5, bench_step=True))
register(Method("coconut", {"curriculum": "coconut", "teacher_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0,
                            "latent_mode": "sequential", "use_projection": False, "num_latents": 6}, latent=True,
                keeps=("num_latents", "num_iterations", "alpha_codi"), order=7, full_demo=True, bench=6, bench_step=True))
