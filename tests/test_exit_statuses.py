"""Exit statuses of every ``kava`` subcommand (`kava.runtime.exits`; README "When things go wrong").

- Bad input: each subcommand refuses one bad option or missing file with ``exits.BAD_INPUT`` and
  one line on stderr naming the problem, before any slow work and without writing anything.
- Interruption: a command that saves as it goes (a checkpoint, the predictions so far) and is
  stopped by SIGTERM exits with ``exits.INTERRUPTED``; one with nothing to save (``kava bench``,
  a batch of ``kava infer``) stopped by Ctrl-C exits with ``exits.ABORTED`` and writes no result.
- No command module returns or exits with an integer literal: every status is a name of `exits`.

The commands run in-process (``kava.cli.main``) on tiny models; a signal is sent to this process
from inside the command's own loop (as a cluster's preemption would), where its handler is set.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from kava.cli import SUBCOMMANDS, main
from kava.runtime import exits

from conftest import TRAIN_RECORDS as RECORDS
from test_reliability import run_config, trained, write_jsonl  # noqa: F401  (trained: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


def status_of(argv: list[str]) -> int:
    """``kava ARGV``'s exit status, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def signal_after(monkeypatch, owner, name: str, calls: int, sig: int = signal.SIGTERM) -> None:
    """Replace ``owner.name`` by itself followed, on its ``calls``-th call, by ``sig`` sent to this
    process: a SIGTERM only where the command's stop handler is set (else it would end pytest)."""
    real, count = getattr(owner, name), [0]

    def then_signal(*args, **kwargs):
        result = real(*args, **kwargs)
        count[0] += 1
        if count[0] == calls:
            if sig == signal.SIGTERM:
                assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN, None), "no stop handler is set"
            os.kill(os.getpid(), sig)
        return result

    monkeypatch.setattr(owner, name, then_signal)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# --------------------------------------------------------------------------- bad input: every subcommand

def bad_train(tmp):
    return ["train", "--config", str(tmp / "nowhere.yaml")], "nowhere.yaml"


def bad_eval(tmp):
    (tmp / "q.jsonl").write_text('{"question": "1 + 1?", "answer": "2"}\n')
    return ["eval", "--model", str(tmp / "nowhere"), "--dataset", str(tmp / "q.jsonl"), "--out", str(tmp / "e")], "nowhere"


def bad_lm_eval(tmp):
    pytest.importorskip("lm_eval")
    return (["lm-eval", "--model", "kava", "--model_args", f"pretrained={tmp / 'nowhere'}", "--tasks", "kava_gsm8k",
             "--limit", "1"], "nowhere")


def bad_infer(tmp):
    return ["infer", "--model", str(tmp / "model"), "--input", str(tmp / "questions.txt")], "--input"


def bad_inspect(tmp):
    (tmp / "out.txt").write_text("a file, not a folder")
    return ["inspect", "--model", str(tmp / "model"), "--question", "1 + 1?", "--out", str(tmp / "out.txt")], "is a file"


def bad_demo(tmp):
    return ["demo", "--out", str(tmp / "demo"), "--seeds", "0"], "--seeds"


def bad_demo_diagnose(tmp):
    return ["demo-diagnose", "--out", str(tmp / "nowhere")], "nowhere"


def bad_bench(tmp):
    return ["bench", "--demo", str(tmp / "nowhere"), "--out", str(tmp / "bench")], "nowhere"


def bad_sweep(tmp):
    return ["sweep", str(tmp / "nowhere.yaml"), "--out", str(tmp / "sweep")], "nowhere.yaml"


def bad_reproduce(tmp):
    return ["reproduce", str(tmp / "nowhere.yaml"), "--out", str(tmp / "table")], "nowhere.yaml"


def bad_plan(tmp):
    return ["plan", "--config", str(tmp / "nowhere.yaml")], "nowhere.yaml"


def bad_report(tmp):
    return ["report", str(tmp / "nowhere")], "nowhere"


