"""Training engine: exact resume, data order, gradient accumulation, gradient checkpointing,
signals, crash-safe checkpoints, evaluation callback and LoRA export.

All runs use the tiny random GQA Llama and byte-level tokenizer of conftest, with M = 4."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from kava.model.kava_model import KavaModel
from kava.training import cli, from_config
from kava.training.checkpoint import MODEL_DIR, TEST_DELAY_ENV, latest_checkpoint, list_checkpoints
from kava.model.cache import enable_gradient_checkpointing
from kava.training.data_order import record_order
from kava.training.engine import train
from kava.training.export import export_merged
from kava.training.run_config import load_run_config

from conftest import TRAIN_RECORDS, make_tokenizer, train_config, training_model

TESTS = Path(__file__).resolve().parent
TERMS = ("loss", "ce_teacher", "ce_student", "codi", "kv")
# The child process of the signal and crash tests: trains the same tiny model for many steps.
CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import TRAIN_RECORDS as RECORDS, train_config as config, training_model as build
    from kava.training.engine import train
    slow = lambda model: (time.sleep(0.3), {{}})[1]  # an evaluation that makes each step take a while
    train(build(), RECORDS, config(max_steps={steps}, save_every={save_every}, eval_every=1),
          output_dir={out!r}, eval_fn=slow)
    """
)


pytestmark = pytest.mark.usefixtures("one_thread")
build, config, RECORDS = training_model, train_config, TRAIN_RECORDS


def weights(model: KavaModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.trainable_state_dict().items()}


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    # LoRA dropout is on: an exact match needs the RNG state restored, not just the weights.
    straight_model = build()
    straight = train(straight_model, RECORDS, config(), output_dir=tmp_path / "a")
    first = train(build(), RECORDS, config(), output_dir=tmp_path / "b", stop_after=3)
    assert first.interrupted and first.step == 3 and first.final_dir is None
    resumed_model = build()
    resumed = train(resumed_model, RECORDS, config(), output_dir=tmp_path / "b", resume=True)

    assert not resumed.interrupted and resumed.step == 6
    assert [e["step"] for e in resumed.history] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight.history, resumed.history):
        for term in TERMS:
            assert a[term] == pytest.approx(b[term], abs=1e-6), (a["step"], term)
    sa, sb = weights(straight_model), weights(resumed_model)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=0)
    logged = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [1, 2, 3, 4, 5, 6]
    # The final model folder reloads to the same weights.
    reloaded = build()
    reloaded.load_trained(resumed.final_dir)
    for k, v in weights(reloaded).items():
        torch.testing.assert_close(v, sb[k], atol=0, rtol=0)


def test_every_logged_quantity(tmp_path):
    result = train(build(), RECORDS, config(max_steps=2, report_to=("tensorboard",)), output_dir=tmp_path)
    entry = result.history[-1]
    for key in (*TERMS, "kv_mean_baseline", "lr", "grad_norm", "tokens_per_s", "step_time_s", "max_memory_gb", "epoch"):
        assert key in entry and entry[key] == entry[key], key  # present and not NaN
    assert entry["tokens_per_s"] > 0 and entry["step_time_s"] > 0 and entry["epoch"] == pytest.approx(8 / len(RECORDS))
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    # Terms that average over examples (CE, KV without layer-wise std, all slots valid) make one
    # batch of 4 equal to 2 micro-batches of 2; CODI's batch std does not, so it is off here.
    over = {"alpha_codi": 0.0, "kv_layerwise_std": False, "lora_dropout": 0.0}
    full = train(build(**over), RECORDS, config(micro_batch_size=4, max_steps=3), output_dir=tmp_path / "full")
    accum = train(build(**over), RECORDS, config(micro_batch_size=2, max_steps=3), output_dir=tmp_path / "accum")
    for a, b in zip(full.history, accum.history):
        for term in ("loss", "ce_teacher", "ce_student", "kv"):
            assert a[term] == pytest.approx(b[term], abs=2e-5), (a["step"], term)


def test_record_order_is_a_pure_function_of_seed_and_position():
    records = list(range(10))
    it = record_order(records, seed=7)
    seq = [next(it) for _ in range(25)]
    assert sorted(seq[:10]) == records and sorted(seq[10:20]) == records  # each epoch a permutation
    assert seq[:10] != seq[10:20]  # reshuffled per epoch
    for start in (0, 3, 10, 17):
        later = record_order(records, seed=7, start=start)
        assert [next(later) for _ in range(25 - start)] == seq[start:]


