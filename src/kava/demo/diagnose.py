"""Why the demo's latents help or not: diagnostics on a finished ``kava demo`` folder.

For one seed, on the validation split (the test split stays untouched):

- **Latent ablation** of the trained KaVa model: accuracy with its latents, with the projected
  latent inputs set to zero, and with them taken from another question of the batch. If the
  answer does not change, it is read without the latents.
- **Teacher-cache oracle** (`kava.evaluation.oracle`) for the CoT model the KaVa run started
  from (in KaVa's config, exactly as the run wrapped it) and for the trained KaVa model: the
  compressed targets as configured, the same with the last CoT step kept, and with nothing
  evicted (the model answering after the gold trace). These bound what KV distillation could
  give: a perfect match of the latents to the targets yields the first of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from kava.demo.run import demo_model, trained_task
from kava.demo.task import SyntheticTask
from kava.demo.tokenizer import build_tokenizer
from kava.evaluation.evaluate import evaluate
from kava.evaluation.oracle import teacher_cache_oracle
from kava.model.kava_model import KavaModel


@contextmanager
def latent_inputs(model: KavaModel, how: Literal["zero", "other_question"]) -> Iterator[None]:
    """Replace what the projection feeds the latent slots, for the duration of the block.

    ``zero``: every projected latent input (and the first slot's, from ``<bot>``) is zero, so no
    question information enters through them. ``other_question``: each example receives the
    projected inputs computed for the next example of the batch (a batch of one is refused).
    """
    proj = model.projection
    if proj is None:
        raise ValueError("latent ablation needs a model with the projection φ (use_projection: true)")
    original = proj.forward

    def zero(h: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(original(h))

    def other_question(h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] < 2:
            raise ValueError("latents from another question need batches of at least two questions")
        return original(h).roll(1, dims=0)

    proj.forward = {"zero": zero, "other_question": other_question}[how]
    try:
        yield
    finally:
        proj.forward = original


def diagnose(out_dir: str | Path, *, seed: int = 0, questions: int = 200, batch_size: int = 100) -> dict[str, Any]:
    """Run every diagnostic for `seed` of the demo in `out_dir`; write and return diagnostics.json."""
    runs = Path(out_dir) / "runs"
    paths = {m: runs / f"{m}-seed{seed}" / "final" for m in ("cot", "kava")}
    for method, path in paths.items():
        if not (path / "kava_config.json").exists():
            raise FileNotFoundError(f"no trained {method} model for seed {seed} at {path}: run `kava demo --out {out_dir}` first")
    valid = SyntheticTask(trained_task(paths["kava"].parent)).valid_set(questions)
    kava = KavaModel.from_pretrained(paths["kava"])
    cot_lm = KavaModel.from_pretrained(paths["cot"]).lm.state_dict()
    cot_as_kava = demo_model(build_tokenizer(), kava.config, seed, cot_lm)

    def accuracy() -> float:
        return evaluate(kava, valid, batch_size=batch_size, progress=False).summary["accuracy"]

    result: dict[str, Any] = {"seed": seed, "validation_questions": len(valid), "latent_ablation": {}, "oracle": {}}
    result["latent_ablation"]["as_trained"] = accuracy()
    for how in ("zero", "other_question"):
        with latent_inputs(kava, how):
            result["latent_ablation"][how] = accuracy()
    # M = the longest trace: every CoT entry is kept, and the cache holds no more slots than that.
    every = max(len(kava.builder.cot_ids(r.steps, drop_last=False)) for r in valid)
    variants = {
        "targets_as_trained": {},
        "last_step_kept": {"teacher_drop_last_step": False},
        "nothing_evicted": {"num_latents": every},
        "nothing_evicted_last_step_kept": {"num_latents": every, "teacher_drop_last_step": False},
    }
    for name, model in (("cot_model", cot_as_kava), ("kava_model", kava)):
        result["oracle"][name] = {
            v: teacher_cache_oracle(model, valid, batch_size=batch_size, overrides=o).accuracy
            for v, o in variants.items()
        }
    (Path(out_dir) / f"diagnostics-seed{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_diagnostics(result: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    ab = result["latent_ablation"]
    lines = [
        f"seed {result['seed']}, {result['validation_questions']} validation questions (accuracy %)",
        "",
        "KaVa latent ablation: as trained {} | latent inputs zeroed {} | from another question {}".format(
            pct(ab["as_trained"]), pct(ab["zero"]), pct(ab["other_question"])),
        "",
        "| teacher-cache oracle | " + " | ".join(result["oracle"]["cot_model"]) + " |",
        "|---" * (1 + len(result["oracle"]["cot_model"])) + "|",
    ]
    for model, row in result["oracle"].items():
        lines.append(f"| {model} | " + " | ".join(pct(v) for v in row.values()) + " |")
    return "\n".join(lines)
