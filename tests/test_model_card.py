"""The model card of a kava folder (`kava.model.card`): Hugging Face front matter, the method's
knobs, training facts, results that `kava eval` adds, and no PEFT template left behind."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from kava.config import preset
from kava.model.card import CARD_FILE, FACTS_FILE, base_license, write_card
from kava.model.loading import BASE_FILE

SUMMARY = {"dataset": "gsm8k", "split": "test", "mode": "latent", "n": 200, "accuracy": 0.455,
           "accuracy_ci95": [0.387, 0.525], "mean_forward_passes": 6.0, "mean_generated_tokens": 2.0,
           "mean_cache_tokens": 49.1, "latency_s": 0.1}


def _folder(tmp_path, base: dict, method: str = "kava", **knobs):
    d = tmp_path / "model"
    d.mkdir()
    preset(method, **knobs).save(d / "kava_config.json")
    (d / BASE_FILE).write_text(json.dumps(base))
    return d


def test_a_hub_base_gives_front_matter_the_hub_reads(tmp_path):
    d = _folder(tmp_path, {"kind": "hub", "path": "meta-llama/Llama-3.2-1B-Instruct"}, num_latents=24, num_iterations=3)
    card = ModelCard.load(write_card(d, training={"dataset": "gsm8k-aug", "steps": 1200, "samples_seen": 153600,
                                                  "epochs": 0.4, "train_config": {"batch_size": 128, "lr": 8e-4},
                                                  "train_time_s": 600.0, "processes": 1, "device": "cuda"}))
    meta = card.data.to_dict()
    assert meta["base_model"] == "meta-llama/Llama-3.2-1B-Instruct"
    assert meta["license"] == "llama3.2" and meta["library_name"] == "peft"
    assert {"kava", "latent-reasoning", "lora"} <= set(meta["tags"])
    assert meta["datasets"] == ["whynlp/gsm8k-aug"]
    assert "model-index" not in meta  # no result yet, and the card says how to get one
    text = card.text
    assert "[More Information Needed]" not in text
    assert "| latent tokens M | 24 |" in text and "| Jacobi iterations T | 3 |" in text
    assert "rkv (λ = 0.1)" in text and "α2 = 1.0" in text and "α1 = 10.0" in text
    assert "optimizer steps: 1200 (153600 examples, 0.40 epochs)" in text and "10.0 min" in text
    assert "Not evaluated yet" in text and "KavaModel.from_pretrained" in text and "kava infer" in text


def test_eval_results_are_added_and_replaced_per_dataset_split_and_mode(tmp_path):
    d = _folder(tmp_path, {"kind": "smollm2"})
    write_card(d, result=SUMMARY)
    write_card(d, result={**SUMMARY, "accuracy": 0.5, "accuracy_ci95": [0.43, 0.57]})  # the same evaluation again
    write_card(d, result={**SUMMARY, "dataset": "svamp", "accuracy": 0.3, "accuracy_ci95": [0.24, 0.37]})
    facts = json.loads((d / FACTS_FILE).read_text())
    assert [(r["dataset"], r["accuracy"]) for r in facts["results"]] == [("gsm8k", 0.5), ("svamp", 0.3)]
    card = ModelCard.load(d / CARD_FILE)
    results = card.data.eval_results
    assert [(r.dataset_name, r.metric_value) for r in results] == [("gsm8k", 50.0), ("svamp", 30.0)]
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert "| gsm8k | test | latent | 200 | 50.0 (43.0–57.0) | 6.0 | 2.0 |" in card.text


def test_a_random_base_names_its_shape_and_claims_no_license(tmp_path):
    d = _folder(tmp_path, {"kind": "config", "seed": 3, "config": {"model_type": "llama", "hidden_size": 64,
                                                                    "num_hidden_layers": 2}}, method="cot")
    card = ModelCard.load(write_card(d))
    assert card.data.base_model is None and card.data.license == "other"
    assert "randomly initialised llama (hidden 64, 2 layers; base weights drawn under seed 3)" in card.text
    assert "does not know this base model's license" in card.text
    assert "writes its chain of thought" in card.text and "latent tokens M" not in card.text


@pytest.mark.parametrize(("hub_id", "license_id"), [
    ("Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0"), ("Qwen/Qwen2.5-3B-Instruct", "other"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1"), ("mistralai/Mistral-7B-Instruct-v0.3", "apache-2.0"),
    ("someone/unknown", None), (None, None)])
def test_base_licenses(hub_id, license_id):
    assert base_license(hub_id) == license_id


def test_datasets_names_the_training_data_and_evaluations_go_to_the_model_index(tmp_path):
    """On the Hub `datasets` is what the model was trained on: an evaluation set is not added there."""
    d = _folder(tmp_path, {"kind": "smollm2"})
    write_card(d, training={"dataset": "gsm8k-train-aug", "steps": 2})
    write_card(d, result={**SUMMARY, "dataset": "svamp"})
    write_card(d, result={**SUMMARY, "dataset": "gsm8k-hard"})
    card = ModelCard.load(d / CARD_FILE)
    assert card.data.datasets == ["openai/gsm8k"]  # gsm8k-train-aug is derived from GSM8k's train split
    assert [(r.dataset_name, r.dataset_type) for r in card.data.eval_results] == [
        ("svamp", "ChilleD/SVAMP"), ("gsm8k-hard", "reasoning-machines/gsm-hard")]


def test_a_limited_evaluation_keeps_its_count_and_stays_out_of_the_model_index(tmp_path):
    d = _folder(tmp_path, {"kind": "smollm2"})
    write_card(d, result={**SUMMARY, "dataset": "math500", "n": 3, "limit": 3, "accuracy": 0.0, "accuracy_ci95": [0.0, 0.56]})
    card = ModelCard.load(d / CARD_FILE)
    assert card.data.eval_results is None and "model-index" not in card.data.to_dict()
    assert "| math500 | test | latent | 3 (the first; --limit 3) | 0.0 (0.0–56.0) |" in card.text
    write_card(d, result=SUMMARY)  # a whole split is scored in the model-index beside it
    assert [r.dataset_name for r in ModelCard.load(d / CARD_FILE).data.eval_results] == ["gsm8k"]


@pytest.mark.parametrize("name, repo", [("gsm8k-aug", "whynlp/gsm8k-aug"), ("gsm8k-hard", "reasoning-machines/gsm-hard"),
                                        ("svamp", "ChilleD/SVAMP"), ("math500", "HuggingFaceH4/MATH-500"),
                                        ("mult4", None), ("prosqa", None), ("some/file.jsonl", None), (None, None)])
def test_hub_repo_comes_from_the_registry(name, repo):
    from kava.data.datasets import hub_repo

    assert hub_repo(name) == repo
