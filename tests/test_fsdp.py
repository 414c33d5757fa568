"""FSDP (version 1) on two CPU processes (gloo), launched as on GPUs with ``accelerate launch``.

configs/accelerate_fsdp_cpu.yaml carries the GPU config's FSDP settings (FULL_SHARD,
use_orig_params, SHARDED_STATE_DICT, one FSDP unit per decoder layer) on CPU. accelerate 1.15 by
itself runs such a launch as plain DDP; `kava.training.fsdp_cpu` makes it FSDP, and the
checkpoint's ``pytorch_model_fsdp_0/`` (accelerate's sharded model state, written only under FSDP)
shows that it was. Three things had never run and are pinned here:

- KavaModel registered the LM twice (``lm`` beside ``peft``), so FSDP's auto-wrap failed with
  "Child module FullyShardedDataParallel((_fsdp_wrapped_module): LlamaDecoderLayer(...)) is
  already wrapped" (and would have on GPUs);
- gathering the parameters with ``offload_to_cpu`` on a CPU device freed the tensors that
  ``save_pretrained`` then read (a segfault in safetensors' save_file);
- a resume loaded no Adam moments (accelerate's DCP load fills the fresh optimizer's empty
  template), so the resumed run left its uninterrupted twin at the first step after the checkpoint;
- the LoRA adapter saved under FSDP was empty: PEFT picks its entries by module names, which
  carry FSDP's wrapper inside kava's units (`kava.model.persistence._save_adapter`).

Tolerance against one process: 2e-5 on losses of about 11. Two processes each back-propagate
half the batch and FSDP's reduce-scatter averages the halves, one process sums the whole batch in
another order; in fp32 that moves the losses by rounding only (≈1e-6 observed). Between two
2-process runs (uninterrupted and resumed) the arithmetic is the same, so they must agree exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kava.model.kava_model import KavaModel
from kava.runtime.validation import ConfigError
from kava.training import fsdp_cpu
from kava.training.engine import train
from kava.training.export import export_merged

from conftest import ARCHS, TRAIN_RECORDS as RECORDS, build_model, train_config as config, training_model as build

TESTS = Path(__file__).resolve().parent
CONFIGS = TESTS.parent / "configs"
CPU_CONFIG = CONFIGS / "accelerate_fsdp_cpu.yaml"
GPU_CONFIG = CONFIGS / "accelerate_fsdp.yaml"
EXACT = {"alpha_codi": 0.0, "kv_layerwise_std": False, "lora_dropout": 0.0}  # as tests/test_ddp.py
STEPS = 4
WORKER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    from conftest import TRAIN_RECORDS as RECORDS, train_config as config, training_model as build
    import kava.training.engine as engine
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    save = engine.save_checkpoint
    def save_and_list_units(accelerator, model, *args):  # which modules FSDP made units of
        if accelerator.is_main_process:
            units = [type(m.module).__name__ for m in FSDP.fsdp_modules(model)]
            open({units!r}, "w").write(json.dumps(units))
        return save(accelerator, model, *args)
    engine.save_checkpoint = save_and_list_units
    engine.train(build(**{over!r}), RECORDS, config(micro_batch_size=2, max_steps={steps}, cpu=True),
                 output_dir={out!r}, stop_after={stop_after!r}, resume={resume!r}, progress=False)
    """
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _accelerate() -> str | None:
    found = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    return found if Path(found).exists() else None