BAD_INPUT = {"train": bad_train, "eval": bad_eval, "lm-eval": bad_lm_eval, "infer": bad_infer, "inspect": bad_inspect,
             "demo": bad_demo, "demo-diagnose": bad_demo_diagnose, "bench": bad_bench, "sweep": bad_sweep,
             "reproduce": bad_reproduce,
             "plan": bad_plan, "report": bad_report}


def test_every_subcommand_has_a_bad_input_case():
    assert set(BAD_INPUT) == set(SUBCOMMANDS)  # a new subcommand needs its case here


LOGS_FIRST = {"lm-eval"}  # lm-eval logs its own steps (tasks, seeds, model) to stderr before the model refuses


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_BAD_INPUT(command, tmp_path, capsys):
    argv, problem = BAD_INPUT[command](tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    status = status_of(argv)
    err = capsys.readouterr().err.strip()
    assert status == exits.BAD_INPUT, err
    if command in LOGS_FIRST:
        err = err.splitlines()[-1]
    assert "\n" not in err and err.startswith(f"kava {command}:") and problem in err, err
    assert snapshot(tmp_path) == before  # refused before writing anything


def test_an_unknown_option_is_BAD_INPUT_too(capsys):
    assert status_of(["plan", "--no-such-option"]) == exits.BAD_INPUT  # argparse's own refusal
    assert "--no-such-option" in capsys.readouterr().err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- interruptions

def test_train_stopped_by_sigterm_saves_a_checkpoint_and_exits_INTERRUPTED(tmp_path, monkeypatch, capsys):
    from kava.training import engine

    signal_after(monkeypatch, engine, "_train_step", calls=1)
    assert main(["train", "--config", str(run_config(tmp_path, "run", max_steps=3)), "--no-progress"]) == exits.INTERRUPTED
    assert "resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "ckpt-1").is_dir() and not (tmp_path / "run" / "final").exists()


def test_eval_stopped_by_sigterm_keeps_the_predictions_so_far_and_exits_INTERRUPTED(trained, tmp_path, monkeypatch,
                                                                                    capsys):
    from kava.evaluation import evaluate as evaluate_module

    signal_after(monkeypatch, evaluate_module, "generate", calls=1)
    out = tmp_path / "eval"
    questions = write_jsonl(tmp_path / "questions.jsonl", RECORDS[:6])
    argv = ["eval", "--model", str(trained / "run" / "final"), "--dataset", str(questions),
            "--out", str(out), "--batch-size", "2", "--max-new-tokens", "2", "--no-progress"]
    assert main(argv) == exits.INTERRUPTED
    assert "--resume" in capsys.readouterr().err
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2 and not (out / "summary.json").exists()


def test_sweep_stopped_by_sigterm_keeps_the_runs_checkpoint_and_exits_INTERRUPTED(trained, tmp_path, monkeypatch,
                                                                                  capsys):
    """A train-base sweep: the run's training stops after its first step, with a checkpoint."""
    from kava.training import engine

    base = yaml.safe_load((trained / "run.yaml").read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"], "max_steps": 3}}))
    grid = tmp_path / "grid.yaml"
    questions = write_jsonl(tmp_path / "questions.jsonl", RECORDS[:6])
    grid.write_text(f"base: base.yaml\neval: {{dataset: {questions}, limit: 2, max_new_tokens: 2}}\n"
                    "methods: [kava]\n")
    signal_after(monkeypatch, engine, "_train_step", calls=1)
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out), "--no-progress"]) == exits.INTERRUPTED
    assert "again" in capsys.readouterr().err  # how to resume: run the same command again
    run = out / "runs" / "kava-seed0"
    assert (run / "train" / "checkpoints" / "ckpt-1").is_dir() and not (run / "metrics.json").exists()


