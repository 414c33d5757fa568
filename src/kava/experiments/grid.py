"""Sweep grids: one YAML file names a base recipe, methods, seeds and knobs; `load_grid` turns it
into the list of runs, each with its fully resolved configuration.

A grid file::

    base: demo                      # the CPU demo's recipe, or a `kava train` config (path, relative
                                    # to the grid file) followed by `kava eval` with the `eval` section
    settings: {steps_latent: 300}   # changes to the base recipe for every run (demo: DemoSettings
                                    # fields, steps_<phase> / lr_<phase>, task (synthetic, mult4,
                                    # mult5, prosqa), method knobs; train: knobs)
    eval: {dataset: gsm8k}          # train base only: `kava eval` of each trained model (checkpoint:
                                    # final, or best: the run config's eval.keep_best model)
    methods: [kava, pccot]
    seeds: [0, 1, 2]
    more_seeds: {kava: [3, 4]}      # further seeds for some methods (each still from its seed's CoT run)
    knobs:                          # Cartesian product: every combination is a configuration
      num_latents: [4, 8]
    variants:                       # one-at-a-time changes from the base recipe (an ablation)
      crop: {eviction: crop}
      no-projection: {use_projection: false}

Runs = methods × variants (``base`` first, always) × knob combinations × the method's seeds. With the demo base
the variants and knobs change the latent methods only (``nocot`` and ``cot`` keep the base
recipe), and every latent run starts from the CoT run of its seed. With a train base a bare knob
is a method knob (``eviction``) and a dotted one a config key (``train.lr``).

Every problem is a `GridError`, one line naming the grid file and the key.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from kava.config import PRESETS, ConfigError, KavaConfig
from kava.methods import METHODS
from kava.runtime.outputs import as_json
from kava.runtime.validation import read_yaml_mapping

BASE_VARIANT = "base"
TOP_KEYS = ("base", "settings", "eval", "methods", "seeds", "more_seeds", "knobs", "variants")
EVAL_KEYS = ("dataset", "split", "limit", "batch_size", "max_new_tokens", "checkpoint")
CHECKPOINTS = ("final", "best")  # which model of a trained run is evaluated (best/: eval.keep_best)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


class GridError(ConfigError):
    """A grid file that cannot be run; the message names the file and the key."""


@dataclass
class RunSpec:
    """One run of a sweep: its folder name, what it trains and its resolved configuration.

    ``config`` is plain JSON data: it is written to the run's folder and a finished run must match
    it. ``cot`` names the run (of this sweep) whose CoT model a demo latent run starts from.
    """

    name: str
    method: str
    seed: int
    variant: str
    knobs: dict[str, Any]
    config: dict[str, Any]
    cot: str | None = None


@dataclass
class Plan:
    """A parsed grid: its base kind, the runs in the order they go, and the grid's own path (for a
    preset grid such as `kava demo`'s, the command that made it)."""

    path: Path
    base: str  # "demo" or "train"
    runs: list[RunSpec] = field(default_factory=list)
    preset: str | None = None  # the command of a grid built in code; None for a grid file
    title: str | None = None  # a table file's title (`kava.experiments.table`)

    def run(self, name: str) -> RunSpec:
        for spec in self.runs:
            if spec.name == name:
                return spec
        raise GridError(f"{self.path}: no run named {name!r} (see --dry-run for the list)")


def load_grid(path: str | Path, cot_from: str | Path | None = None) -> Plan:
    """Read and check a grid file into its `Plan`; ``cot_from`` (demo base) is a demo output folder
    whose ``runs/cot-seed<S>`` the latent runs start from instead of CoT runs of the sweep's own."""
    path = Path(path)
    raw, fail = read_checked(path, "grid", TOP_KEYS)
    methods = _names(raw.get("methods"), "methods", fail)
    for m in methods:
        if m not in PRESETS:
            fail("methods", f"{m!r} is not one of {', '.join(PRESETS)}")
    seeds = _method_seeds(read_seeds(raw, fail), raw.get("more_seeds"), methods, fail)
    settings = _mapping(raw.get("settings"), "settings", fail)
    variants = {BASE_VARIANT: {}} | _variants(raw.get("variants"), fail)
    combos = _product(raw.get("knobs"), fail)
    base = raw.get("base")
    if base == "demo":
        if raw.get("eval") is not None:
            fail("eval", "applies to a train base only (the demo evaluates on its own test set)")
        from kava.demo.run import DemoSettings

        try:
            demo = _demo_settings(DemoSettings(), settings)
        except (ConfigError, TypeError, ValueError) as e:
            fail("settings", str(e))
        return _demo_plan(Plan(path, "demo"), demo, methods, seeds, variants, combos, cot_from, fail)
    if not isinstance(base, str):
        fail("base", f"expected demo or the path of a kava train config, got {base!r}")
    if cot_from is not None:
        fail("base", "--cot-from applies to the demo base only")
    return _train_plan(path, (path.parent / base), methods, seeds, settings, raw.get("eval"), variants, combos, fail)


