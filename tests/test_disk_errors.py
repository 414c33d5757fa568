"""A write the disk refuses is one line and its own exit status, leaves nothing half-written, keeps
what was complete, and ``--resume`` finishes the run once there is space again.

The disk is real: a 4 MiB tmpfs mounted for the test (``mount -t tmpfs``; the tests skip where
mounting is not permitted, i.e. without root). The run fills it at a chosen moment with a filler
file leaving a known number of bytes free, so the libraries fail as they do on a full disk —
safetensors with ``(os error 28)``, torch's zip writer with no error code at all — and deleting
the filler "frees the space". An unwritable folder is a read-only remount of such a tmpfs
(EROFS; root ignores permission bits, so EACCES is a monkeypatched ``PermissionError``). The CLI
runs in-process (``kava.cli.main``), so an uncaught exception fails a test as a traceback would.
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kava.cli import main
from kava.evaluation import evaluate as evaluate_module
from kava.evaluation.results import ResultWriter
from kava.model import persistence
from kava.model.kava_model import KavaModel
from kava.runtime import exits
from kava.runtime.disk import WriteFailed, folder_bytes, free_bytes, guarded
from kava.training import engine
from kava.training.checkpoint import MODEL_DIR, TrainerState, latest_checkpoint

from conftest import TRAIN_RECORDS as RECORDS
from test_reliability import eval_argv, history, run_config, without_timing, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

FILLER = "filler"


def _mount(disk: Path, options: str) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk tests need root")


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB file system of its own, unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    _mount(path, "size=4m")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Leave exactly ``leave`` bytes (a multiple of the 4 KiB page) free on ``disk``."""
    (disk / FILLER).write_bytes(bytes(free_bytes(disk) - leave))
    assert free_bytes(disk) == leave


def free_in(line: str) -> int:
    """The free bytes an error line reports."""
    return int(line.split(" are free there")[0].rsplit(" ", 1)[1])


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 3-step run on a roomy disk (``<root>/run``), the reference for every resume."""
    root = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(run_config(root, "run", max_steps=3)), "--no-progress"]) == exits.OK
    finally:
        torch.set_num_threads(threads)
    return root


def error_line(capsys, command: str) -> str:
    """The command's stderr holds no traceback and ends in its one error line, which is returned."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"kava {command}: error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def same_weights(a: Path, b: Path) -> None:
    for name in ("adapter_model.safetensors", "kava_extra.safetensors"):
        sa, sb = load_file(str(a / name)), load_file(str(b / name))
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=0, rtol=0)


def fill_after_checkpoint(monkeypatch, disk: Path, step: int, leave: int) -> None:
    """Fill the disk right after checkpoint ``step`` is committed (the run's next write meets it)."""
    real = engine.save_checkpoint

    def save_then_fill(*args, **kwargs):
        path = real(*args, **kwargs)
        if path.name == f"ckpt-{step}":
            fill(disk, leave)
        return path

    monkeypatch.setattr(engine, "save_checkpoint", save_then_fill)


def train_argv(straight: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(straight / "run.yaml"), f"output_dir={out}", "--no-progress", *extra]


# --------------------------------------------------------------------------- training

# 32 KiB free: the model's safetensors fail (Rust: "os error 28"); 128 KiB: model/ fits and
# accelerate's torch.save of optimizer.bin fails (torch keeps no error code).
@pytest.mark.parametrize("leave", [32 * 1024, 128 * 1024], ids=["safetensors", "torch-save"])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_finishes_the_run(straight, disk, leave, monkeypatch,
                                                                                  capsys):
    out, ckpts = disk / "run", disk / "run" / "checkpoints"
    fill_after_checkpoint(monkeypatch, disk, 1, leave)
    capsys.readouterr()
    assert main(train_argv(straight, out)) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    # The bytes: the size of the last good checkpoint (the same files, the same tensor shapes).
    assert (f"cannot write {ckpts / 'ckpt-2'}: No space left on device; it needs about {folder_bytes(ckpts / 'ckpt-1')} "
            "bytes, ") in line and "--resume" in line, line
    # Free: measured once the staging folder is gone; torch's writer still holds its deleted partial
    # file open then, so the space it frees on closing is not counted yet.
    assert free_in(line) <= free_bytes(disk) == leave  # and the staging folder gave back all it took
    needed = folder_bytes(ckpts / "ckpt-1")
    assert not list(disk.rglob("*.tmp")) and latest_checkpoint(ckpts) == ckpts / "ckpt-1"
    persistence.check_model_dir(ckpts / "ckpt-1" / MODEL_DIR)
    KavaModel.from_pretrained(ckpts / "ckpt-1")  # the last good checkpoint loads

    (disk / FILLER).unlink()  # space freed
    monkeypatch.undo()
    assert main(train_argv(straight, out, "--resume")) == exits.OK
    assert history(out) == history(straight / "run")
    same_weights(out / "final", straight / "run" / "final")
    assert abs(folder_bytes(latest_checkpoint(ckpts)) - needed) <= 16  # what a checkpoint took: digits of its state aside


