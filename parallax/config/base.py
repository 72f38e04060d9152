"""Config objects: frozen dataclasses whose fields carry help text and units.

Each process has exactly one config object. `parallax.cli` builds its argparse
flags from the fields, so a flag cannot drift from the field it sets.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar, Self

from parallax.errors import ConfigError


def opt(
    default: Any = MISSING,
    *,
    help: str,
    unit: str | None = None,
    choices: tuple[Any, ...] | None = None,
    flag: str | None = None,
    env: str | None = None,
    positional: bool = False,
) -> Any:
    """A documented config field. `unit` is shown in `--help` (e.g. "GiB", "ms")."""
    meta = {
        "help": help,
        "unit": unit,
        "choices": choices,
        "flag": flag,
        "env": env,
        "positional": positional,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults: configs are frozen")
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ConfigBase:
    """Base of every process config. Subclasses validate in `validate()`."""

    command_help: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(
                    f"{self.flag_name(f.name)} must be one of {', '.join(map(str, choices))}; "
                    f"got {value!r}"
                )
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the flag and how to fix it."""

    @classmethod
    def flag_name(cls, name: str) -> str:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return "--" + (f.metadata.get("flag") or name.replace("_", "-"))
        return "--" + name.replace("_", "-")

    def require(self, ok: bool, name: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{self.flag_name(name)}={getattr(self, name)!r}: {why}")

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_base_type(tp: Any) -> tuple[type, bool, bool]:
    """(scalar type, optional, is_tuple) for a field annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin is tuple:
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False