# --------------------------------------------------------------------------- the demo base

def demo_plan(settings, command: str = "kava demo") -> Plan:
    """The preset grid of `kava demo`: every method of ``settings`` (a `DemoSettings`) for each of
    its seeds, under the base recipe, each latent run starting from its seed's CoT run."""
    fail = _failer(Path(command))
    return _demo_plan(Plan(Path(command), "demo", preset=command), settings, list(settings.methods),
                      {m: list(settings.seeds) for m in settings.methods}, {BASE_VARIANT: {}}, [{}], None, fail)


def _demo_plan(plan: Plan, base, methods, seeds, variants, combos, cot_from, fail) -> Plan:
    from kava.demo.dataset_tasks import check_task

    try:
        check_task(base.dataset)  # before any run: a task the demo cannot score is refused at once
    except ValueError as e:
        fail("settings.task", str(e))
    for seed in dict.fromkeys(s for m in methods for s in seeds[m]):
        here = [m for m in methods if seed in seeds[m]]
        latent = [m for m in here if METHODS[m].latent]
        cot_name = None
        if latent and cot_from is None:
            cot_name = f"cot-seed{seed}"
            plan.runs.append(_demo_run(base, "cot", seed, BASE_VARIANT, {}, None))
        elif latent:
            cot_name = str(Path(cot_from).resolve() / "runs" / f"cot-seed{seed}")
        for method in here:
            if not METHODS[method].latent:  # nocot, cot: the base recipe (a variant would repeat it)
                if not any(r.name == f"{method}-seed{seed}" for r in plan.runs):
                    plan.runs.append(_demo_run(base, method, seed, BASE_VARIANT, {}, None))
                continue
            for variant, changes in variants.items():
                for combo in combos:
                    knobs = _merge(changes, combo, f"variants.{variant}", fail)
                    try:
                        s = _demo_settings(base, knobs)
                        s.method_config(method)  # every knob value checked now, not when its run starts
                    except (ConfigError, TypeError, ValueError) as e:
                        fail(f"variants.{variant}" if changes else "knobs", str(e))
                    from kava.demo.run import run_identity

                    if run_identity(s, "cot", seed) != run_identity(base, "cot", seed):
                        fail(f"variants.{variant}" if changes else "knobs",
                             "changes the CoT run the latent runs start from; the sweep has one CoT run per seed")
                    plan.runs.append(_demo_run(s, method, seed, _label(variant, combo), knobs, cot_name))
    return plan


def _demo_run(s, method: str, seed: int, label: str, knobs: dict[str, Any], cot: str | None) -> RunSpec:
    settings = asdict(replace(s, methods=(method,), seeds=(seed,), threads=None))
    config = {"base": "demo", "method": method, "seed": seed, "variant": label, "knobs": knobs,
              "settings": settings, "method_config": s.method_config(method).to_dict()}
    return RunSpec(_run_name(method, label, seed), method, seed, label, knobs, as_json(config), cot)


def demo_settings(config: dict[str, Any]):
    """The `DemoSettings` of a demo run's resolved ``config`` (as `_demo_run` wrote it)."""
    from kava.demo.run import DemoSettings
    from kava.demo.task import TaskConfig

    s = dict(config["settings"])
    s["task"] = TaskConfig(**s["task"])
    s["methods"], s["seeds"] = tuple(s["methods"]), tuple(s["seeds"])
    return DemoSettings(**s)