def test_a_full_first_checkpoint_reports_the_state_it_holds(straight, disk, monkeypatch, capsys):
    out, ckpts = disk / "run", disk / "run" / "checkpoints"
    real = engine.save_checkpoint

    def fill_then_save(*args, **kwargs):
        fill(disk, 32 * 1024)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", fill_then_save)
    capsys.readouterr()
    assert main(train_argv(straight, out)) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    # No checkpoint to go by: the trained tensors and AdamW's state (two moments per weight and a
    # step count per tensor), as the finished run's trained files hold them.
    trained = [t for name in ("adapter_model.safetensors", "kava_extra.safetensors")
               for t in load_file(str(straight / "run" / "final" / name)).values()]
    state = 3 * sum(t.numel() * t.element_size() for t in trained) + 4 * len(trained)
    assert f"cannot write {ckpts / 'ckpt-1'}: No space left on device; it needs about {state} bytes" in line, line
    assert not list(disk.rglob("*.tmp")) and latest_checkpoint(ckpts) is None

    (disk / FILLER).unlink()
    monkeypatch.undo()
    assert main(train_argv(straight, out, "--resume")) == exits.OK  # no checkpoint: from scratch, the same run
    assert history(out) == history(straight / "run")
    assert state < folder_bytes(latest_checkpoint(ckpts))  # a lower bound: tokenizer, configs, RNG states on top


def test_a_full_disk_at_the_final_save_keeps_the_last_checkpoint_and_resume_writes_it(straight, disk, monkeypatch,
                                                                                    capsys):
    out, ckpts = disk / "run", disk / "run" / "checkpoints"
    fill_after_checkpoint(monkeypatch, disk, 3, 32 * 1024)
    capsys.readouterr()
    assert main(train_argv(straight, out)) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    # final/ holds what the last checkpoint's model/ holds, and its card the run's facts (a kilobyte or two more).
    assert (f"cannot write {out / 'final'}: No space left on device; it needs about "
            f"{folder_bytes(ckpts / 'ckpt-3' / MODEL_DIR)} bytes, {free_bytes(disk)} are free there") in line, line
    assert 0 <= folder_bytes(straight / "run" / "final") - folder_bytes(ckpts / "ckpt-3" / MODEL_DIR) < 4096
    assert not list(disk.rglob("*.tmp")) and not (out / "final").exists()
    persistence.check_model_dir(ckpts / "ckpt-3" / MODEL_DIR)

    (disk / FILLER).unlink()
    monkeypatch.undo()
    assert main(train_argv(straight, out, "--resume")) == exits.OK
    assert history(out) == history(straight / "run")
    same_weights(out / "final", straight / "run" / "final")


def test_an_unwritable_checkpoint_mid_run_is_one_line_and_resume_finishes_the_run(straight, disk, monkeypatch, capsys):
    out, ckpts = disk / "run", disk / "run" / "checkpoints"
    real = TrainerState.save

    def refuse_step_2(self, path):
        if self.step == 2:  # root ignores permission bits, and a busy tmpfs cannot be remounted read-only: simulated
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(self, path)

    monkeypatch.setattr(TrainerState, "save", refuse_step_2)
    capsys.readouterr()
    assert main(train_argv(straight, out)) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    assert (f"cannot write {ckpts / 'ckpt-2'}: Permission denied; it needs about {folder_bytes(ckpts / 'ckpt-1')} "
            "bytes") in line, line
    assert not list(disk.rglob("*.tmp")) and latest_checkpoint(ckpts) == ckpts / "ckpt-1"

    monkeypatch.undo()
    assert main(train_argv(straight, out, "--resume")) == exits.OK
    assert history(out) == history(straight / "run")
    same_weights(out / "final", straight / "run" / "final")


# --------------------------------------------------------------------------- export

def test_a_full_disk_during_the_export_is_one_line_and_a_rerun_writes_it(straight, disk, capsys):
    good = straight / "export"
    assert main(["train", "--config", str(straight / "run.yaml"), "--export", str(good)]) == exits.OK
    fill(disk, 64 * 1024)
    capsys.readouterr()
    assert main(["train", "--config", str(straight / "run.yaml"), "--export", str(disk / "export")]) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    # The bytes: the export's tensors (merged weights, φ, new rows), as the good export holds them.
    tensors = sum(t.numel() * t.element_size() for name in ("model.safetensors", "kava_extra.safetensors")
                  for t in load_file(str(good / name)).values())
    assert (f"cannot write {disk / 'export'}: No space left on device; it needs about {tensors} bytes, "
            f"{free_bytes(disk)} are free there") in line and "rerun the export" in line, line
    assert tensors <= folder_bytes(good)  # a lower bound: tokenizer and configs come on top
    assert not list(disk.rglob("*.tmp")) and not (disk / "export").exists()

    (disk / FILLER).unlink()
    assert main(["train", "--config", str(straight / "run.yaml"), "--export", str(disk / "export")]) == exits.OK
    for name in ("model.safetensors", "kava_extra.safetensors"):
        assert load_file(str(disk / "export" / name)).keys() == load_file(str(good / name)).keys()