def test_stream_resumes_at_its_position(tmp_path):
    calls = []

    def stream(seed, start):
        calls.append((seed, start))
        i = start
        while True:
            yield RECORDS[i % len(RECORDS)]
            i += 1

    train(build(), stream, config(max_steps=4, seed=5), output_dir=tmp_path, stop_after=2)
    train(build(), stream, config(max_steps=4, seed=5), output_dir=tmp_path, resume=True)
    assert calls == [(5, 0), (5, 8)]
    with pytest.raises(Exception, match="max_steps"):
        train(build(), stream, config(max_steps=None, epochs=1.0), output_dir=tmp_path / "x")


def test_checkpoints_keep_last_and_refuse_to_mix_runs(tmp_path):
    train(build(), RECORDS, config(max_steps=4, save_every=1, keep_last=2), output_dir=tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 4]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(build(), RECORDS, config(max_steps=4), output_dir=tmp_path)
    with pytest.raises(ValueError, match="lr"):
        train(build(), RECORDS, config(max_steps=4, lr=1e-2), output_dir=tmp_path, resume=True)


def test_eval_callback_runs_in_eval_mode_without_gradients(tmp_path):
    seen = []

    def eval_fn(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"score": 0.5}

    result = train(build(), RECORDS, config(max_steps=3, eval_every=2), output_dir=tmp_path, eval_fn=eval_fn)
    assert seen == [(False, False), (False, False)]  # step 2 and the last step
    assert [e["step"] for e in result.history if "eval/score" in e] == [2, 3]
    assert [e["step"] for e in result.history if "eval_time_s" in e] == [2, 3]  # its cost, apart from step_time_s


@pytest.mark.parametrize("teacher_dropout,masks", [(True, "per_adapter"), (False, "per_adapter"), (True, "per_input")])
def test_gradient_checkpointing_keeps_gradients(records, teacher_dropout, masks):
    """Checkpointed layers (cache rewound for the replay) give the same gradients, dropout included
    (shared masks too), and a teacher pass without dropout is replayed without it."""

    def grads(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        model = build(lora_dropout=0.1, teacher_dropout=teacher_dropout, lora_dropout_masks=masks).train()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)  # make LoRA (and its dropout) matter
        calls = []
        mlp = model.lm.get_decoder().layers[0].mlp
        mlp_forward = mlp.forward
        mlp.forward = lambda *a, **k: (calls.append(1), mlp_forward(*a, **k))[1]  # hooks skip replays
        if checkpointing:
            enable_gradient_checkpointing(model)
        torch.manual_seed(0)
        model(model.builder.training_batch(records)).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = grads(False)
    ckpt, ckpt_calls = grads(True)
    assert ckpt_calls > plain_calls  # the layers really were recomputed
    assert plain != {} and any("lora_B" in k and v.abs().sum() > 0 for k, v in plain.items())
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], atol=1e-6, rtol=1e-5)


def test_export_merges_lora_into_a_standalone_folder(tmp_path, records):
    result = train(build(), RECORDS, config(max_steps=2), output_dir=tmp_path / "run")
    model = build()
    model.load_trained(result.final_dir)
    model.eval()
    batch = model.builder.training_batch(records)
    with torch.no_grad():
        before = model(batch)
    out = export_merged(model, tmp_path / "export")
    assert not (out / "adapter_model.safetensors").exists()
    out = out.rename(tmp_path / "moved")  # an export is self-contained: it loads wherever it goes
    exported = KavaModel.from_pretrained(out).eval()
    assert exported.peft is None
    with torch.no_grad():
        after = exported(batch)
    assert after.loss.item() == pytest.approx(before.loss.item(), abs=1e-5)
    for term in TERMS[1:]:  # the terms beside the loss
        assert after.terms[term].item() == pytest.approx(before.terms[term].item(), abs=1e-5), term
    hf = AutoModelForCausalLM.from_pretrained(out)
    ids = batch["t_input_ids"][:1]
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, exported.lm(ids).logits, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- processes

def _child(tmp_path: Path, out: Path, steps: int, save_every: int, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), steps=steps, save_every=save_every, out=str(out)))
    return subprocess.Popen([sys.executable, str(script)], env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.05)