def _demo_settings(base, changes: dict[str, Any]):
    """``base`` with ``changes``: DemoSettings fields, ``steps_<phase>`` / ``lr_<phase>``, ``task``
    (a `kava.demo.dataset_tasks.TASK_CHOICES` name, as ``kava demo --task``), or method knobs (set
    on the latent methods' configs). A name both DemoSettings and KavaConfig know goes to
    DemoSettings, which applies it the demo's way (e.g. T = 0 stays pause's own)."""
    from kava.demo.dataset_tasks import DATASET_TASKS, dataset_of
    from kava.demo.run import check_model_knobs

    demo_fields = {f.name for f in fields(base)} - {"methods", "seeds", "method_overrides", "threads", "task"}
    knobs = {f.name for f in fields(KavaConfig)} - {"method"}
    s = replace(base, steps=dict(base.steps), lr=dict(base.lr), method_overrides=dict(base.method_overrides),
                model=dict(base.model))
    for key, value in changes.items():
        phase = key.partition("_")[2]
        if key.startswith(("steps_", "lr_")) and phase in s.steps:
            getattr(s, key.partition("_")[0])[phase] = value
        elif key == "task":
            if not isinstance(value, str):
                raise ConfigError(f"task: expected a task name, got {value!r}")
            s.dataset = dataset_of(value)
        elif key == "dataset":
            if value is not None and value not in DATASET_TASKS:
                raise ConfigError(f"dataset: expected one of {', '.join(DATASET_TASKS)} (or null), got {value!r}")
            s.dataset = value
        elif key in demo_fields:
            setattr(s, key, value)
        elif key in knobs:
            s.method_overrides[key] = value
        else:
            raise ConfigError(f"{key!r} is neither a demo setting, steps_<phase> / lr_<phase>, nor a method knob")
    check_model_knobs(s.model)  # set above by attribute, which skips DemoSettings' own check
    return s


# --------------------------------------------------------------------------- the train base

def _train_plan(path, config_path: Path, methods, seeds, settings, eval_raw, variants, combos, fail) -> Plan:
    from kava.training.run_config import run_config_from_dict

    if not config_path.is_file():
        fail("base", f"no such kava train config {config_path}")
    try:
        base = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as e:
        fail("base", f"{config_path} is not valid YAML ({' '.join(str(e).split())})")
    if not isinstance(base, dict) or not isinstance(base.get("method"), dict):
        fail("base", f"{config_path} is not a run config with a method section")
    evaluation = _eval_spec(eval_raw, fail)
    plan = Plan(path, "train")
    for method in methods:
        for variant, changes in variants.items():
            for combo in combos:
                knobs = _merge(changes, combo, f"variants.{variant}", fail)
                for seed in seeds[method]:
                    label = _label(variant, combo)
                    name = _run_name(method, label, seed)
                    data = copy.deepcopy(base)
                    data["method"]["preset"] = method
                    data.setdefault("train", {})["seed"] = seed
                    data["output_dir"] = f"runs/{name}/train"  # placed in the sweep's folder when it runs
                    for key, value in {**settings, **knobs}.items():
                        _set(data, key if "." in key else f"method.{key}", value)
                    try:
                        resolved = run_config_from_dict(copy.deepcopy(data))
                    except ConfigError as e:
                        fail(f"variants.{variant}" if changes else ("knobs" if combo else "settings"), str(e))
                    if evaluation["checkpoint"] == "best" and not (resolved.eval and resolved.eval.keep_best):
                        fail("eval.checkpoint", f"best needs the run config's eval.keep_best: true (run {name} keeps "
                                                "no best/ model)")
                    config = {"base": "train", "method": method, "seed": seed, "variant": label, "knobs": knobs,
                              "run_config": data, "eval": evaluation}
                    plan.runs.append(RunSpec(name, method, seed, label, knobs, as_json(config)))
    return plan