def test_an_unwritable_export_folder_is_one_line(straight, tmp_path, monkeypatch, capsys):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "export"))

    monkeypatch.setattr(persistence, "save_file", refused)  # root ignores permission bits: EACCES is simulated
    capsys.readouterr()
    assert main(["train", "--config", str(straight / "run.yaml"), "--export", str(tmp_path / "export")]) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    assert f"cannot write {tmp_path / 'export'}: Permission denied" in line, line
    assert not list(tmp_path.glob("export*"))


# --------------------------------------------------------------------------- evaluation

def test_a_full_disk_during_an_evaluation_keeps_the_predictions_so_far_and_resume_finishes(straight, disk, monkeypatch,
                                                                                           capsys):
    model, data = straight / "run" / "final", write_jsonl(straight / "questions32.jsonl", RECORDS[:32])
    argv = ["eval", "--model", str(model), "--dataset", str(data), "--batch-size", "16", "--max-new-tokens", "4",
            "--no-progress"]
    assert main([*argv, "--out", str(straight / "eval")]) == exits.OK
    out = disk / "eval"
    real_generate, real_append, batches = evaluate_module.generate, ResultWriter.append, []

    def generate_then_fill(*args, **kwargs):
        result = real_generate(*args, **kwargs)
        if len(batches) == 1:
            fill(disk, 0)  # the second batch's lines (over 4 KiB) need a page more than the first left
        return result

    def append(self, predictions):
        batches.append(predictions)
        real_append(self, predictions)

    monkeypatch.setattr(evaluate_module, "generate", generate_then_fill)
    monkeypatch.setattr(ResultWriter, "append", append)
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == exits.WRITE_FAILED
    line = error_line(capsys, "eval")
    needed = len("".join(json.dumps(p) + "\n" for p in batches[1]).encode())
    assert (f"cannot write {out / 'predictions.jsonl'}: No space left on device; it needs about {needed} bytes, "
            f"{free_bytes(disk)} are free there") in line and "--resume" in line, line
    kept = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]  # whole lines only
    assert kept == batches[0] and len(kept) == 16 and not list(disk.rglob("*.tmp"))

    (disk / FILLER).unlink()
    monkeypatch.undo()
    assert main([*argv, "--out", str(out), "--resume"]) == exits.OK
    assert without_timing(out) == without_timing(straight / "eval")


def test_a_read_only_output_folder_is_one_line_and_writes_nothing(straight, disk, capsys):
    remount(disk, "ro")
    data = write_jsonl(straight / "questions4.jsonl", RECORDS[:4])
    capsys.readouterr()
    assert main(eval_argv(straight / "run" / "final", data, disk / "eval")) == exits.WRITE_FAILED
    line = error_line(capsys, "eval")
    assert f"cannot write {disk / 'eval' / '.kava.lock'}: Read-only file system" in line, line
    assert main(train_argv(straight, disk / "run")) == exits.WRITE_FAILED
    line = error_line(capsys, "train")
    assert f"cannot write {disk / 'run' / '.kava.lock'}: Read-only file system" in line, line
    assert not list(disk.iterdir())
    remount(disk, "rw")


# --------------------------------------------------------------------------- what counts as the disk refusing

@pytest.mark.parametrize("error", [
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
    OSError(errno.EIO, "Input/output error"),  # a failing drive is not a full one
    RuntimeError("something else went wrong"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),  # torch, roomy disk
], ids=["ENOENT", "EIO", "other", "torch-writer-with-space"])
def test_other_errors_are_raised_unchanged_and_staging_is_kept(error, tmp_path):
    staging = tmp_path / "x.tmp"
    staging.mkdir()
    with pytest.raises(type(error)) as raised:
        with guarded(tmp_path / "x", 10, staging=staging):
            raise error
    assert raised.value is error and staging.is_dir()


@pytest.mark.parametrize("error, code", [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
    (PermissionError(errno.EPERM, "Operation not permitted"), errno.EPERM),
    (Exception("Error while serializing: I/O error: Read-only file system (os error 30)"), errno.EROFS),
    (RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: Permission denied"),
     errno.EACCES),
], ids=["ENOSPC", "EDQUOT", "EPERM", "rust-EROFS", "torch-EACCES"])
def test_refusals_are_recognised_however_the_library_reports_them(error, code, tmp_path):
    staging = tmp_path / "x.tmp"
    staging.mkdir()
    (staging / "part").write_bytes(bytes(300))
    with pytest.raises(WriteFailed) as raised:
        with guarded(tmp_path / "x", 100, staging=staging):
            try:
                raise error
            except Exception as inner:  # a refusal wrapped by another library's error still counts
                raise ValueError("save failed") from inner
    assert raised.value.code == code and raised.value.needed == 300  # at least what was already staged
    assert not staging.exists()
