"""``kava infer``: ask a trained model questions — interactively, from a file, or from stdin.

- Interactive (a terminal): type a question, get one labelled line, e.g.
  ``answer: 42 | mode: latent | passes: 6 | 0.12 s | raw: "The answer is: 42"``.
  ``:mode latent|cot|direct``, ``:temp T`` (``:temp off`` for greedy), ``:help``, ``:quit`` (or
  Ctrl-D); arrow keys browse the history. A bad command or an empty question is one line, and the
  session goes on.
- Batch: ``--input FILE --output answers.jsonl``: one JSON row per question, the same answers
  ``kava eval`` gives. FILE is read once, as a stream, so a FIFO or a shell's process substitution
  (``--input <(grep ... questions.txt)``) works as well as a file. It holds JSONL (a
  ``question`` field per row) when its name ends with ``.jsonl`` or, whatever its name (a FIFO's
  ``/dev/fd/63`` has none), when its first non-empty line starts with ``{``; otherwise one
  question per line.
- Stdin: ``echo "question" | kava infer --model DIR`` prints one answer line per input line
  (JSON rows with ``--output``).

Answers come from `kava.evaluation.answering` (the decoder of ``kava eval``). The command sits at the
top of the package, beside `kava.api`, because it uses both evaluation and inspection (``:latents``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """commands:
  :mode latent|cot|direct   answer in this mode (now: {mode})
  :temp T | :temp off       sample at temperature T, or decode greedily (now: {temp})
  :latents on|off           after each latent answer, its latents read as tokens (now: {latents})
  :help                     this help
  :quit                     leave (Ctrl-D too)