def _eval_spec(raw: Any, fail) -> dict[str, Any]:
    from kava.data.datasets import REGISTRY

    spec = _mapping(raw, "eval", fail)
    if not spec:
        fail("eval", "a train base needs an eval section naming the dataset, e.g. {dataset: gsm8k}")
    unknown = sorted(set(spec) - set(EVAL_KEYS))
    if unknown:
        fail(f"eval.{unknown[0]}", f"unknown key (known: {', '.join(EVAL_KEYS)})")
    name = spec.get("dataset")
    if not isinstance(name, str) or (name not in REGISTRY and not Path(name).expanduser().is_file()):
        fail("eval.dataset", f"{name!r} is neither a registered dataset nor an existing file")
    for key in ("limit", "batch_size", "max_new_tokens"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            fail(f"eval.{key}", f"expected an integer >= 1, got {value!r}")
    if spec.get("checkpoint", "final") not in CHECKPOINTS:
        fail("eval.checkpoint", f"expected one of {', '.join(CHECKPOINTS)}, got {spec['checkpoint']!r}")
    return {"split": None, "limit": None, "batch_size": 16, "max_new_tokens": None, "checkpoint": "final", **spec}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise GridError(f"{dotted}: {part} is not a section")
    node[last] = value


# --------------------------------------------------------------------------- shared parsing

def read_checked(path: Path, kind: str, keys: tuple[str, ...]):
    """A grid-like file's mapping (a `GridError` for a missing file or an unknown key) and its `fail`."""
    raw = read_yaml_mapping(path, missing=f"{path}: no such {kind} file", expected=f"with the keys {', '.join(keys)}",
                            error=GridError)
    fail = _failer(path)
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        fail(unknown[0], f"unknown key (known: {', '.join(keys)})")
    return raw, fail


def read_seeds(raw: dict[str, Any], fail) -> list[int]:
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        fail("seeds", f"expected a list of integers, got {seeds!r}")
    return seeds


def _method_seeds(seeds: list[int], more: Any, methods: list[str], fail) -> dict[str, list[int]]:
    """Each method's seeds: the grid's ``seeds`` and its ``more_seeds`` (a method that wants more
    seeds than the rest, e.g. five for KaVa and PCCoT, three for the others)."""
    more = _mapping(more, "more_seeds", fail)
    for method, extra in more.items():
        if method not in methods:
            fail(f"more_seeds.{method}", f"not one of the grid's methods ({', '.join(methods)})")
        if not isinstance(extra, list) or not extra or not all(isinstance(s, int) and not isinstance(s, bool) for s in extra):
            fail(f"more_seeds.{method}", f"expected a list of integers, got {extra!r}")
    return {m: list(dict.fromkeys([*seeds, *more.get(m, [])])) for m in methods}


def _failer(path: Path):
    def fail(key: str, message: str):
        raise GridError(f"{path}: {key}: {' '.join(message.split())}")

    return fail


def _names(raw: Any, key: str, fail) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        fail(key, f"expected a non-empty list of names, got {raw!r}")
    return list(dict.fromkeys(raw))


def _mapping(raw: Any, key: str, fail) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        fail(key, f"expected a mapping, got {raw!r}")
    return {str(k): v for k, v in raw.items()}


def _variants(raw: Any, fail) -> dict[str, dict[str, Any]]:
    variants = _mapping(raw, "variants", fail)
    for name, changes in variants.items():
        if name == BASE_VARIANT:
            fail(f"variants.{name}", "'base' is the unchanged recipe, always run; name the variant otherwise")
        if not _NAME.match(name):
            fail(f"variants.{name}", "a variant name is letters, digits and _ . = - (it names run folders)")
        variants[name] = _mapping(changes, f"variants.{name}", fail)
        if not variants[name]:
            fail(f"variants.{name}", "changes nothing; a variant is a mapping of knob: value")
    return variants


def _product(raw: Any, fail) -> list[dict[str, Any]]:
    """Every combination of the knob lists (one empty combination without knobs)."""
    knobs = _mapping(raw, "knobs", fail)
    for key, values in knobs.items():
        if not isinstance(values, list) or not values:
            fail(f"knobs.{key}", f"expected a non-empty list of values, got {values!r}")
    return [dict(zip(knobs, combo)) for combo in itertools.product(*knobs.values())]


def _merge(variant: dict[str, Any], combo: dict[str, Any], key: str, fail) -> dict[str, Any]:
    both = sorted(set(variant) & set(combo))
    if both:
        fail(key, f"sets {both[0]}, which knobs also varies; vary it in one place")
    return {**variant, **combo}


def _label(variant: str, combo: dict[str, Any]) -> str:
    parts = [] if variant == BASE_VARIANT and combo else [variant]
    parts += [f"{k}={_word(v)}" for k, v in combo.items()]
    return "+".join(parts)


def _word(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _run_name(method: str, label: str, seed: int) -> str:
    return f"{method}-seed{seed}" if label == BASE_VARIANT else f"{method}-{label}-seed{seed}"
