"""`kava.api.generate` and `kava infer`: batch (files, FIFOs, process substitution), stdin, the
interactive session's labelled answer line, and a session in a real terminal."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import threading
import time

import pytest

from kava import infer_cli
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
    (["--model", "{model}", "--mode", "direct", "--input", "{tmp}/missing.txt"], "--input: {tmp}/missing.txt not found"),
    (["--model", "{model}", "--input", "{tmp}"], "--input: {tmp} is a folder"),
    (["--model", "{model}", "--input", "{tmp}/sniffed.txt"], "sniffed.txt line 2 has no 'question' text"),
])
def test_bad_input_is_one_line(saved, tmp_path, argv, needle, monkeypatch, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"question": "ok"}\n{oops\n')
    (tmp_path / "sniffed.txt").write_text('\n{"q": "a first line starting with { makes it JSONL"}\n')
    argv = [a.format(tmp=tmp_path, model=saved) for a in argv]
    needle = needle.format(tmp=tmp_path)
    status, _, err = _infer_in_process(argv, "", monkeypatch, capsys)
    assert status == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def _infer_in_process(argv: list[str], stdin: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """`kava infer` run by the CLI's own entry point in this process: its status, stdout and stderr."""
    from kava.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(["infer", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _fifo_fed(path, text: str) -> threading.Thread:
    """A FIFO at ``path`` that a thread fills with ``text`` once a reader opens it, then closes."""
    os.mkfifo(path)

    def feed() -> None:
        with open(path, "w") as f:  # blocks until kava infer opens the other end
            f.write(text)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _expected_lines(saved, questions: list[str]) -> list[str]:
    """The stdin mode's answer lines for ``questions``, without the time (it differs run to run)."""
    return [_timeless(infer_cli._line(a)) for a in generate(KavaModel.from_pretrained(saved), questions)]


def _timeless(line: str) -> str:
    return re.sub(r", \d+ ms\]", ", _ ms]", line)


@pytest.mark.parametrize("name, rows", [
    ("questions", False),  # one question per line
    ("rows", True),  # JSONL, known by its first line: the name has no .jsonl
    ("rows.jsonl", True),  # JSONL by its name
])
def test_a_fifo_is_read_once_as_questions(saved, records, tmp_path, monkeypatch, capsys, name, rows):
    questions = [records[0].question, records[1].question]
    lines = [json.dumps({"question": q, "id": i}) for i, q in enumerate(questions)] if rows else questions
    feeder = _fifo_fed(tmp_path / name, "\n\n".join(lines) + "\n")
    status, out, err = _infer_in_process(["--model", str(saved), "--input", str(tmp_path / name)], "",
                                         monkeypatch, capsys)
    feeder.join(timeout=10)
    assert status == 0, err
    assert [_timeless(line) for line in out.splitlines()] == _expected_lines(saved, questions)


@pytest.mark.slow  # another process (bash, then kava infer)
def test_process_substitution_as_input(saved, records):
    questions = [records[0].question, records[1].question]
    printf = "printf '%s\\n' " + " ".join(shlex.quote(q) for q in questions)  # one line per question
    command = f"{shlex.join(CLI)} --model {shlex.quote(str(saved))} --input <({printf})"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [_timeless(line) for line in proc.stdout.splitlines()] == _expected_lines(saved, questions)


def test_the_interactive_answer_line_labels_its_fields(saved, records, monkeypatch, capsys):
    """The session in this process, input() fed a question, a mode switch, the question again, then Ctrl-D."""
    parser = argparse.ArgumentParser()
    infer_cli.add_arguments(parser)
    session = infer_cli.Session(KavaModel.from_pretrained(saved), parser.parse_args(["--model", str(saved)]))
    typed = iter([records[0].question, ":mode cot", records[0].question])

    def type_line(prompt: str) -> str:
        line = next(typed, None)
        if line is None:
            raise EOFError
        return line

    monkeypatch.setattr("builtins.input", type_line)
    assert session.interactive() == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("answer: ")]
    model = KavaModel.from_pretrained(saved)
    for line, mode in zip(shown, ["latent", "cot"], strict=True):
        a = generate(model, records[0].question, mode=mode)
        number = "no number" if a.answer is None else f"{a.answer:g}"
        assert re.fullmatch(rf"answer: {re.escape(number)} \| mode: {mode} \| passes: {a.forward_passes} \| "
                            rf"\d+\.\d\d s \| raw: {re.escape(json.dumps(a.text.strip(), ensure_ascii=False))}",
                            line), line


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
        assert "| mode: latent | passes: " in _read_until(fd, "kava> ")
        os.write(fd, b":latents on\n")
        assert "latents: on" in _read_until(fd, "kava> ")
        os.write(fd, (records[0].question + "\n").encode())
        shown = _read_until(fd, "kava> ")
        assert "| mode: latent | " in shown and "top-1 per pass" in shown and "iter 3" in shown
        os.write(fd, b":latents maybe\n")
        assert "error: :latents takes on or off" in _read_until(fd, "kava> ")
        os.write(fd, b":mode cot\n")
        assert "mode: cot" in _read_until(fd, "kava> ")
        os.write(fd, b":frobnicate\n")
        assert "unknown command :frobnicate" in _read_until(fd, "kava> ")
        os.write(fd, b":temp -1\n")
        assert "error: :temp takes a number" in _read_until(fd, "kava> ")
        os.write(fd, (records[1].question + "\n").encode())
        assert "| mode: cot | " in _read_until(fd, "kava> ")
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
    status, _, err = _infer_in_process(["--model", str(d)], "Tom has 3 apples.\n", monkeypatch, capsys)
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
