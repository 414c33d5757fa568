"""``kava lm-eval``: lm-evaluation-harness's own command line, with the ``kava`` model type and
kava's offline tasks available (``pip install 'kava[lm-eval]'``).

    kava lm-eval --model kava --model_args pretrained=RUN/final,mode=latent --tasks kava_gsm8k
    kava lm-eval ls tasks            # any lm-eval command; kava's tasks are the ``kava`` tag

Every argument goes to lm-eval unchanged; this only imports `kava.evaluation.harness` (which
registers the model: lm-eval 0.4 has no plugin hook for model types), adds ``--include_path``
for kava's task folder unless one is given, and ``--device cpu`` when none is given and torch
sees no GPU (lm-eval's default device is cuda). Bad input (an unknown task, no kava model at
``pretrained=``) is one line on stderr and exit status 2 (`kava.runtime.exits`); an unknown
option is lm-eval's usage message, status 2 too.
"""

from __future__ import annotations

import argparse
import sys

from kava.runtime import exits


PASS_THROUGH = True  # `kava.cli` hands every argument after ``lm-eval`` to `run` as ``args.passed``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None of its own: the arguments are lm-eval's."""


def lm_eval_argv(args: list[str], tasks_dir: str, *, has_gpu: bool) -> list[str]:
    """lm-eval's argv: ``run`` when no lm-eval command is named (as ``lm_eval`` itself does),
    kava's task folder as ``--include_path`` for ``run`` / ``ls`` / ``validate``, and the device."""
    commands = ("run", "ls", "validate")
    argv = list(args) if args and args[0] in commands + ("-h", "--help") else ["run", *args]

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in argv)

    if argv[0] in commands and not given("--include_path"):
        argv += ["--include_path", tasks_dir]
    if argv[0] == "run" and not given("--device") and not has_gpu:
        argv += ["--device", "cpu"]
    return argv


def run(args: argparse.Namespace) -> int:
    try:
        from lm_eval._cli.harness import HarnessCLI
        from lm_eval.utils import setup_logging

        from kava.evaluation.harness import TASKS_DIR
    except ImportError as exc:
        print(f"kava lm-eval: error: lm-evaluation-harness is not installed ({exc.name}); "
              "pip install 'kava[lm-eval]'", file=sys.stderr)
        return exits.BAD_INPUT
    import torch

    argv = lm_eval_argv(args.passed, str(TASKS_DIR), has_gpu=torch.cuda.is_available())
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # lm-eval's parser reads sys.argv itself
    try:
        setup_logging()
        cli = HarnessCLI()
        cli.execute(cli.parse_args())
    except (ValueError, FileNotFoundError) as exc:
        # lm-eval's own checks (an unknown task, a missing --config file) and the kava model type's
        # (no model at pretrained=, a damaged one, an argument it does not take) raise these before
        # any result is written: one line and BAD_INPUT, as every kava command refuses bad input.
        print(f"kava lm-eval: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    finally:
        sys.argv = saved
    return exits.OK
