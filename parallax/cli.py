"""The `parallax` command line.

Every subcommand is a plugin registered in the `parallax.commands` entry-point
group (see pyproject.toml) as a `Command`: a config class plus a function that
takes one instance of it. The flags are generated from the config fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from parallax.config.base import ConfigBase, field_base_type
from parallax.errors import ParallaxError

ENTRY_POINT_GROUP = "parallax.commands"
DISTRIBUTION = "parallax-p2p"


@dataclass(frozen=True)
class Command:
    """A subcommand: its config class and the function that runs it."""

    name: str
    config_cls: type[ConfigBase]
    run: Callable[[Any], int | None]
    help: str = ""


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[ConfigBase]) -> None:
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        meta = f.metadata
        scalar, _optional, is_tuple = field_base_type(hints[f.name])
        flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
        has_default = f.default is not dataclasses.MISSING
        unit = f" [{meta['unit']}]" if meta.get("unit") else ""
        default_txt = f" (default: {f.default})" if has_default else " (required)"
        help_txt = f"{meta.get('help', '')}{unit}{default_txt}"
        if meta.get("env"):
            help_txt += f"; env {meta['env']}"
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_txt}
        if meta.get("positional"):
            parser.add_argument(f.name, type=scalar, choices=meta.get("choices"), help=help_txt)
            continue
        if scalar is bool and not is_tuple:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = f.default if has_default else False
        else:
            kwargs["type"] = scalar
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if is_tuple:
                kwargs["action"] = "append"
                kwargs["default"] = None
            elif has_default:
                kwargs["default"] = f.default
            else:
                kwargs["required"] = True
        parser.add_argument(flag, **kwargs)


def config_from_args(config_cls: type[ConfigBase], ns: argparse.Namespace) -> ConfigBase:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        value = getattr(ns, f.name)
        env = f.metadata.get("env")
        if isinstance(value, list):
            value = tuple(value)
        if value is None and f.default is not dataclasses.MISSING:
            value = f.default
        if env and os.environ.get(env) and (value is None or value == f.default or value == ()):
            raw = os.environ[env]
            value = tuple(v for v in raw.split(",") if v) if isinstance(f.default, tuple) else raw
        values[f.name] = value
    return config_cls(**values)


def command_names() -> dict[str, str]:
    """Entry-point name -> "module:attr", without importing anything."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_command(name: str) -> Command:
    (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    cmd = ep.load()
    if not isinstance(cmd, Command):
        raise TypeError(f"entry point {ep.value} must be a parallax.cli.Command")
    return cmd


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's), or "unknown" if not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def build_parser(commands: dict[str, Command | None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parallax", description="Decentralized peer-to-peer LLM inference."
    )
    parser.add_argument("--version", action="version", version=f"parallax {installed_version()}")
    parser.add_argument("--log-level", default=os.environ.get("PARALLAX_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(commands):
        cmd = commands[name]
        if cmd is None:  # listed for --help only; not imported
            sub.add_parser(name, help=f"see `parallax {name} --help`")
            continue
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        add_config_arguments(p, cmd.config_cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names = command_names()
    # Import only the command being run: `parallax chat` must not pay for torch.
    chosen = next((a for a in args if not a.startswith("-")), None)
    commands: dict[str, Command | None] = dict.fromkeys(names)
    if chosen in names:
        commands[chosen] = load_command(chosen)
    parser = build_parser(commands)
    ns = parser.parse_args(args)
    if not ns.command:
        parser.print_help()
        return 2
    from parallax.logs import setup_logging

    setup_logging(ns.log_level)
    cmd = commands[ns.command]
    if cmd is None:
        return 2
    try:
        config = config_from_args(cmd.config_cls, ns)
        rc = cmd.run(config)
    except ParallaxError as e:
        print(f"parallax {ns.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    # Run through the package so `Command` has one identity (not a second `__main__` copy).
    from parallax.cli import main as package_main

    sys.exit(package_main())
