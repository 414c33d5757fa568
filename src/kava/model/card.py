"""The model card (``README.md``) of a kava model folder: what a Hub user reads first.

PEFT writes an empty template ("# Model Card for Model ID … [More Information Needed]") next to
every adapter; a kava folder gets a real card instead, rendered from what the folder knows:

- its method config (``kava_config.json``) and base record (``base_model.json``);
- the facts of its training run (steps, samples, optimiser settings, data, time), given by the
  training engine when it writes ``final/``;
- the results of every ``kava eval`` run on it, added as each evaluation finishes.

The facts and results are kept in ``kava_card.json`` beside the card, so the card is re-rendered,
never edited: an evaluation adds its row and the whole card is written again. The front matter
is Hugging Face's (``huggingface_hub.ModelCardData``: base_model, library_name, license, tags,
datasets and a model-index with the results), so the Hub shows the model's metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kava.config import KavaConfig
from kava.data.datasets import hub_repo
from kava.model.loading import BASE_FILE
from kava.runtime.outputs import write_atomic

CARD_FILE = "README.md"
FACTS_FILE = "kava_card.json"
CONFIG_FILE = "kava_config.json"  # persistence.CONFIG_FILE (persistence imports this module)

# Hub ids of the base models kava names by a short name, and the licenses of the families kava's
# configs train (from each model's Hub page). A base not listed here gets license "other" and a
# line asking the user to check it: a card must not claim a license it does not know.
NAMED_BASES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = {
    "HuggingFaceTB/SmolLM2": "apache-2.0",
    "meta-llama/Llama-3.2": "llama3.2",
    "meta-llama/Llama-3.1": "llama3.1",
    "meta-llama/Meta-Llama-3": "llama3",
    "Qwen/Qwen2.5-3B": "other",  # the Qwen Research license
    "Qwen/Qwen2.5": "apache-2.0",
    "mistralai/Mistral-7B": "apache-2.0",
}
MODE_TEXT = {
    "latent": "reasons in {M} continuous latent tokens refined over {T} Jacobi iterations, then writes the answer",
    "cot": "writes its chain of thought, then the answer",
    "direct": "writes the answer directly, without a chain of thought",
}


def base_hub_id(base: dict[str, Any]) -> str | None:
    """The Hub id of a folder's base model, None when it has none (a random or local base)."""
    if base.get("kind") == "hub":
        return base["path"]
    return NAMED_BASES.get(base.get("kind", ""))


def base_license(hub_id: str | None) -> str | None:
    """The base family's license from `LICENSES`, None when kava does not know it."""
    for prefix, license_id in LICENSES.items():
        if hub_id and hub_id.startswith(prefix):
            return license_id
    return None


def read_facts(directory: Path) -> dict[str, Any]:
    """The training facts and evaluation results recorded in a model folder (empty when none)."""
    path = Path(directory) / FACTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(directory: str | Path, *, training: dict[str, Any] | None = None,
               result: dict[str, Any] | None = None, inherit: str | Path | None = None) -> Path:
    """(Re)write ``README.md`` and ``kava_card.json`` in a model folder and return the card's path.

    ``training`` replaces the recorded training facts; ``result`` (a ``kava eval`` summary with its
    run info) replaces the recorded result for the same dataset, split and mode, or is added;
    ``inherit`` copies another folder's facts and results first (an export keeps its source's).
    """
    d = Path(directory)
    facts = read_facts(Path(inherit)) if inherit is not None else read_facts(d)
    if training is not None:
        facts["training"] = training
    if result is not None:
        row = _result_row(result)
        key = (row["dataset"], row.get("split"), row.get("mode"))
        kept = [r for r in facts.get("results", []) if (r.get("dataset"), r.get("split"), r.get("mode")) != key]
        facts["results"] = [*kept, row]
    write_atomic(d / FACTS_FILE, json.dumps(facts, indent=2) + "\n")  # a failed write keeps the old files
    card = d / CARD_FILE
    write_atomic(card, render(KavaConfig.load(d / CONFIG_FILE), _read_base(d), facts, exported=(d / "config.json").is_file()))
    return card


def _read_base(d: Path) -> dict[str, Any]:
    path = d / BASE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _library(cfg: KavaConfig, exported: bool) -> str:
    """What loads the folder's weights outside kava: 🤗 transformers for an export (config.json and
    merged weights), PEFT for an adapter; a full fine-tune without config.json needs kava."""
    if exported:
        return "transformers"
    return "peft" if cfg.lora_enabled else "kava"


