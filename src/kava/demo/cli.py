"""``kava demo``: the main job — KaVa vs CoT vs No-CoT trained and compared on CPU in minutes."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kava.methods import demo_methods

    default, full = demo_methods(), demo_methods(full=True)
    parser.add_argument("--out", default="outputs/demo", help="output folder (runs, summary.json, plot)")
    parser.add_argument("--full", action="store_true",
                        help=f"add {', '.join(m for m in full if m not in default)}, and run 3 seeds")
    parser.add_argument("--long", action="store_true",
                        help="train every method far longer (~50 min per seed): No-CoT and KaVa 10000 steps, "
                             "CoT 3000; the learning curves show where each method goes")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset to train and compare (default {','.join(default)}, or all "
                             f"{len(full)} with --full), e.g. cot,pccot: a latent method always trains the CoT run it "
                             "starts from")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 1, or 3 with --full)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue an earlier demo in --out: reuse completed runs, resume an interrupted one")


def run(args: argparse.Namespace) -> int:
    from kava.demo.run import DemoSettings, run_demo
    from kava.methods import in_order

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
            return 2
        settings.methods = methods
    if args.seeds is not None:
        if args.seeds < 1:
            print("kava demo: --seeds must be >= 1", file=sys.stderr)
            return 2
        settings.seeds = tuple(range(args.seeds))
    settings.threads = args.threads
    try:
        run_demo(args.out, settings, resume=args.resume)
    except (FileExistsError, ValueError) as e:
        print(f"kava demo: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\nkava demo: interrupted. {e}", file=sys.stderr)
        return 130
    return 0
