"""Published reference numbers, so a report can set ours beside them.

The KaVa paper's GSM8k test accuracy (%), mean of 3 seeds (docs/method.md §9), and, for the tasks
where latents are necessary, the published cells of other papers (docs/method.md §13: Coconut's
Table 1 on ProsQA, iCoT's released models on multiplication). Transcribed once, here;
`tests/test_report_cli.py` reads both tables of docs/method.md and checks them against these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BACKBONES = ("Qwen2.5-0.5B", "Llama-3.2-1B", "Llama-3.2-3B")
DATA = {"gsm8k-aug": "AUG", "gsm8k-aug-nl": "AUG-NL"}  # kava's dataset name -> the paper's

# (backbone, data, method) -> accuracy %: the main table, docs/method.md §9.
MAIN: dict[tuple[str, str, str], float] = {
    ("Qwen2.5-0.5B", "AUG", "cot"): 50.6, ("Qwen2.5-0.5B", "AUG-NL", "cot"): 48.5,
    ("Qwen2.5-0.5B", "AUG", "codi"): 37.5, ("Qwen2.5-0.5B", "AUG-NL", "codi"): 20.2,
    ("Qwen2.5-0.5B", "AUG", "pccot"): 20.5, ("Qwen2.5-0.5B", "AUG-NL", "pccot"): 19.1,
    ("Qwen2.5-0.5B", "AUG", "kava"): 46.9, ("Qwen2.5-0.5B", "AUG-NL", "kava"): 44.4,
    ("Llama-3.2-1B", "AUG", "cot"): 63.4, ("Llama-3.2-1B", "AUG-NL", "cot"): 53.2,
    ("Llama-3.2-1B", "AUG", "codi"): 53.9, ("Llama-3.2-1B", "AUG-NL", "codi"): 50.1,
    ("Llama-3.2-1B", "AUG", "pccot"): 54.2, ("Llama-3.2-1B", "AUG-NL", "pccot"): 51.1,
    ("Llama-3.2-1B", "AUG", "kava"): 56.5, ("Llama-3.2-1B", "AUG-NL", "kava"): 55.7,
    ("Llama-3.2-3B", "AUG", "cot"): 73.2, ("Llama-3.2-3B", "AUG-NL", "cot"): 68.4,
    ("Llama-3.2-3B", "AUG", "codi"): 61.0, ("Llama-3.2-3B", "AUG-NL", "codi"): 55.9,
    ("Llama-3.2-3B", "AUG", "pccot"): 54.7, ("Llama-3.2-3B", "AUG-NL", "pccot"): 47.6,
    ("Llama-3.2-3B", "AUG", "kava"): 65.7, ("Llama-3.2-3B", "AUG-NL", "kava"): 60.0,
    ("Llama-3.2-1B", "AUG", "nocot"): 30.9, ("Llama-3.2-1B", "AUG-NL", "nocot"): 33.1,
    # iCoT and Coconut appear only in the paper's first version (Llama-3.2-1B; docs/method.md §9).
    ("Llama-3.2-1B", "AUG", "icot"): 19.0, ("Llama-3.2-1B", "AUG-NL", "icot"): 15.2,
    ("Llama-3.2-1B", "AUG", "coconut"): 45.3, ("Llama-3.2-1B", "AUG-NL", "coconut"): 27.2,
}

# KaVa ablations on Llama-3.2-1B, AUG: the one knob changed from the paper's recipe -> accuracy %.
ABLATIONS: dict[tuple[str, Any], float] = {
    ("alpha_codi", 0.0): 52.8,  # without L_CODI
    ("use_projection", False): 52.2,  # without projection
    ("teacher_drop_last_step", False): 51.2,  # teacher on all steps
    ("finetune", "full"): 7.0,  # full fine-tuning instead of LoRA
}


# (demo task's test set, method) -> accuracy %, for the tasks of docs/method.md §13. Other models
# than kava's tiny demo Llama (GPT-2), so a cell sits beside ours as the field's number, not a target
# the same model reached. Methods without a published cell (CODI, PCCoT, KaVa) have none.
TASKS: dict[tuple[str, str], float] = {
    # Coconut (Hao et al., arXiv 2412.06769 v2), Table 1, ProsQA column, GPT-2.
    ("prosqa test", "cot"): 77.5, ("prosqa test", "nocot"): 76.7, ("prosqa test", "icot"): 98.2,
    ("prosqa test", "pause"): 75.9, ("prosqa test", "coconut"): 97.0,
    # Stepwise internalization (Deng et al., arXiv 2405.14838), the authors' released GPT-2 small models.
    ("mult4 test", "icot"): 100.0, ("mult5 test", "icot"): 100.0,
}
TASK_SOURCES = {
    "prosqa test": "Coconut (Hao et al., arXiv 2412.06769 v2), Table 1, ProsQA, GPT-2",
    "mult4 test": "stepwise internalization (Deng et al., arXiv 2405.14838), released GPT-2 small model, 4×4",
    "mult5 test": "stepwise internalization (Deng et al., arXiv 2405.14838), released GPT-2 small model, 5×5",
}


def published_source(setting: Mapping[str, Any]) -> str:
    """Where a run's reference numbers come from, for the line under a report's table."""
    task = setting.get("eval_data")
    if task in TASK_SOURCES:
        return f"published accuracy: {TASK_SOURCES[task]} (docs/method.md §13); another model than ours."
    return "Paper accuracy: docs/method.md §9 (GSM8k test, mean of 3 seeds), where a row is a paper setting."


def backbone(model: str) -> str | None:
    """The paper's backbone a model source is (a hub id or a path ending in its name), else None;
    the instruct models of the paper, base names matched case-insensitively."""
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    for b in BACKBONES:
        if name.startswith(b.lower()):
            return b
    return None


def paper_accuracy(setting: Mapping[str, Any], method: str, knobs: Mapping[str, Any]) -> float | None:
    """The paper's accuracy (%) for a run, or None when the run is no paper setting.

    A run matches when it was evaluated on the full GSM8k test set, trained on GSM8k-AUG(-NL),
    from one of the paper's backbones, with a paper method and either no knob changed (the main
    table) or exactly one of the paper's KaVa ablations (Llama-3.2-1B, AUG); or when it is a demo
    task of docs/method.md §13 with a published cell for its method (no knob changed).
    """
    if setting.get("eval_data") in TASK_SOURCES:
        return None if knobs else TASKS.get((setting["eval_data"], method))
    if setting.get("eval_data") != "gsm8k" or setting.get("eval_split") not in (None, "test") or setting.get("eval_limit"):
        return None
    data, bb = DATA.get(setting.get("train_data", "")), backbone(str(setting.get("model", "")))
    if data is None or bb is None:
        return None
    if not knobs:
        return MAIN.get((bb, data, method))
    if method == "kava" and (bb, data) == ("Llama-3.2-1B", "AUG") and len(knobs) == 1:
        [(key, value)] = knobs.items()
        return ABLATIONS.get((key, value))
    return None
