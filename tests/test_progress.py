"""`kava.runtime.progress`: tqdm's bar on a terminal, whole lines every 5 % (or every N seconds)
anywhere else, and a real `kava train` whose stderr goes to a file logs no carriage return."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import yaml
from tqdm.std import tqdm as plain_tqdm

from kava.runtime import progress as progress_module
from kava.runtime.progress import LineProgress, progress

from conftest import TRAIN_RECORDS, make_tokenizer


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console's stderr does."""

    def isatty(self) -> bool:
        return True


class Clock:
    """time.monotonic under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def run_updates(bar, updates: int, clock: Clock | None = None, step_s: float = 0.0) -> None:
    for i in range(updates):
        if clock is not None:
            clock.now += step_s
        bar.set_postfix({"loss": f"{1 / (i + 1):.4g}", "lr": 0.001})
        bar.update(1)
    bar.close()


def test_a_log_stream_gets_a_whole_line_every_5_percent_with_the_fields():
    log = io.StringIO()
    bar = progress(400, "train", file=log, dynamic_ncols=True)  # a bar-only option is accepted and ignored
    assert isinstance(bar, LineProgress)
    run_updates(bar, 400)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 20  # at 20, 40, ..., 400; the last one is the final count, so close adds none
    assert [line.split()[2] for line in lines] == [f"{n}/400" for n in range(20, 401, 20)]
    assert lines[0].startswith("train:   5% 20/400 [") and lines[-1].startswith("train: 100% 400/400 [")
    assert lines[-1].endswith(", loss=0.0025, lr=0.001]")  # the fields of the last update, as tqdm writes them


def test_close_writes_the_count_a_stopped_run_reached():
    log = io.StringIO()
    with progress(400, "eval (latent)", unit="q", file=log) as bar:
        bar.update(30)  # one mark crossed: a line
        bar.update(5)  # no mark: the count waits for close
    lines = log.getvalue().splitlines()
    assert [line.split()[3] for line in lines] == ["30/400", "35/400"]
    assert "q/s" in lines[-1] or "s/q" in lines[-1]


def test_a_terminal_gets_tqdms_bar():
    screen = Terminal()
    bar = progress(400, "train", file=screen)
    assert isinstance(bar, plain_tqdm)
    run_updates(bar, 400)
    assert "\r" in screen.getvalue()  # the bar redraws in place
    assert isinstance(progress(10, "train", file=io.StringIO(), disable=True), plain_tqdm)  # hidden: tqdm's no-op


def test_a_notebook_gets_tqdms_widget(monkeypatch):
    """In a notebook tqdm.autonotebook picks the widget class; stderr there is no terminal, yet the
    widget draws no carriage returns, so it is kept."""

    class Widget(plain_tqdm):
        pass

    monkeypatch.setattr(progress_module, "chosen_tqdm", Widget)
    bar = progress(10, "train", file=io.StringIO())
    assert isinstance(bar, plain_tqdm)
    bar.close()
    monkeypatch.undo()
    assert isinstance(progress(10, "train", file=io.StringIO()), LineProgress)


def test_a_slow_run_writes_a_line_every_n_seconds(clock):
    log = io.StringIO()
    bar = progress(1000, "train", file=log, every_s=30.0)
    run_updates(bar, 20, clock, step_s=10.0)  # 2 % of the work in 200 s: no 5 % mark
    lines = log.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["3/1000", "6/1000", "9/1000", "12/1000", "15/1000", "18/1000",
                                                   "20/1000"]  # every 30 s, then close's count
    assert "[00:30<" in lines[0] and "10.00s/it" in lines[0]  # elapsed and rate from the same clock


def test_a_resumed_run_writes_at_the_same_marks(clock):
    fresh, resumed = io.StringIO(), io.StringIO()
    run_updates(progress(400, "train", file=fresh), 400)
    bar = progress(400, "train", file=resumed, initial=130)
    run_updates(bar, 270, clock, step_s=0.5)
    counts = [line.split()[2] for line in resumed.getvalue().splitlines()]
    assert counts == [c for c in (line.split()[2] for line in fresh.getvalue().splitlines())
                      if int(c.split("/")[0]) > 130]
    assert counts[0] == "140/400"
    assert "2.00it/s" in resumed.getvalue().splitlines()[0]  # the rate counts this run's steps only


def _tiny_run_config(tmp_path, steps: int):
    """The tiny run of tests/test_training.py (conftest's model size and tokenizer), ``steps`` long."""
    tok_dir, data_file = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    make_tokenizer().save_pretrained(tok_dir)
    data_file.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer})
                                 + "\n" for r in TRAIN_RECORDS))
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"),
        "model": {"source": {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
                  "tokenizer": str(tok_dir)},
        "method": {"preset": "kava", "num_latents": 4, "lora_r": 4},
        "data": {"name": str(data_file)},
        "train": {"batch_size": 2, "micro_batch_size": 2, "max_steps": steps, "save_every": steps, "report_to": []},
    }))
    return config_file


def _check_log(text: str, steps: int) -> None:
    assert "\r" not in text
    train = [line for line in text.splitlines() if line.startswith("train:")]
    assert len(train) == 20 and train[-1].startswith(f"train: 100% {steps}/{steps} [")
    assert all("loss=" in line and "lr=" in line for line in train)


@pytest.mark.usefixtures("one_thread")
def test_kava_train_logs_lines_to_a_file(tmp_path, monkeypatch):
    """`kava train` through the CLI's entry point, stderr a file: whole lines, no redraws."""
    from kava.cli import main

    config_file = _tiny_run_config(tmp_path, steps=40)
    with open(tmp_path / "stderr.log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert main(["train", "--config", str(config_file)]) == 0
    _check_log((tmp_path / "stderr.log").read_text(), steps=40)


@pytest.mark.slow  # another process
def test_kava_train_process_with_stderr_to_a_file(tmp_path):
    """The same in a process of its own, so that every writer to file descriptor 2 (libraries
    included) lands in the file, as with ``kava train ... 2> log``."""
    config_file = _tiny_run_config(tmp_path, steps=40)
    with open(tmp_path / "stderr.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "kava.cli", "train", "--config", str(config_file)],
                              stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, text
    _check_log(text, steps=40)