anything else is a question."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a trained model: a run folder, a checkpoint, or a model / "
                        "exported folder")
    parser.add_argument("--mode", choices=("latent", "cot", "direct"), default=None,
                        help="how to answer (default: the mode the model was trained for)")
    parser.add_argument("--input", default=None,
                        help="questions, from a file, a FIFO or <(process substitution), read once: JSONL (a "
                             "'question' field per row) when the name ends with .jsonl or the first non-empty line "
                             "starts with '{', else one question per line")
    parser.add_argument("--output", default=None, help="write one JSON row per answer here (.jsonl)")
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="token limit (default: 256 for cot, 32 otherwise)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from kava.runtime import exits

    try:
        questions = _read_questions(args.input) if args.input else None
        _check_output(args.output)
        model = _load(args)
    except (ValueError, OSError) as exc:
        print(f"kava infer: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    session = Session(model, args)
    try:
        if questions is None and sys.stdin.isatty():
            return session.interactive()
        if questions is None:
            questions = [line.strip() for line in sys.stdin if line.strip()]
        answers = session.answer(questions)
    except ValueError as exc:
        print(f"kava infer: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    if args.output:
        with open(args.output, "w") as f:
            for a in answers:
                f.write(json.dumps(a.to_json()) + "\n")
        print(f"wrote {len(answers)} answers to {args.output}", file=sys.stderr)
    else:
        for a in answers:
            print(_line(a))
    return exits.OK


def _read_questions(name: str) -> list[str]:
    """The questions in ``--input``, read once from start to end, so a FIFO or a process
    substitution (``/dev/fd/63``), which cannot be reopened or sized, reads like a file. JSONL (a
    ``question`` field per row) when ``name`` ends with ``.jsonl`` or, since a stream's name says
    nothing, when its first non-empty line starts with ``{``; else one question per line."""
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"--input: {name} not found")
    if path.is_dir():
        raise ValueError(f"--input: {name} is a folder; give a file of questions")
    try:
        with path.open(encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"--input: {name} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    first = next((line for line in lines if line.strip()), "")
    if name.endswith(".jsonl") or first.lstrip().startswith("{"):
        questions = _jsonl_questions(name, lines)
    else:
        questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise ValueError(f"--input: {name} holds no questions")
    return questions


def _jsonl_questions(name: str, lines: list[str]) -> list[str]:
    questions = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--input: {name} line {n} is not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise ValueError(f"--input: {name} line {n} has no 'question' text")
        questions.append(row["question"])
    return questions


def _check_output(output: str | None) -> None:
    if output is not None and Path(output).is_dir():
        raise ValueError(f"--output: {output} is a folder; give a .jsonl file")


def _load(args: argparse.Namespace):
    from kava.config import ConfigError
    from kava.evaluation.answering import check_mode
    from kava.model.kava_model import KavaModel
    from kava.model.persistence import check_model_dir, find_model_dir

    try:
        check_model_dir(find_model_dir(args.model))
        model = KavaModel.from_pretrained(args.model, device=args.device)
        check_mode(model, args.mode)
    except ConfigError as e:
        raise ValueError(f"--model {args.model}: {e}") from None
    return model


def _number(a) -> str:
    return "no number" if a.answer is None else f"{a.answer:g}"


def _line(a) -> str:
    """An answer of the stdin mode: tab-separated, for ``cut`` and friends (docs/usage.md shows it)."""
    return f"{_number(a)}\t[{a.mode}, {a.forward_passes} forward passes, {1000 * a.latency_s:.0f} ms]\t{a.text.strip()}"


def _labelled_line(a) -> str:
    """An answer of the interactive session, each field named for a reader: the number read from
    the answer, the mode, the forward passes, the time and the decoded text (quoted, so an empty
    or multi-line text shows as such)."""
    raw = json.dumps(a.text.strip(), ensure_ascii=False)
    return f"answer: {_number(a)} | mode: {a.mode} | passes: {a.forward_passes} | {a.latency_s:.2f} s | raw: {raw}"


class Session:
    """The settings a user can change while asking (mode, temperature) and the answering itself."""

    def __init__(self, model, args: argparse.Namespace):
        from kava.evaluation.answering import check_mode

        self.model, self.args = model, args
        self.mode = check_mode(model, args.mode)
        self.temperature = args.temperature
        self.show_latents = False

    def answer(self, questions: list[str]):
        from kava.evaluation.answering import answer_questions
        from kava.evaluation.decoding import Sampling

        sampling = None if self.temperature is None else Sampling(self.temperature, self.args.top_p, self.args.seed)
        return answer_questions(self.model, questions, mode=self.mode, sampling=sampling,
                                max_new_tokens=self.args.max_new_tokens, batch_size=self.args.batch_size)

    def interactive(self) -> int:
        import readline  # noqa: F401  (arrow keys and history for input())

        from kava.runtime import exits

        print(f"kava infer: {self.args.model} ({self.mode} mode). Ask a question; :help for commands.")
        while True:
            try:
                line = input("kava> ").strip()
            except EOFError:
                print()
                return exits.OK
            except KeyboardInterrupt:
                print()
                continue
            if not line:
                continue
            if line.startswith(":"):
                if self.command(line):
                    return exits.OK
                continue
            try:
                [a] = self.answer([line])
            except ValueError as e:
                print(f"error: {e}")
                continue
            print(_labelled_line(a))
            if self.show_latents and self.mode == "latent":
                print(self.latents(line))

    def latents(self, question: str) -> str:
        """The top-1 grid of `kava inspect`: each latent slot read through the LM head, pass by pass."""
        from kava import api
        from kava.inspection.terminal import latent_table

        table = latent_table(api.inspect(self.model, question).latents)
        return "\n".join(table[: table.index("")])

    def command(self, line: str) -> bool:
        """Apply one command; True when it ends the session."""
        from kava.evaluation.answering import check_mode

        name, _, value = line[1:].partition(" ")
        value = value.strip()
        if name in ("quit", "q", "exit"):
            return True
        if name == "help":
            print(HELP.format(mode=self.mode, temp="greedy" if self.temperature is None else self.temperature,
                              latents="on" if self.show_latents else "off"))
        elif name == "latents":
            if value not in ("on", "off"):
                print(f"error: :latents takes on or off, got {value!r}")
            else:
                self.show_latents = value == "on"
                print(f"latents: {value}" + ("" if self.mode == "latent" else " (shown in latent mode)"))
        elif name == "mode":
            try:
                self.mode = check_mode(self.model, value)
                print(f"mode: {self.mode}")
            except ValueError as e:
                print(f"error: {e}")
        elif name == "temp":
            try:
                t = None if value == "off" else float(value)
                if t is not None and not t > 0:
                    raise ValueError
                self.temperature = t
                print(f"temperature: {'greedy' if t is None else t}")
            except ValueError:
                print(f"error: :temp takes a number > 0 or 'off', got {value!r}")
        else:
            print(f"error: unknown command :{name} (:help lists them)")
        return False
