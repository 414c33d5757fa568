"""`kava.api.generate` and `kava infer`: batch, stdin and an interactive session in a real terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from kava.api import generate
from kava.evaluation.evaluate import evaluate
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource

from conftest import build_model

CLI = [sys.executable, "-m", "kava.cli", "infer"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny KaVa model (all weights saved) whose questions finish at different steps."""
    model = build_model("kava", finetune="full", finishing_eos=True, perturb_lora=False, num_latents=4)
    model.base_source = ModelSource("config", config=model.lm.config.to_dict())
    d = tmp_path_factory.mktemp("model") / "final"
    model.save_pretrained(d)
    return d


def test_generate_answers_one_or_many_in_any_mode(saved, records):
    model = KavaModel.from_pretrained(saved)
    one = generate(model, records[0].question)
    many = generate(model, [r.question for r in records])
    assert (one.text, one.answer, one.forward_passes) == (many[0].text, many[0].answer, many[0].forward_passes)
    assert one.mode == "latent" and one.forward_passes == 1 + 3 + 1 + one.generated_tokens - 1
    cot = generate(model, records[0].question, mode="cot", max_new_tokens=5)
    assert cot.mode == "cot" and cot.generated_tokens <= 5
    assert one.inspection is None and cot.inspection is None
    seen = generate(model, records[0].question, inspect=True)  # on request: the latents read as tokens
    assert seen.text == one.text and seen.inspection.latents.passes == ["init", "iter 1", "iter 2", "iter 3"]
    assert generate(model, records[0].question, mode="cot", max_new_tokens=5, inspect=True).inspection is None
    assert "inspection" not in seen.to_json()
    with pytest.raises(ValueError, match="question 2 is empty"):
        generate(model, ["a question", "  "])
    with pytest.raises(ValueError, match="mode 'chat'"):
        generate(model, "a question", mode="chat")


