"""The run config's reference, rendered from the config classes themselves (``kava train
--help-config``, docs/config.md), so a knob's type, default, range and meaning are written once:
on its field.
"""

from __future__ import annotations

import textwrap
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydantic.dataclasses
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from kava.training.run_config import RunConfig

_TYPE_NAMES = {int: "int", bool: "bool", float: "number", str: "string", dict: "mapping", type(None): "null"}
_BOUNDS = ((Ge, "ge", "≥"), (Gt, "gt", ">"), (Le, "le", "≤"), (Lt, "lt", "<"))


@dataclass(frozen=True)
class Knob:
    """One key of the run config: its dotted name and what its field says about it."""

    key: str
    symbol: str  # the paper's name for it (M, T, λ, ...), or ""
    type: str
    default: str
    description: str


def knobs(cls: type = RunConfig, prefix: str = "") -> Iterator[Knob]:
    """Every key of `cls`, depth first; a nested config class is a section whose keys follow it."""
    for name, info in cls.__pydantic_fields__.items():
        key = f"{prefix}{name}"
        section = _section_class(info.annotation)
        if section is None:
            yield Knob(key, info.title or "", _type_name(info), _default(info), info.description or "")
        else:
            optional = " (optional)" if _default(info) == "null" else ""
            yield Knob(key, "", "section" + optional, "", info.description or "")
            yield from knobs(section, f"{key}.")


def render_text(width: int = 100) -> str:
    """The reference for a terminal: one block per key, its description wrapped under it."""
    lines = ["Run config keys (YAML sections; `kava train --config F key=value` overrides any of them).",
             "method.* defaults are the kava preset's; other presets change some (kava.methods).", ""]
    for k in knobs():
        symbol = f" ({k.symbol})" if k.symbol else ""
        head = f"{k.key}{symbol}: {k.type}" + (f" = {k.default}" if k.default else "")
        lines.append(head)
        lines += textwrap.wrap(k.description, width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The reference as the docs table (docs/config.md)."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for k in knobs():
        key = f"**`{k.key}`**" if k.type.startswith("section") else f"`{k.key}`" + (f" ({k.symbol})" if k.symbol else "")
        default = f"`{k.default}`" if k.default else ""
        text = k.description.replace("|", r"\|")
        rows.append(f"| {key} | {k.type} | {default} | {text} |")
    return "\n".join(rows) + "\n"


def _section_class(annotation: Any) -> type | None:
    """The config class a field holds (a section), or None for a leaf."""
    return next((a for a in (annotation, *typing.get_args(annotation)) if pydantic.dataclasses.is_pydantic_dataclass(a)), None)


def _type_name(info: FieldInfo) -> str:
    """``int ≥ 1``, ``one of jacobi, sequential``, ``number | null``: the annotation as a reader says it."""
    name = _named(info.annotation, info.metadata)
    bounds = [f"{sign} {getattr(m, attr):g}" for m in info.metadata for cls, attr, sign in _BOUNDS if isinstance(m, cls)]
    return ", ".join([name, *bounds]) + (" (required)" if info.is_required() else "")


def _named(tp: Any, metadata: Any = ()) -> str:
    choices = next((m.func.choices for m in metadata if hasattr(getattr(m, "func", None), "choices")), None)
    if choices is not None:
        return "one of " + ", ".join(choices)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _named(args[0], args[1:])
    if origin is tuple:
        return f"list of ({_named(args[0])})"
    if origin is dict:
        return "mapping"
    if args:  # a union
        return " or ".join(_named(a) for a in args)
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _default(info: FieldInfo) -> str:
    """The default as it would be written in YAML; "" for a required key."""
    if info.is_required():
        return ""
    value = info.get_default(call_default_factory=True)
    return _yaml(value)


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)