def launch(tmp_path: Path, out: Path, *, over: dict, stop_after: int | None = None, resume: bool = False) -> list[str]:
    """One ``accelerate launch`` of the CPU FSDP config on two processes; returns the FSDP units' classes."""
    units = tmp_path / f"units-{out.name}-{int(resume)}.json"
    script = tmp_path / f"worker-{out.name}-{int(resume)}.py"
    script.write_text(WORKER.format(tests=str(TESTS), units=str(units), over=over, steps=STEPS, out=str(out),
                                    stop_after=stop_after, resume=resume))
    proc = subprocess.run([_accelerate(), "launch", "--config_file", str(CPU_CONFIG), "--num_processes", "2",
                           str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(units.read_text())


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def measured(entries: list[dict]) -> list[dict]:
    """History entries without what depends on the machine's speed and memory."""
    return [{k: v for k, v in e.items() if k not in ("step_time_s", "tokens_per_s", "max_memory_gb")} for e in entries]


needs_accelerate = pytest.mark.skipif(_accelerate() is None, reason="accelerate's launcher not installed")


@pytest.mark.slow  # two processes via accelerate launch
@needs_accelerate
def test_two_fsdp_processes_match_one_process_on_the_combined_batch(tmp_path):
    out = tmp_path / "fsdp"
    units = launch(tmp_path, out, over=EXACT)
    # the root (KavaModel) and one unit per decoder layer, as the config's auto-wrap policy says
    assert units == ["KavaModel", "LlamaDecoderLayer", "LlamaDecoderLayer"]
    ckpt = out / "checkpoints" / f"ckpt-{STEPS}"
    assert {p.name for p in (ckpt / "pytorch_model_fsdp_0").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert (ckpt / "optimizer_0").is_dir()

    single = train(build(**EXACT), RECORDS, config(micro_batch_size=4, max_steps=STEPS), output_dir=tmp_path / "one")
    fsdp = history(out)
    assert [e["step"] for e in fsdp] == list(range(1, STEPS + 1))
    for a, b in zip(single.history, fsdp):
        for term in ("loss", "ce_teacher", "ce_student", "kv"):
            assert b[term] == pytest.approx(a[term], abs=2e-5), (a["step"], term)
    mine, theirs = load_file(out / "final" / "kava_extra.safetensors"), load_file(single.final_dir / "kava_extra.safetensors")
    assert mine.keys() == theirs.keys() and "new_rows" in mine
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # three launches of two processes
@needs_accelerate
def test_fsdp_resume_ends_where_the_uninterrupted_run_ends(tmp_path):
    over = {"alpha_codi": 0.0}  # LoRA dropout on: the resumed run must continue each process's RNG
    launch(tmp_path, tmp_path / "whole", over=over)
    launch(tmp_path, tmp_path / "cut", over=over, stop_after=2)
    assert [e["step"] for e in history(tmp_path / "cut")] == [1, 2]
    launch(tmp_path, tmp_path / "cut", over=over, resume=True)

    assert measured(history(tmp_path / "cut")) == measured(history(tmp_path / "whole"))
    whole, cut = (load_file(tmp_path / r / "final" / "kava_extra.safetensors") for r in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)


@pytest.mark.slow  # two processes via accelerate launch
@needs_accelerate
def test_fsdp_final_model_holds_the_adapter_and_exports(tmp_path, records):
    launch(tmp_path, tmp_path / "run", over=EXACT)
    adapter = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    model = build(**EXACT)
    model.load_trained(tmp_path / "run" / "final")
    model.eval()
    batch = model.builder.training_batch(records)
    with torch.no_grad():
        before = model(batch)
    exported = KavaModel.from_pretrained(export_merged(model, tmp_path / "export")).eval()
    with torch.no_grad():
        assert exported(batch).loss.item() == pytest.approx(before.loss.item(), abs=1e-5)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    ids = batch["t_input_ids"][:1]
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, exported.lm(ids).logits, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("arch", ARCHS)
def test_each_module_is_registered_once(arch):
    """FSDP's auto-wrap visits registered children and refuses a module reached twice."""
    model = build_model(arch=arch)
    paths: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(name)
    assert [p for p in paths.values() if len(p) > 1] == []
    assert model.lm is model.peft.base_model.model
    assert model.embedding.base is model.lm.get_input_embeddings()


def test_the_cpu_config_is_the_gpu_config_on_cpu():
    gpu, cpu = (yaml.safe_load(p.read_text()) for p in (GPU_CONFIG, CPU_CONFIG))
    assert (gpu["use_cpu"], cpu["use_cpu"], cpu["mixed_precision"]) == (False, True, "no")
    differ = {k for k in gpu["fsdp_config"] if gpu["fsdp_config"][k] != cpu["fsdp_config"].get(k)}
    assert differ == {"fsdp_sync_module_states"}  # torch's FSDP refuses it on CPU
    assert gpu["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] in build_model().lm._no_split_modules


def test_sync_module_states_on_cpu_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv(fsdp_cpu.FSDP_ENV, "true")
    monkeypatch.setenv(fsdp_cpu.SYNC_ENV, "true")
    with pytest.raises(ConfigError, match="fsdp_sync_module_states"):
        fsdp_cpu.cpu_plugin()


def test_fsdp_version_2_is_refused_before_training(monkeypatch):
    monkeypatch.setenv(fsdp_cpu.FSDP_ENV, "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        fsdp_cpu.cpu_plugin()
