"""``kava demo``: the main job — KaVa vs CoT vs No-CoT trained and compared on CPU in minutes.

A preset grid of `kava sweep` (`kava.experiments.demo_preset`): the flags pick the methods, seeds
and steps; runs go to OUT/runs/, the report (`kava report`) to OUT/report/.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kava.demo.dataset_tasks import SYNTHETIC, TASK_CHOICES
    from kava.methods import demo_methods

    default, full = demo_methods(), demo_methods(full=True)
    parser.add_argument("--out", default="outputs/demo", help="output folder (runs/, and report/: table, summary.json, plots)")
    parser.add_argument("--full", action="store_true",
                        help=f"add {', '.join(m for m in full if m not in default)}, and run 3 seeds")
    parser.add_argument("--long", action="store_true",
                        help="train every method far longer (~50 min per seed): No-CoT and KaVa 10000 steps, "
                             "CoT 3000; the learning curves show where each method goes")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset to train and compare (default {','.join(default)}, or all "
                             f"{len(full)} with --full), e.g. cot,pccot: a latent method always trains the CoT run it "
                             "starts from")
    parser.add_argument("--task", choices=TASK_CHOICES, default=SYNTHETIC,
                        help="what the models learn: the synthetic word problems (default), iCoT's 4x4 or 5x5 "
                             "multiplication (mult4, mult5) or Coconut's ProsQA (prosqa), from the data folder "
                             "($KAVA_DATA_DIR); mult5 has no public test split and is refused")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 1, or 3 with --full)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue an earlier demo in --out: reuse completed runs, resume an interrupted one")


def run(args: argparse.Namespace) -> int:
    from kava.demo.dataset_tasks import dataset_of
    from kava.demo.run import DemoSettings
    from kava.experiments import demo_preset
    from kava.experiments.sweep import SweepError
    from kava.methods import in_order
    from kava.runtime import exits
    from kava.runtime.outputs import FolderInUse
    from kava.runtime.stop import StoppedAfterSaving

    settings = DemoSettings.full() if args.full else DemoSettings()
    if args.long:
        settings = settings.long()
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        choices = in_order()
        unknown = [m for m in methods if m not in choices]
        if not methods or unknown or len(set(methods)) != len(methods):
            print(f"kava demo: --methods must name each of {', '.join(choices)} at most once, got {args.methods!r}",
                  file=sys.stderr)
            return exits.BAD_INPUT
        settings.methods = methods
    if args.seeds is not None:
        if args.seeds < 1:
            print("kava demo: --seeds must be >= 1", file=sys.stderr)
            return exits.BAD_INPUT
        settings.seeds = tuple(range(args.seeds))
    settings.threads = args.threads
    settings.dataset = dataset_of(args.task)
    try:
        demo_preset.run_demo(args.out, settings, resume=args.resume, command=_command(args))
    except (FileExistsError, ValueError, SweepError, FolderInUse) as e:
        print(f"kava demo: {' '.join(str(e).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    except StoppedAfterSaving as e:
        print(f"\nkava demo: interrupted. {e}; continue with --resume", file=sys.stderr)
        return exits.INTERRUPTED
    return exits.OK


def _command(args: argparse.Namespace) -> str:
    """The command line that names this demo's grid (recorded in OUT/sweep.json)."""
    flags = [f"--task {args.task}"] if args.task != "synthetic" else []
    flags += [f for f, on in (("--full", args.full), ("--long", args.long)) if on]
    flags += [f"--methods {args.methods}"] if args.methods is not None else []
    flags += [f"--seeds {args.seeds}"] if args.seeds is not None else []
    return " ".join(["kava demo", *flags])