@pytest.mark.slow  # another process
def test_batch_mode_gives_the_predictions_of_kava_eval(saved, records, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": r.question}) + "\n" for r in records))
    out = tmp_path / "a.jsonl"
    proc = subprocess.run([*CLI, "--model", str(saved.parent), "--input", str(questions), "--output", str(out),
                           "--batch-size", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = evaluate(KavaModel.from_pretrained(saved), records, batch_size=4, progress=False).predictions
    assert [(r["question"], r["text"], r["answer"], r["forward_passes"]) for r in rows] == \
           [(p["question"], p["prediction"], p["answer"], p["forward_passes"]) for p in expected]


@pytest.mark.slow  # another process
def test_stdin_mode_prints_one_line_per_question(saved, records):
    text = "".join(r.question + "\n" for r in records[:2])
    proc = subprocess.run([*CLI, "--model", str(saved)], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("[latent, " in line for line in lines)


@pytest.mark.parametrize("argv, needle", [
    (["--model", "{tmp}/none"], "not a kava model folder"),
    (["--model", "{model}", "--input", "{tmp}/empty.txt"], "holds no questions"),
    (["--model", "{model}", "--input", "{tmp}/bad.jsonl"], "line 2 is not JSON"),
    (["--model", "{model}", "--mode", "direct", "--input", "{tmp}/missing.txt"], "not found"),
])
def test_bad_input_is_one_line(saved, tmp_path, argv, needle, monkeypatch, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"question": "ok"}\n{oops\n')
    argv = [a.format(tmp=tmp_path, model=saved) for a in argv]
    status, err = _infer_in_process(argv, "", monkeypatch, capsys)
    assert status == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def _infer_in_process(argv: list[str], stdin: str, monkeypatch, capsys) -> tuple[int, str]:
    """`kava infer` run by the CLI's own entry point in this process: its status and stderr."""
    from kava.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(["infer", *argv])
    return status, capsys.readouterr().err


def _read_until(fd: int, needle: str, timeout: float = 60.0) -> str:
    seen, end = "", time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > end:
            raise AssertionError(f"no {needle!r} in the terminal; saw {seen!r}")
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 4096).decode(errors="replace")
    return seen


@pytest.mark.slow  # another process
def test_interactive_session_in_a_terminal(saved, records):
    """Driven through a pseudo-terminal: a question answered, its latents shown, a mode switch, bad
    commands survived, quit."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kava infer with the pty as its terminal
        os.execv(sys.executable, [*CLI, "--model", str(saved)])
    try:
        _read_until(fd, "kava> ")
        os.write(fd, (records[0].question + "\n").encode())
        assert "[latent, " in _read_until(fd, "kava> ")
        os.write(fd, b":latents on\n")
        assert "latents: on" in _read_until(fd, "kava> ")
        os.write(fd, (records[0].question + "\n").encode())
        shown = _read_until(fd, "kava> ")
        assert "[latent, " in shown and "top-1 per pass" in shown and "iter 3" in shown
        os.write(fd, b":latents maybe\n")
        assert "error: :latents takes on or off" in _read_until(fd, "kava> ")
        os.write(fd, b":mode cot\n")
        assert "mode: cot" in _read_until(fd, "kava> ")
        os.write(fd, b":frobnicate\n")
        assert "unknown command :frobnicate" in _read_until(fd, "kava> ")
        os.write(fd, b":temp -1\n")
        assert "error: :temp takes a number" in _read_until(fd, "kava> ")
        os.write(fd, (records[1].question + "\n").encode())
        assert "[cot, " in _read_until(fd, "kava> ")
        os.write(fd, b":quit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def _altered_copy(saved, tmp_path, name: str):
    import shutil

    d = tmp_path / name / "final"
    shutil.copytree(saved, d)
    return d


def _other_base(d):
    record = json.loads((d / "base_model.json").read_text())
    record["config"] = {**record["config"], "hidden_size": 32}  # same family, another width
    (d / "base_model.json").write_text(json.dumps(record))


def _other_tokenizer(d):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    tok.add_tokens([f"extra{i}" for i in range(400)])  # more tokens than the base's 330 embedding rows
    tok.save_pretrained(d)


def _other_projection(d):
    config = json.loads((d / "kava_config.json").read_text())
    (d / "kava_config.json").write_text(json.dumps({**config, "projection_dim": 8}))


@pytest.mark.parametrize("alter, needle", [
    (_other_base, "trained on another base model"),
    (_other_tokenizer, "400 tokens after kava's"),
    (_other_projection, "projection."),
])
def test_an_incompatible_checkpoint_is_one_line(saved, tmp_path, alter, needle, monkeypatch, capsys):
    """A checkpoint that does not fit what it is loaded into: one line naming the folder, exit 2."""
    d = _altered_copy(saved, tmp_path, alter.__name__)
    alter(d)
    status, err = _infer_in_process(["--model", str(d)], "Tom has 3 apples.\n", monkeypatch, capsys)
    assert status == 2, err
    assert err.count("\n") == 1 and needle in err and str(d) in err
    assert "Traceback" not in err


def test_a_lora_adapter_on_another_base_is_one_error(tmp_path):
    from conftest import tiny_model

    model = build_model("kava", num_latents=4)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="adapter does not fit this base model .*size mismatch") as info:
        KavaModel.from_pretrained(tmp_path / "m", base_model=tiny_model(intermediate_size=96))  # same width, other MLP
    assert "\n" not in str(info.value)


def test_another_m_carries_no_weights(saved, tmp_path, records):
    """M lives only in kava_config.json (no weight depends on it): a changed M loads and runs M latents."""
    d = _altered_copy(saved, tmp_path, "m6")
    config = json.loads((d / "kava_config.json").read_text())
    (d / "kava_config.json").write_text(json.dumps({**config, "num_latents": 6}))
    six, four = (generate(KavaModel.from_pretrained(p), records[0].question) for p in (d, saved))
    assert six.cache_tokens - six.generated_tokens == four.cache_tokens - four.generated_tokens + 2
