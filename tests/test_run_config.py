"""Run configs: the shipped presets carry Table 6 exactly, and every mistake is one clear line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from kava.config import ConfigError
from kava.training import cli
from kava.training.run_config import TrainConfig, load_run_config, run_config_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# docs/method.md §8: α1, α2, KV loss, layer-wise std, λ, projection, lr, wd, epochs
TABLE6 = {
    "llama1b-aug": (10, 1, "smooth_l1", True, 0.1, True, 8e-4, 0.1, 10),
    "llama1b-aug-nl": (10, 1, "mse", True, 0.1, True, 8e-4, 0.1, 10),
    "qwen05b-aug": (10, 1, "mse", False, 0.1, True, 5e-4, 0.01, 10),
    "qwen05b-aug-nl": (10, 1, "mse", True, 0.1, True, 8e-4, 0.1, 10),
    "llama3b-aug": (20, 2, "smooth_l1", False, 0.1, True, 2e-4, 0.1, 5),
    "llama3b-aug-nl": (20, 2, "smooth_l1", False, 0.0, False, 2e-4, 0.1, 5),
}


def minimal(**sections) -> dict:
    data = {
        "output_dir": "runs/x",
        "model": {"source": "smollm2"},
        "method": {"preset": "kava"},
        "data": {"name": "gsm8k-train-aug"},
        "train": {"max_steps": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("name", sorted(TABLE6))
def test_table6_presets(name):
    cfg = load_run_config(CONFIGS / f"{name}.yaml")
    a1, a2, kv_loss, layerwise, lam, projection, lr, wd, epochs = TABLE6[name]
    m, t = cfg.method, cfg.train
    assert (m.alpha_codi, m.alpha_kv, m.kv_loss, m.kv_layerwise_std) == (a1, a2, kv_loss, layerwise)
    assert (m.eviction_lambda, m.use_projection) == (lam, projection)
    assert (t.lr, t.weight_decay, t.epochs) == (pytest.approx(lr), wd, epochs)
    assert (m.lora_r, m.lora_alpha, m.lora_dropout, m.num_latents, m.num_iterations) == (128, 32, 0.1, 24, 3)
    assert (t.batch_size, t.max_grad_norm, m.method) == (128, 2.0, "kava")
    assert cfg.data.name == ("gsm8k-aug-nl" if name.endswith("-nl") else "gsm8k-aug")


def test_other_shipped_configs_load():
    for name in ("smollm2-135m", "tiny-cpu"):
        load_run_config(CONFIGS / f"{name}.yaml")
    fsdp = yaml.safe_load((CONFIGS / "accelerate_fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_use_orig_params"] is True


@pytest.mark.parametrize(
    "sections, key, fragment",
    [
        ({"extra_section": 1}, "extra_section", "unknown key"),
        ({"train": {"lrr": 0.1}}, "train.lrr", "unknown key"),
        ({"method": {"preset": "kava", "num_latent": 4}}, "method.num_latent", "unknown key"),
        ({"data": {"name": "gsm8k-train-aug", "shuffle": True}}, "data.shuffle", "unknown key"),
        ({"train": {"batch_size": "big"}}, "train.batch_size", "expected an integer"),
        ({"train": {"lr": "fast"}}, "train.lr", "expected a number"),
        ({"train": {"cpu": "yes"}}, "train.cpu", "expected true or false"),
        ({"method": {"preset": "kava", "alpha_codi": "ten"}}, "method.alpha_codi", "expected a number"),
        ({"method": {"preset": "kava", "num_latents": 2.5}}, "method.num_latents", "expected an integer"),
        ({"train": {"lr": 0}}, "train.lr", "must be > 0"),
        ({"train": {"warmup_ratio": 1.5}}, "train.warmup_ratio", "must be <= 1"),
        ({"train": {"micro_batch_size": 0}}, "train.micro_batch_size", "must be >= 1"),
        ({"train": {"batch_size": 10, "micro_batch_size": 4}}, "train.batch_size", "not a multiple"),
        ({"train": {"mixed_precision": "fp8"}}, "train.mixed_precision", "not one of"),
        ({"method": {"preset": "kava", "num_latents": 0}}, "method.num_latents", "must be >= 1, got 0"),
        ({"method": {"preset": "kava", "eviction_lambda": 2.0}}, "method.eviction_lambda", "must be <= 1, got 2.0"),
        ({"method": {"preset": "magic"}}, "method.preset", "not one of"),
        ({"data": {"name": "no-such-dataset"}}, "data.name", "neither a registered dataset"),
        ({"data": {"name": "gsm8k-train-aug", "split": "test"}}, "data.split", "has no split 'test'"),
        ({"model": {"source": "./no/such/model"}}, "model.source", "no such model folder"),
        ({"model": {"source": "missing.gguf"}}, "model.source", "no such GGUF file"),
        ({"model": {"source": "not a model!"}}, "model.source", "neither smollm2"),
        ({"model": {"source": {"config": {"model_type": "gpt2"}}, "tokenizer": "smollm2"}},
         "model.source.config.model_type", "not one of"),
        ({"model": {"source": {"config": {"model_type": "llama"}}}}, "model.tokenizer", "needs a tokenizer"),
        ({"eval": {"name": "nope"}}, "eval.name", "neither a registered dataset"),
    ],
)
def test_errors_are_one_line_and_name_the_key(sections, key, fragment):
    with pytest.raises(ConfigError) as info:
        run_config_from_dict(minimal(**sections))
    message = str(info.value)
    assert "\n" not in message
    assert key in message and fragment in message, message


def test_missing_required_keys():
    data = minimal()
    del data["data"]
    with pytest.raises(ConfigError, match=r"^data: missing"):
        run_config_from_dict(data)
    data = minimal()
    data["data"] = {"split": "train"}
    with pytest.raises(ConfigError, match=r"^data.name: missing"):
        run_config_from_dict(data)


def test_yaml_numbers_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal(train={"lr": "8e-4", "max_steps": 10})))  # PyYAML reads 8e-4 as text
    cfg = load_run_config(path, ["train.lr=1e-4", "method.num_latents=6", "data.limit=50", "train.report_to=[]"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.method.num_latents == 6 and cfg.data.limit == 50 and cfg.train.report_to == ()
    assert load_run_config(path).train.lr == pytest.approx(8e-4)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_run_config(path, ["train.lr"])
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        load_run_config(path, ["train.nope=1"])
    with pytest.raises(ConfigError, match="--config: no such file"):
        load_run_config(tmp_path / "absent.yaml")
    # The written config round-trips.
    again = run_config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_train_config_total_steps():
    assert TrainConfig(batch_size=8, micro_batch_size=4, epochs=2).total_steps(20) == 5  # ceil(40 / 8)
    assert TrainConfig(batch_size=8, micro_batch_size=4, epochs=2, max_steps=3).total_steps(20) == 3
    with pytest.raises(ConfigError, match="train.epochs or train.max_steps"):
        TrainConfig().total_steps(10)


def test_cli_reports_one_line_and_exit_status_2(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal(data={"name": "gsm8k-aug-nl"})))  # registered, but hub-only
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for overrides in (["model.source=./absent"], ["train.max_steps=-1"], []):
        assert cli.run(parser.parse_args(["--config", str(path), *overrides])) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("kava train: error:") and "\n" not in err, err


@pytest.mark.parametrize("data", ["aug", "aug-nl"])
def test_coconut_and_icot_configs(data):
    """The Table 1 rows KaVa gives no settings for: the original papers' curriculum knobs, KaVa's
    shared training knobs (configs/llama1b-*-coconut.yaml, -icot.yaml)."""
    coconut = load_run_config(CONFIGS / f"llama1b-{data}-coconut.yaml")
    m = coconut.method
    assert (m.method, m.thoughts_per_step, m.max_stage, m.num_latents, m.stage_steps) == ("coconut", 2, 3, 6, 9039)
    assert m.curriculum_schedule().stage_at(3 * 9039) == 4 and m.inference_mode == "latent"
    icot = load_run_config(CONFIGS / f"llama1b-{data}-icot.yaml")
    m = icot.method
    # the official Mistral-token counts restated in Llama-3's (benchmarks/studies/icot_token_counts.py)
    assert (m.method, m.stage_steps, m.removal_smoothing, m.remove_all_at) == (
        ("icot", 452, 4.0, 32) if data == "aug-nl" else ("icot", 519, 4.0, 28))
    assert icot.train.max_train_length == (None if data == "aug-nl" else 126)
    assert m.inference_mode == "direct"
    for cfg in (coconut, icot):
        assert (cfg.train.batch_size, cfg.train.max_grad_norm, cfg.method.lora_r, cfg.method.reset_optimizer_per_stage) == (
            128, 2.0, 128, True)
        assert cfg.data.name == ("gsm8k-aug-nl" if data == "aug-nl" else "gsm8k-aug")


# --------------------------------------------------------------------------- the config reference

def test_every_config_key_says_what_it_does():
    from kava.training.config_reference import knobs

    keys = list(knobs())
    assert [k.key for k in keys if not k.description] == []
    by_key = {k.key: k for k in keys}
    assert len(by_key) == len(keys) > 60
    # the rendering reads the fields: type, range, choices, default and the paper's symbol
    assert (by_key["method.num_latents"].symbol, by_key["method.num_latents"].type, by_key["method.num_latents"].default) \
        == ("M", "int, ≥ 1", "24")
    assert by_key["method.eviction"].type == "one of rkv, importance, redundancy, crop, random, rkv-official, snapkv, h2o, streamingllm"
    assert by_key["method.lora_dropout"].type == "number, ≥ 0, < 1"
    assert by_key["train.epochs"].type == "number or null, > 0" and by_key["train.epochs"].default == "null"
    assert by_key["train.report_to"].default == "[tensorboard]"
    assert by_key["model.source"].type == "string or mapping (required)"
    assert by_key["eval"].type == "section (optional)"


def test_help_config_prints_the_reference_and_the_docs_table_is_current(capsys):
    from kava.cli import main
    from kava.training.config_reference import render_markdown

    with pytest.raises(SystemExit) as stop:
        main(["train", "--help-config"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "method.alpha_kv (α2): number, ≥ 0 = 1\n    weight of the compressed-cache distillation" in text
    docs = (CONFIGS.parent / "docs" / "config.md").read_text()
    table = docs.split("<!-- rendered: kava train --help-config markdown -->\n", 1)[1]
    assert table == render_markdown(), "docs/config.md is stale: kava train --help-config markdown renders it"
