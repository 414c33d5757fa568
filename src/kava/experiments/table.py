"""A results table as one file: rows (a run config each, a method, a training set), seeds, test sets,
and which row starts from which; `load_table` turns it into a sweep `Plan` (train base) that
``kava reproduce`` runs with the sweep's machinery: resumable, one command per run, a report.

A table file::

    title: KaVa's Table 1, Llama-3.2-1B-Instruct
    seeds: [0, 1, 2]
    checkpoint: best                 # which model is tested: best (eval.keep_best's best/) or final
    test:                            # every row's model is evaluated on each, in this order
      - {dataset: gsm8k}
      - {dataset: gsm8k-hard}
      - {dataset: svamp}
    settings: {train.epochs: 1}      # optional: dotted config keys changed in every row
    rows:
      cot-aug:     {config: llama1b-aug-cot.yaml}               # paths relative to this file
      pccot-aug:   {config: llama1b-aug.yaml, method: pccot}    # another preset on the same config
      coconut-aug: {config: llama1b-aug-coconut.yaml, start_from: cot-aug}

A row with ``start_from`` trains from the merged export of that row's model of the same seed
(its ``checkpoint``), written once into the earlier run's folder (``runs/<row>-seed<S>/export``):
Coconut's protocol, a CoT-trained start. Runs are ordered so every start comes first; a cycle or
an unknown row is a one-line `GridError`, as is anything else wrong in the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from kava.config import ConfigError
from kava.experiments.grid import (BASE_VARIANT, CHECKPOINTS, Plan, RunSpec, _eval_spec, _set, read_checked,
                                   read_seeds)
from kava.runtime.outputs import as_json

TOP_KEYS = ("title", "seeds", "checkpoint", "test", "settings", "rows")
ROW_KEYS = ("config", "method", "start_from", "settings")


def load_table(path: str | Path) -> Plan:
    """Read and check a table file into the `Plan` of its runs, starts first."""
    from kava.training.run_config import run_config_from_dict

    path = Path(path)
    raw, fail = read_checked(path, "table", TOP_KEYS)
    seeds = read_seeds(raw, fail)
    checkpoint = raw.get("checkpoint", "final")
    if checkpoint not in CHECKPOINTS:
        fail("checkpoint", f"expected one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    tests = raw.get("test")
    if not isinstance(tests, list) or not tests:
        fail("test", f"expected a list of test sets like {{dataset: gsm8k}}, got {tests!r}")
    tests = [_eval_spec({**t, "checkpoint": checkpoint} if isinstance(t, dict) else t, fail) for t in tests]
    names = [t["dataset"] for t in tests]
    if len(set(names)) != len(names):
        fail("test", f"a test set is listed twice ({names})")
    settings = raw.get("settings") or {}
    rows = raw.get("rows")
    if not isinstance(rows, dict) or not rows:
        fail("rows", "expected a mapping of row name: {config: ...}")
    plan = Plan(path, "train")
    for row in _dependency_order(rows, fail):
        spec = rows[row]
        for seed in seeds:
            data = _row_config(path, row, spec, settings, seed, fail)
            try:
                resolved = run_config_from_dict(copy.deepcopy(data))
            except ConfigError as e:
                fail(f"rows.{row}", str(e))
            if checkpoint == "best" and not (resolved.eval and resolved.eval.keep_best):
                fail(f"rows.{row}", "checkpoint: best needs the row's config to keep best/ (eval.keep_best: true "
                                    "with train.eval_every)")
            start = spec.get("start_from")
            method = resolved.method.method
            variant = BASE_VARIANT if row == method else row  # the report's row: "method [row]"
            config = {"base": "train", "method": method, "seed": seed, "variant": variant, "knobs": {},
                      "run_config": data, "eval": tests[0], "tests": tests,
                      "start_from": None if start is None else f"{start}-seed{seed}"}
            plan.runs.append(RunSpec(f"{row}-seed{seed}", method, seed, variant, {}, as_json(config)))
    plan.title = raw.get("title")
    return plan


def _row_config(path: Path, row: str, spec: Any, settings: dict, seed: int, fail) -> dict[str, Any]:
    if not isinstance(spec, dict) or "config" not in spec:
        fail(f"rows.{row}", "expected {config: <run config file>, ...}")
    unknown = sorted(set(spec) - set(ROW_KEYS))
    if unknown:
        fail(f"rows.{row}.{unknown[0]}", f"unknown key (known: {', '.join(ROW_KEYS)})")
    config_path = path.parent / spec["config"]
    if not config_path.is_file():
        fail(f"rows.{row}.config", f"no such kava train config {config_path}")
    data = yaml.safe_load(config_path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("method"), dict):
        fail(f"rows.{row}.config", f"{config_path} is not a run config with a method section")
    if spec.get("method"):
        data["method"] = _other_method(data["method"], spec["method"], f"rows.{row}.method", fail)
    data.setdefault("train", {})["seed"] = seed
    data["output_dir"] = f"runs/{row}-seed{seed}/train"  # placed in the table's folder when it runs
    for key, value in {**settings, **(spec.get("settings") or {})}.items():
        _set(data, str(key), value)
    return data


def _other_method(method: dict[str, Any], name: str, key: str, fail) -> dict[str, Any]:
    """The config's method section for preset ``name``: a knob both presets set alike (LoRA, M, T,
    the shared training knobs) keeps the config's value; one that tells the methods apart (PCCoT's
    α_KV = 0 against KaVa's) takes the new preset's, so a row never inherits the other method."""
    import dataclasses

    from kava.config import PRESETS, preset

    if name not in PRESETS:
        fail(key, f"{name!r} is not one of {', '.join(PRESETS)}")
    old, new = dataclasses.asdict(preset(method.get("preset"))), dataclasses.asdict(preset(name))
    return {"preset": name, **{k: v for k, v in method.items() if k != "preset" and old.get(k) == new.get(k)}}


def _dependency_order(rows: dict[str, Any], fail) -> list[str]:
    """Row names with every ``start_from`` before the rows that start from it (file order otherwise)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(row: str, chain: list[str]) -> None:
        if row in order:
            return
        if row in visiting:
            fail(f"rows.{row}.start_from", f"a cycle: {' -> '.join([*chain, row])}")
        visiting.add(row)
        start = rows[row].get("start_from") if isinstance(rows[row], dict) else None
        if start is not None:
            if start not in rows:
                fail(f"rows.{row}.start_from", f"{start!r} is not a row of this table")
            visit(start, [*chain, row])
        visiting.discard(row)
        order.append(row)

    for row in rows:
        visit(str(row), [])
    return order
