"""``kava sweep``: run a grid of runs (methods × variants × knobs × seeds) one after another.

    kava sweep configs/sweeps/demo-ablation.yaml --out runs/ablation --cot-from outputs/demo-full
    kava sweep GRID.yaml --out DIR --dry-run          # the runs, and which are finished
    kava sweep GRID.yaml --out DIR --print-commands   # one command per run, for a job scheduler
    kava sweep GRID.yaml --out DIR --only kava-crop-seed1

Running the same command again resumes: finished runs are skipped, an interrupted one continues.
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
    from kava.runtime import exits
    from kava.config import ConfigError
    from kava.experiments.grid import load_grid
    from kava.experiments.sweep import (
        DemoRunner,
        SweepError,
        check_cot_sources,
        commands,
        finished,
        run_sweep,
        train_runner,
    )
    from kava.runtime.outputs import FolderInUse
    from kava.runtime.stop import StoppedAfterSaving

    try:
        plan = load_grid(args.grid, args.cot_from)
        for name in args.only or []:
            plan.run(name)
        problems = check_cot_sources(plan)
        if problems:
            raise SweepError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        if args.print_commands:
            extra = ["--cot-from", str(args.cot_from)] if args.cot_from else []
            print("\n".join(commands(plan, args.out, extra)))
            return exits.OK
        if args.dry_run:
            for spec in plan.runs:
                state = "finished" if finished(spec, args.out / "runs" / spec.name) else "to run"
                print(f"{spec.name}\t{state}")
            todo = sum(not finished(s, args.out / "runs" / s.name) for s in plan.runs)
            print(f"{len(plan.runs)} runs ({plan.base} base), {todo} to run", file=sys.stderr)
            return exits.OK
        runner = DemoRunner(args.out, not args.no_progress) if plan.base == "demo" else train_runner(args.out, not args.no_progress)
        done = run_sweep(plan, args.out, runner, args.only)
    except (ConfigError, SweepError, FolderInUse) as e:
        print(f"kava sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    except StoppedAfterSaving as e:
        print(f"\nkava sweep: interrupted. {e}. Run the same command again to resume.", file=sys.stderr)
        return exits.INTERRUPTED
    print(f"ran {len(done['ran'])}, skipped {len(done['skipped'])} finished run(s)", file=sys.stderr)
    if not args.only:
        from kava.experiments.report_cli import report

        return report(args.out, args.out / "report", strict=False)
    return exits.OK
