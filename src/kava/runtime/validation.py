"""The one validation mechanism of every config object: pydantic dataclasses whose errors read as
one `ConfigError` line naming the key and the offending value (``train.lr: must be > 0, got 0``).

Leaf types are strict (`Int`, `Bool`, `Number`): YAML already types its scalars, so turning
``"3"`` into 3 or ``"yes"`` into True would hide a typo. The one exception is `Number`, because
PyYAML reads ``8e-4`` (no dot) as a string. Ranges sit next to the fields (``Field(ge=1)``) and
choice lists come from the tables they name (`one_of`), so adding an eviction adds a choice.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from collections.abc import Callable, Collection
from typing import Annotated, Any, TypeVar

import pydantic.dataclasses
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from typing_extensions import dataclass_transform


class ConfigError(ValueError):
    """An invalid option; the message names the option and the offending value."""


def _yaml_number(value: Any) -> Any:
    """A string that parses as a float becomes one (PyYAML leaves ``8e-4`` a string)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


Int = Annotated[int, Strict()]  # rejects 2.5, "3" and true
Bool = Annotated[bool, Strict()]  # rejects "yes" and 1
Number = Annotated[float, BeforeValidator(_yaml_number), Strict()]  # ints widen; bools are not numbers


def one_of(table: Collection[str]) -> AfterValidator:
    """Accept the names in `table` (read at validation time, so the choices are the table's)."""

    def check(value: str) -> str:
        if value not in table:
            raise ValueError(f"{value!r} is not one of {', '.join(table)}")
        return value

    check.choices = table  # type: ignore[attr-defined]  # read by the config reference
    return AfterValidator(check)


C = TypeVar("C")


@dataclass_transform(field_specifiers=(Field,))
def config_class(prefix: str) -> Callable[[type[C]], type[C]]:
    """Make `cls` a validated dataclass whose errors are `ConfigError`s keyed under `prefix`.

    It stays a standard dataclass (``dataclasses.replace``, ``asdict``, ``fields`` work, and
    ``replace`` validates again); a nested config class reports its keys under the outer one's.
    ``__post_init__`` runs after the field checks, for the checks that span fields; a
    `ConfigError` it raises already names its key and passes through unchanged.
    """

    def wrap(cls: type[C]) -> type[C]:
        cls = pydantic.dataclasses.dataclass(cls, config=ConfigDict(extra="forbid"))
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise ConfigError(describe(e, cls, prefix)) from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "dict_type": "a mapping",
    "dataclass_type": "a mapping", "tuple_type": "a list", "list_type": "a list",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def describe(error: ValidationError, cls: type, prefix: str) -> str:
    """The first of pydantic's errors as one line: ``key: what is wrong, got value``."""
    errors = error.errors()
    first = errors[0]
    kind, value = first["type"], first["input"]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    owner, path, field = _walk(cls, first["loc"])
    key = ".".join(p for p in (prefix, *path) if p)
    if field is not None and field.title:
        key += f" ({field.title})"
    if kind in _EXPECTED:  # a union fails once per member: name them all
        wanted = dict.fromkeys(_EXPECTED[e["type"]] for e in errors
                               if e["type"] in _EXPECTED and _walk(cls, e["loc"])[1] == path)
        return f"{key}: expected {' or '.join(wanted)}, got {value!r} ({type(value).__name__})"
    if kind in _BOUNDS:
        bound, sign = _BOUNDS[kind]
        return f"{key}: must be {sign} {first['ctx'][bound]:g}, got {value!r}"
    if kind in ("missing", "missing_argument"):
        return f"{key}: missing"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{key}: unknown key (known: {', '.join(sorted(f.name for f in dataclasses.fields(owner)))})"
    if kind == "value_error":
        return f"{key}: {cause}"
    return f"{key}: {first['msg']}, got {value!r}"


def _walk(cls: type, loc: tuple[int | str, ...]) -> tuple[type, list[str], Any]:
    """Follow an error location through nested config classes.

    Returns the class holding the last key, the keys, and that key's field info (None for an
    unknown key). Parts after a leaf field name union members or list items, and are dropped.
    """
    owner: Any = cls
    path: list[str] = []
    field = None
    for part in loc:
        fields = getattr(owner, "__pydantic_fields__", None)
        if fields is None:
            break
        path.append(str(part))
        field = fields.get(part)
        if field is None:
            break
        inner = next((a for a in (field.annotation, *typing.get_args(field.annotation))
                      if pydantic.dataclasses.is_pydantic_dataclass(a)), None)
        if inner is None:
            break
        owner = inner
    return owner, path, field



def read_yaml_mapping(path: Path, *, missing: str, expected: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """A YAML file that must hold a mapping, read with one-line errors naming the file: ``missing``
    is the whole message for a file that does not exist, ``expected`` says what the mapping holds."""
    import yaml

    if not path.is_file():
        raise error(missing)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping {expected}")
    return data