def test_demo_stopped_by_sigterm_saves_a_checkpoint_and_exits_INTERRUPTED(tmp_path, monkeypatch, capsys):
    from kava.training import engine

    signal_after(monkeypatch, engine, "_train_step", calls=1)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--methods", "nocot", "--seeds", "1"]) == exits.INTERRUPTED
    assert "--resume" in capsys.readouterr().err
    assert [p.name for p in out.rglob("ckpt-*")] == ["ckpt-1"]


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal, whatever pytest inherited: a process
    started in the background by a non-interactive shell ignores SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_bench_stopped_by_ctrl_c_has_nothing_to_save_and_exits_ABORTED(tmp_path, monkeypatch, capsys, ctrl_c_raises):
    """Bench measures, then writes its report at the end: an interrupted bench keeps nothing, so
    a Ctrl-C stops it at once (there is no --resume)."""
    from kava.benchmark import bench

    demo = tmp_path / "demo"
    for run, _ in bench.INFERENCE_RUNS.values():
        (demo / "runs" / f"{run}-seed0" / "final").mkdir(parents=True)
    monkeypatch.setattr(bench, "_demo_models", lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C while building
    assert main(["bench", "--demo", str(demo), "--out", str(tmp_path / "bench")]) == exits.ABORTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kava bench: interrupted"
    assert not (tmp_path / "bench" / "report.json").exists()


def test_infer_stopped_by_ctrl_c_writes_no_answers_and_exits_ABORTED(trained, tmp_path, monkeypatch, capsys,
                                                                     ctrl_c_raises):
    """A batch of questions is answered, then written: interrupted, it keeps nothing."""
    from kava.evaluation import answering

    (tmp_path / "questions.txt").write_text("1 + 1?\n2 + 2?\n")
    signal_after(monkeypatch, answering, "answer_questions", calls=1, sig=signal.SIGINT)
    argv = ["infer", "--model", str(trained / "run" / "final"), "--input", str(tmp_path / "questions.txt"),
            "--output", str(tmp_path / "answers.jsonl"), "--max-new-tokens", "2"]
    assert main(argv) == exits.ABORTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kava infer: interrupted"
    assert not (tmp_path / "answers.jsonl").exists()


# --------------------------------------------------------------------------- statuses are names, not numbers

def command_modules() -> list[Path]:
    """The dispatcher, every subcommand's module, and every ``cli.py`` / ``*_cli.py`` in the package."""
    files = {SRC / "kava" / "cli.py"}
    files |= {Path(importlib.util.find_spec(module).origin) for module, _ in SUBCOMMANDS.values()}
    files |= set((SRC / "kava").rglob("cli.py")) | set((SRC / "kava").rglob("*_cli.py"))
    files = {f.resolve() for f in files}
    return sorted(files)


def _int_literal(node: ast.AST | None) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def literal_exits(source: str) -> list[str]:
    """``line: code`` of each ``return <int>``, ``sys.exit(<int>)`` / ``exit(<int>)`` / ``os._exit(<int>)``
    / ``parser.exit(<int>)`` and ``raise SystemExit(<int>)`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Return):
            bad = _int_literal(node.value)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            given = [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("status", "code"))]
            bad = name in ("exit", "_exit", "SystemExit") and any(_int_literal(a) for a in given)
        else:
            continue
        if bad:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_every_kind_of_literal_status():
    source = ("import sys\ndef run(args):\n    if args.a:\n        return 2\n    if args.b:\n        sys.exit(130)\n"
              "    if args.c:\n        raise SystemExit(1)\n    if args.d:\n        parser.exit(status=3)\n"
              "    if args.e:\n        return exits.OK\n    return True\n")
    assert sorted(int(line.split(":")[0]) for line in literal_exits(source)) == [4, 6, 8, 10]


def test_no_command_module_returns_or_exits_with_an_integer_literal():
    modules = command_modules()
    assert SRC / "kava" / "benchmark" / "cli.py" in modules and len(modules) >= len(SUBCOMMANDS)
    found = {str(f.relative_to(SRC.parent)): literal_exits(f.read_text()) for f in modules}
    assert not {f: lines for f, lines in found.items() if lines}, "use the names of kava.runtime.exits"
