"""benchmarks/real_shape_smoke.py: the paper's shapes are the published ones, their run configs are
the paper rows' settings and pass kava's own checks, the committed table is the committed JSON's,
and (slow) a cut-down shape goes through every stage as separate `kava` processes.

The real Qwen2.5-0.5B shape is not run here: on this 2-core machine, shared with other jobs, one of
its training steps took 100–700 s, and its five stages (three trainings, export, eval) far more
than the ~5 minutes a test may take; the cut-down Qwen2 (2 layers, width 64, the real vocabulary)
runs the same stages in about 2 minutes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "real_shape_smoke.py"
_spec = importlib.util.spec_from_file_location("real_shape_smoke", SCRIPT)
smoke = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = smoke  # its dataclass looks its module up there
_spec.loader.exec_module(smoke)

# Parameter counts of the published checkpoints (their model cards / safetensors index totals).
PUBLISHED_PARAMETERS = {"qwen2.5-0.5b": 494_032_768, "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824}


@pytest.mark.parametrize("name", list(smoke.SHAPES))
def test_each_shape_has_its_published_parameter_count(name):
    assert smoke.weight_bytes(smoke.SHAPES[name]) == 4 * PUBLISHED_PARAMETERS[name]


def test_qwen_has_qkv_bias_and_llama_its_llama3_rope_scaling():
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        qwen = AutoModelForCausalLM.from_config(AutoConfig.for_model(**smoke.SHAPES["qwen2.5-0.5b"]["model"]))
    attn = qwen.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.o_proj.bias is None
    llama = AutoConfig.for_model(**smoke.SHAPES["llama-3.2-1b"]["model"])
    assert llama.rope_parameters["rope_type"] == "llama3" and llama.rope_parameters["rope_theta"] == 500000.0


@pytest.mark.parametrize("name", list(smoke.SHAPES))
def test_a_shapes_run_config_is_its_paper_row_and_passes_kavas_checks(name, tmp_path):
    from kava.training.run_config import run_config_from_dict

    shape = smoke.SHAPES[name]
    raw = smoke.smoke_run_config(shape, tmp_path / "run", gradient_checkpointing=True, max_steps=3, records=16)
    cfg = run_config_from_dict(raw)
    paper = yaml.safe_load((ROOT / shape["config"]).read_text())["method"]
    for knob in ("num_latents", "num_iterations", "lora_r", "lora_alpha", "eviction", "alpha_codi", "alpha_kv", "kv_loss"):
        assert getattr(cfg.method, knob) == paper[knob], knob
    assert (cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.gradient_checkpointing) == (4, 2, True)
    assert cfg.model.source["config"]["vocab_size"] == shape["model"]["vocab_size"]


def test_the_committed_table_is_the_committed_json():
    report = json.loads(smoke.DEFAULT_JSON.read_text())
    assert smoke.DEFAULT_JSON.with_suffix(".md").read_text() == smoke.render_markdown(report)
    for row in report["runs"]:  # the keys the planner's comparison reads
        assert {"shape", "config", "gradient_checkpointing", "batch_size", "micro_batch_size", "s_per_step",
                "peak_rss_bytes", "checkpoint_bytes", "final_bytes", "export_bytes", "eval_answered"} <= set(row)
        assert all(stage["exit_status"] in (0, 75) for stage in row["stages"])


def test_unknown_shape_is_one_line_and_status_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shapes", "gpt-5", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--shapes: gpt-5 not among" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # five kava processes, ~2 minutes
def test_a_cut_down_shape_goes_through_every_stage(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--out", str(out),
                           "--work", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    off, on = json.loads(out.read_text())["runs"]
    assert [s["name"] for s in off["stages"]] == ["train", "resume", "export", "eval"]
    assert [s["exit_status"] for s in off["stages"]] == [75, 0, 0, 0]  # stopped after step 2, then resumed
    assert off["resumed_to_step"] == 3 and off["checkpoints"] == ["ckpt-1", "ckpt-2"]
    assert off["eval_answered"] == smoke.EVAL_LIMIT and off["export_bytes"] > off["final_bytes"]
    assert on["gradient_checkpointing"] and [s["exit_status"] for s in on["stages"]] == [0]
    for row in (off, on):
        assert row["steps_timed"] == 2 and row["s_per_step"] > 0 and row["peak_rss_bytes"] > row["weight_bytes"]
    assert not any(p.name.startswith("kava-smoke-") for p in tmp_path.iterdir())  # work folders deleted
    assert out.with_suffix(".md").read_text() == smoke.render_markdown(json.loads(out.read_text()))