def _history_steps(out: Path) -> list[int]:
    path = out / "history.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # another process
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = _child(tmp_path, out, steps=40, save_every=100)
    _wait_for(lambda: len(_history_steps(out)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    assert "SIGTERM" in output and "resume to continue" in output
    stopped = _history_steps(out)[-1]
    assert 2 <= stopped < 40
    assert latest_checkpoint(out / "checkpoints").name == f"ckpt-{stopped}"
    result = train(build(), RECORDS, config(max_steps=40, save_every=100, eval_every=1), output_dir=out, resume=True,
                   stop_after=2)
    assert [e["step"] for e in result.history] == list(range(1, stopped + 3))


@pytest.mark.slow  # another process
def test_kill_during_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    proc = _child(tmp_path, out, steps=8, save_every=2, env={TEST_DELAY_ENV: "1.5"})
    _wait_for(lambda: (ckpts / "ckpt-2").is_dir() and (ckpts / "ckpt-4.tmp").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)  # mid-write: ckpt-4.tmp is being filled (or sleeping)
    proc.communicate(timeout=60)
    assert not (ckpts / "ckpt-4").exists() and (ckpts / "ckpt-4.tmp").is_dir()
    assert latest_checkpoint(ckpts) == ckpts / "ckpt-2"
    reloaded = build()
    reloaded.load_trained(ckpts / "ckpt-2" / MODEL_DIR)
    result = train(build(), RECORDS, config(max_steps=8, save_every=2, eval_every=1), output_dir=out, resume=True,
                   stop_after=1)
    assert not (ckpts / "ckpt-4.tmp").exists()  # the interrupted write was cleaned up
    assert [e["step"] for e in result.history] == [1, 2, 3]


def test_cli_trains_refuses_to_overwrite_and_exports(tmp_path, capsys):
    tok_dir, data_file = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    make_tokenizer().save_pretrained(tok_dir)
    data_file.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                                 for r in RECORDS))
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"),
        "model": {"source": {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
                  "tokenizer": str(tok_dir)},
        "method": {"preset": "kava", "num_latents": 4, "lora_r": 4},
        "data": {"name": str(data_file)},
        "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 2, "report_to": []},
    }))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--config", str(config_file)])) == 0
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "run_config.yaml").is_file()
    card = (tmp_path / "run" / "final" / "README.md").read_text()  # kava's card, not PEFT's empty template
    assert "[More Information Needed]" not in card and "optimizer steps: 2 (8 examples" in card
    assert f"data: `{data_file.name}`" in card and "library_name: peft" in card
    capsys.readouterr()
    assert cli.run(parser.parse_args(["--config", str(config_file)])) == 2  # would mix two runs
    assert "already holds a run" in capsys.readouterr().err
    assert cli.run(parser.parse_args(["--config", str(config_file), "--export", str(tmp_path / "export")])) == 0
    exported = KavaModel.from_pretrained(tmp_path / "export").eval()
    export_card = (tmp_path / "export" / "README.md").read_text()  # the run's facts, a 🤗 folder now
    assert "optimizer steps: 2 (8 examples" in export_card and "library_name: transformers" in export_card
    trained = from_config.build_model(load_run_config(config_file))  # the random base is rebuilt from train.seed
    trained.load_trained(tmp_path / "run" / "final")
    trained.eval()
    batch = trained.builder.training_batch(RECORDS[:3])
    with torch.no_grad():
        assert exported(batch).loss.item() == pytest.approx(trained(batch).loss.item(), abs=1e-5)


@pytest.mark.parametrize("eviction", ["rkv-official", "snapkv", "h2o", "streamingllm"])
def test_kava_train_runs_the_published_eviction_rules(eviction, tmp_path):
    """Each published rule of the eviction table (the others: test_model) trains through `kava train`'s path."""
    tok_dir, data_file = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    make_tokenizer().save_pretrained(tok_dir)
    data_file.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                                 for r in RECORDS))
    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_run_config(configs / "tiny-cpu.yaml", [
        f"output_dir={tmp_path / 'run'}", f"model.tokenizer={tok_dir}", f"data.name={data_file}", "data.limit=null",
        "train.max_steps=2", "train.save_every=2", "train.report_to=[]", f"method.eviction={eviction}",
        "method.rkv_recent=2"])  # below the tiny config's M = 6 (the default 8 needs M > 8)
    result = from_config.train_from_config(cfg)
    assert result.step == 2 and not result.interrupted
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    kv = [h["kv"] for h in history if "kv" in h]
    assert len(kv) == 2 and all(math.isfinite(v) and v > 0 for v in kv)


def test_train_from_config_runs_the_tiny_config_and_refuses_a_second_start(tmp_path):
    tok_dir, data_file = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    make_tokenizer().save_pretrained(tok_dir)  # the shipped config's smollm2 tokenizer, small and local
    data_file.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                                 for r in RECORDS))
    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_run_config(configs / "tiny-cpu.yaml", [
        f"output_dir={tmp_path / 'run'}", f"model.tokenizer={tok_dir}", f"data.name={data_file}", "data.limit=null",
        "train.max_steps=2", "train.report_to=[]"])
    result = from_config.train_from_config(cfg)
    assert result.step == 2 and not result.interrupted
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    assert load_run_config(tmp_path / "run" / "run_config.yaml").to_dict() == cfg.to_dict()
    with pytest.raises(from_config.RefusedStart, match="already holds a run"):
        from_config.train_from_config(cfg)