def _result_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The card's copy of a result; a dataset read from a file is named by the file's name (a
    card is shared, the machine's paths are not)."""
    keys = ("split", "mode", "n", "limit", "accuracy", "accuracy_ci95", "mean_forward_passes",
            "mean_generated_tokens", "mean_cache_tokens")
    name = summary.get("dataset")
    return {"dataset": Path(name).name if name else "unnamed data",
            **{k: summary[k] for k in keys if summary.get(k) is not None}}


def render(cfg: KavaConfig, base: dict[str, Any], facts: dict[str, Any], *, exported: bool = False) -> str:
    """The card's text: Hugging Face front matter, then what the model is, how it was trained,
    how well it answers, and how to load and ask it."""
    from huggingface_hub import EvalResult, ModelCardData

    source = base.get("exported_from") or cfg.extra.get("exported_from") or base
    hub_id = base_hub_id(source)
    license_id = base_license(hub_id)
    training = facts.get("training", {})
    results = facts.get("results", [])
    # On the Hub `datasets` names the training data; evaluation sets belong in the model-index, and
    # only a whole split there: a `--limit` evaluation stays in the card's table with its count.
    trained_on = hub_repo(training.get("dataset"))
    scored = [r for r in results if r.get("limit") is None]
    name = cfg.method if cfg.method == "kava" else f"kava-{cfg.method}"
    data = ModelCardData(
        base_model=hub_id,
        library_name=_library(cfg, exported),
        license=license_id or "other",
        tags=["kava", "latent-reasoning", cfg.method, *(["peft", "lora"] if cfg.lora_enabled else [])],
        datasets=[trained_on] if trained_on else None,
        model_name=name,
        eval_results=[
            EvalResult(task_type="text-generation", dataset_type=hub_repo(r["dataset"]) or r["dataset"],
                       dataset_name=r["dataset"], dataset_split=r.get("split"), metric_type="accuracy",
                       metric_value=round(100 * r["accuracy"], 2), metric_name=f"accuracy ({r.get('mode')} mode, %)")
            for r in scored
        ] or None,
    )
    sections = [
        f"---\n{data.to_yaml()}\n---",
        _about(cfg, source, hub_id, exported),
        _method(cfg),
        _training(training),
        _results(results),
        _usage(cfg, exported),
        _license(license_id, hub_id),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _about(cfg: KavaConfig, source: dict[str, Any], hub_id: str | None, exported: bool) -> str:
    if hub_id:
        base_text = f"[{hub_id}](https://huggingface.co/{hub_id})"
    elif source.get("kind") == "config":
        shape = source.get("config", {})
        drawn = ("its trained weights are all in this folder" if not cfg.lora_enabled else
                 f"base weights drawn under seed {source.get('seed')}")
        base_text = (f"a randomly initialised {shape.get('model_type', '?')} (hidden {shape.get('hidden_size', '?')}, "
                     f"{shape.get('num_hidden_layers', '?')} layers; {drawn})")
    else:
        base_text = f"the model in `{source.get('path', '?')}`"
    mode = MODE_TEXT[cfg.inference_mode].format(M=cfg.num_latents, T=cfg.num_iterations)
    form = ("a standalone folder: the LoRA adapter merged into the base weights (`config.json` + "
            "`model.safetensors`), with kava's extras beside them" if exported else
            ("a LoRA adapter (PEFT, safetensors) on the base, with kava's extras (projection, new token rows)"
             if cfg.lora_enabled else "all weights fine-tuned (safetensors), with kava's extras"))
    title = hub_id or (f"a random {source.get('config', {}).get('model_type', 'model')}" if source.get("kind") == "config"
                       else Path(str(source.get("path", "a local model"))).name)
    return (f"# {cfg.method} on {title}\n\n"
            f"A latent-reasoning model trained with kava "
            f"(method `{cfg.method}`; KaVa: latent reasoning via compressed KV-cache distillation, "
            f"[arXiv 2510.02312](https://arxiv.org/abs/2510.02312)) from {base_text}. "
            f"Asked a question, it {mode}. This folder is {form}.")


def _method(cfg: KavaConfig) -> str:
    rows = [("inference mode", cfg.inference_mode)]
    if cfg.inference_mode == "latent":
        rows += [("latent tokens M", cfg.num_latents), ("Jacobi iterations T", cfg.num_iterations),
                 ("projection", "yes" if cfg.use_projection else "no")]
    if cfg.alpha_kv:
        rows += [("cache eviction", f"{cfg.eviction} (λ = {cfg.eviction_lambda})"),
                 ("L_KV", f"{cfg.kv_loss}, weight α2 = {cfg.alpha_kv}")]
    if cfg.alpha_codi:
        rows.append(("L_CODI", f"{cfg.codi_loss}, weight α1 = {cfg.alpha_codi}"))
    if cfg.curriculum != "none":
        rows.append(("curriculum", cfg.curriculum))
    rows.append(("fine-tuning", f"LoRA r = {cfg.lora_r}, α = {cfg.lora_alpha}, dropout {cfg.lora_dropout}"
                 if cfg.lora_enabled else "full"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return ("## Method\n\n| knob | value |\n|---|---|\n" + table +
            "\n\nEvery knob is in `kava_config.json`; `kava train --help-config` explains each.")


def _training(training: dict[str, Any]) -> str:
    if not training:
        return "## Training\n\nNo training facts recorded in this folder (a checkpoint's model, or saved outside `kava train`)."
    train = training.get("train_config", {})
    lines = [f"- data: `{Path(training['dataset']).name}`" if training.get("dataset") else "- data: not recorded",
             f"- optimizer steps: {training.get('steps')} ({training.get('samples_seen')} examples"
             + (f", {training['epochs']:.2f} epochs)" if training.get("epochs") is not None else ")"),
             f"- batch {train.get('batch_size')} (micro-batch {train.get('micro_batch_size')}), learning rate "
             f"{train.get('lr')}, weight decay {train.get('weight_decay')}, seed {train.get('seed')}"]
    if training.get("checkpoint"):
        lines.append(f"- model: {training['checkpoint']}")
    if training.get("train_time_s") is not None:
        processes = training.get("processes", 1)
        lines.append(f"- training time: {training['train_time_s'] / 60:.1f} min of steps on {processes} "
                     f"process{'es' if processes > 1 else ''} ({training.get('device', '?')})")
    return "## Training\n\n" + "\n".join(lines)


def _results(results: list[dict[str, Any]]) -> str:
    if not results:
        return ("## Results\n\nNot evaluated yet: `kava eval --model <this folder> --dataset gsm8k` adds its accuracy "
                "and forward passes per answer here.")
    head = "| dataset | split | mode | questions | accuracy % (95% CI) | forward passes / answer | generated tokens |\n|---|---|---|---|---|---|---|"
    rows = [f"| {r['dataset']} | {r.get('split') or ''} | {r.get('mode')} | {_questions(r)} | {100 * r['accuracy']:.1f} "
            f"({100 * r['accuracy_ci95'][0]:.1f}–{100 * r['accuracy_ci95'][1]:.1f}) | {r.get('mean_forward_passes', 0):.1f} | "
            f"{r.get('mean_generated_tokens', 0):.1f} |" for r in results]
    return "## Results (`kava eval`)\n\n" + "\n".join([head, *rows])


def _questions(row: dict[str, Any]) -> str:
    """A result's question count; a `--limit` evaluation says it read only the split's first ones."""
    return f"{row.get('n')}" if row.get("limit") is None else f"{row.get('n')} (the first; --limit {row['limit']})"


def _usage(cfg: KavaConfig, exported: bool) -> str:
    extra = ("\n\nThe merged weights also load as a plain 🤗 model (`AutoModelForCausalLM.from_pretrained`), "
             "but answering in latent mode needs kava." if exported else "")
    return ("## Use\n\n```python\nfrom kava import KavaModel, generate\n\n"
            "model = KavaModel.from_pretrained(\"path/to/this/folder\")\n"
            "answer = generate(model, \"Tom has 3 apples and buys 5 more. How many apples does he have?\")\n"
            "print(answer.text, answer.forward_passes)\n```\n\n"
            f"or `kava infer --model path/to/this/folder` (answers in {cfg.inference_mode} mode)." + extra)


def _license(license_id: str | None, hub_id: str | None) -> str:
    if license_id and license_id != "other":
        return f"## License\n\nThe base model's license: `{license_id}` (see {hub_id}'s model page)."
    if hub_id:
        return f"## License\n\nThe base model's license applies: see {hub_id}'s model page."
    return "## License\n\nkava does not know this base model's license: check it before sharing the weights."
