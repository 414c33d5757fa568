"""``kava train``: fine-tune from a YAML run config, resume it, or export the result.

    kava train --config configs/smollm2-135m.yaml                 # train
    kava train --config configs/smollm2-135m.yaml train.lr=1e-4   # with overrides
    kava train --config configs/smollm2-135m.yaml --resume        # continue after a stop
    kava train --config configs/smollm2-135m.yaml --export out/   # merge LoRA, standalone folder
    kava train --help-config                                      # every config key, its default and meaning

Multi-GPU: ``accelerate launch [--config_file configs/accelerate_fsdp.yaml] -m kava.cli train ...``.
Every problem with the inputs — configuration, dataset, model source, output folder, a resume
that does not match the run — is reported as one line (exit status 2, `kava.runtime.exits`) before
anything slow happens, and leaves the output folder as it was. A run owns its output folder
while it works (`kava.runtime.outputs`); stopped by SIGINT / SIGTERM it saves a checkpoint and exits
with status 75, finished with 0. A write the disk refuses (full, read-only) is one line naming the
folder and the bytes it needs, status 74; the last checkpoint is intact and ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _HelpConfig(argparse.Action):
    """Print every run-config key (type, default, meaning) and exit, like ``--help`` does."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from kava.training.config_reference import render_markdown, render_text

        print(render_markdown() if values == "markdown" else render_text(), end="")
        parser.exit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML run config (see configs/)")
    parser.add_argument("--help-config", action=_HelpConfig, nargs="?", choices=("text", "markdown"), const="text",
                        help="list every config key with its type, default and meaning, then exit "
                             "(markdown: the table of docs/config.md)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config values, e.g. train.lr=1e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--data-dir", default=None, help="folder the config's registered datasets are read from "
                        "(default: $KAVA_DATA_DIR, else their hub ids); a named folder without the file is an error")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="instead of training: merge the trained LoRA into the base and write a standalone model to DIR")
    parser.add_argument("--from", dest="export_from", type=Path, metavar="DIR",
                        help="trained model or checkpoint to export (default: <output_dir>/final)")


def run(args: argparse.Namespace) -> int:
    from kava.runtime import exits
    from kava.runtime.disk import WriteFailed
    from kava.training.from_config import INPUT_ERRORS, RefusedStart, report_outcome, train_from_config
    from kava.training.run_config import load_run_config

    try:
        cfg = load_run_config(args.config, args.overrides)
        if args.export is not None:
            return _export(cfg, args.export, args.export_from)
        result = train_from_config(cfg, resume=args.resume, progress=not args.no_progress, data_dir=args.data_dir)
    except (RefusedStart, *INPUT_ERRORS) as e:
        print(f"kava train: error: {_one_line(e)}", file=sys.stderr)
        return exits.BAD_INPUT
    except WriteFailed as e:
        then = "rerun the export" if args.export is not None else "--resume continues from the last checkpoint"
        print(f"kava train: error: {_one_line(e)}; free space (or make it writable), then {then}", file=sys.stderr)
        return exits.WRITE_FAILED
    report_outcome(result)
    return exits.INTERRUPTED if result.interrupted else exits.OK


def _export(cfg, out: Path, source: Path | None) -> int:
    from kava.runtime.layout import FINAL
    from kava.model.persistence import find_model_dir
    from kava.runtime import exits
    from kava.training.from_config import export_trained

    try:
        trained = find_model_dir(source or Path(cfg.output_dir) / FINAL)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--from: {e}") from None
    print(f"wrote {export_trained(cfg, trained, out)}")
    return exits.OK


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
