"""``kava plan``: what a run config needs — memory per device, disk, steps — without loading weights.

    kava plan --config configs/llama3b-aug.yaml                       # one process on its device
    kava plan --config configs/llama3b-aug.yaml --processes 8 --gpu-memory 80GB
    kava plan --markdown configs/*.yaml > docs/plan.md                # the table of every config

A plan is an answer, not an error: a config that does not fit prints the verdict "does not fit"
and exits 0 (`kava.runtime.exits.OK`); a config, dataset or model shape that cannot be read is
one line on stderr and exit status 2 (``BAD_INPUT``). The estimate is `kava.training.plan.plan`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML run config (see configs/)")
    parser.add_argument("--markdown", type=Path, nargs="+", metavar="CONFIG",
                        help="instead: print docs/plan.md for these configs (stated device, 1×80 GB, 8×80 GB)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config values, e.g. train.micro_batch_size=4")
    parser.add_argument("--processes", type=int, default=1, help="processes (GPUs) the run is launched on (default 1)")
    parser.add_argument("--gpu-memory", metavar="SIZE",
                        help="memory of one device, e.g. 80GB or 24GiB (default: the config's device: this machine's "
                             "RAM for a CPU config, the local GPU's or 80 GB for a GPU config)")
    parser.add_argument("--data-dir", default=None, help="folder the config's registered datasets are read from "
                        "(default: $KAVA_DATA_DIR; kava plan reads local data only)")


def run(args: argparse.Namespace) -> int:
    from kava.runtime import exits
    from kava.training.from_config import INPUT_ERRORS
    from kava.training.plan import markdown, parse_bytes, plan, render
    from kava.training.run_config import load_run_config

    try:
        if args.processes < 1:
            raise ValueError(f"--processes: must be at least 1, got {args.processes}")
        if args.markdown:
            print(markdown(list(args.markdown), data_dir=args.data_dir), end="")
            return exits.OK
        if args.config is None:
            raise ValueError("--config: required (or --markdown CONFIG...)")
        memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None
        cfg = load_run_config(args.config, args.overrides)
        result = plan(cfg, processes=args.processes, device_memory=memory, data_dir=args.data_dir)
    except (ValueError, *INPUT_ERRORS) as e:
        print(f"kava plan: error: {' '.join(str(e).split())}", file=sys.stderr)
        return exits.BAD_INPUT
    print(render(result))
    return exits.OK
