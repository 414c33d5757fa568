"""``kava sweep``: run a grid of runs (methods × variants × knobs × seeds) one after another.

    kava sweep configs/sweeps/demo-ablation.yaml --out runs/ablation --cot-from outputs/demo-full
    kava sweep GRID.yaml --out DIR --dry-run          # the runs, and which are finished
    kava sweep GRID.yaml --out DIR --print-commands   # one command per run, for a job scheduler
    kava sweep GRID.yaml --out DIR --only kava-crop-seed1

Running the same command again resumes: finished runs are skipped, an interrupted one continues.
A demo grid whose test set changed (test_size, eval_batch_size) scores its finished runs' final
models again instead of training them again.
After a whole sweep (no --only) the report is written to DIR/report (`kava report`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="grid YAML file (see configs/sweeps/)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the sweep: runs/<name>/ per run, report/")
    parser.add_argument("--only", action="append", metavar="RUN", help="run only this run (repeatable)")
    parser.add_argument("--cot-from", type=Path, metavar="DEMO_DIR",
                        help="demo base: start the latent runs from DEMO_DIR/runs/cot-seed<S> instead of training CoT")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether each is finished; run nothing")
    parser.add_argument("--print-commands", action="store_true", help="print one `kava sweep --only` command per run")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from kava.experiments.grid import load_grid
    from kava.experiments.sweep import SweepError, check_cot_sources, commands

    def load():
        plan = load_grid(args.grid, args.cot_from)
        problems = check_cot_sources(plan)
        if problems:
            raise SweepError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return plan

    def lines(plan) -> list[str]:
        return commands(plan, args.out, ["--cot-from", str(args.cot_from)] if args.cot_from else [])

    def report() -> int:
        from kava.experiments.report_cli import report as write

        return write(args.out, args.out / "report", strict=False)

    return run_plan(args, "kava sweep", load, lines, report)


def run_plan(args: argparse.Namespace, prog: str, load, command_lines, report, describe=None) -> int:
    """What ``kava sweep`` and ``kava reproduce`` share: load the plan (`load()`), then print its
    commands (``--print-commands``: `command_lines(plan)`), list its runs (``--dry-run``, each with
    `describe(spec)` when given), or run them (``--only``: some) and, after a whole run, `report()`.
    Bad input is one line (status 2); an interruption says how to resume (status 75)."""
    from kava.config import ConfigError
    from kava.experiments.sweep import FINISHED, DemoRunner, SweepError, run_state, run_sweep, train_runner
    from kava.runtime import exits
    from kava.runtime.outputs import FolderInUse
    from kava.runtime.stop import StoppedAfterSaving

    try:
        plan = load()
        for name in args.only or []:
            plan.run(name)
        if args.print_commands:
            print("\n".join(command_lines(plan)))
            return exits.OK
        if args.dry_run:
            todo = 0
            for spec in plan.runs:
                state = run_state(spec, args.out / "runs" / spec.name)
                todo += state != FINISHED
                print("\t".join([spec.name, state, *([describe(spec)] if describe else [])]))
            print(f"{len(plan.runs)} runs ({plan.base} base), {todo} to run", file=sys.stderr)
            return exits.OK
        runner = DemoRunner(args.out, not args.no_progress) if plan.base == "demo" else train_runner(args.out, not args.no_progress)
        done = run_sweep(plan, args.out, runner, args.only)
    except (ConfigError, SweepError, FolderInUse) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    except StoppedAfterSaving as e:
        print(f"\n{prog}: interrupted. {e}. Run the same command again to resume.", file=sys.stderr)
        return exits.INTERRUPTED
    print(f"ran {len(done['ran'])}, skipped {len(done['skipped'])} finished run(s)", file=sys.stderr)
    return report() if not args.only else exits.OK
