"""Packaging and deploy files: the extras split the sides, and every command the deploy
files run (Dockerfiles, compose, systemd units) is the README's and parses with the real
`parallax` argument parser."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from unittest import mock

import pytest
import yaml

from parallax.cli import build_parser, config_from_args, installed_version, load_command
from tests.support.deploy import NOT_ON_COORDINATOR, NOT_ON_NODE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted(
    p for p in (DEPLOY / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore"
)
VENV_BIN = "/opt/parallax/venv/bin/"


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def parse_parallax(argv: list[str], env: dict[str, str] | None = None) -> object:
    """What `parallax ARGV` would run with, in environment `env` (the unit's or the
    service's PARALLAX_* variables): the real parser, then the config's validation."""
    cmd = load_command(argv[0])
    ns = build_parser({argv[0]: cmd}).parse_args(argv)
    own = {k: v for k, v in os.environ.items() if not k.startswith("PARALLAX_")}
    with mock.patch.dict(os.environ, {**own, **(env or {})}, clear=True):
        return config_from_args(cmd.config_cls, ns)


def test_extras_split_the_sides() -> None:
    proj = project()
    extras = proj["optional-dependencies"]
    base, node, coord = (
        names(proj["dependencies"]),
        names(extras["node"]),
        names(extras["coordinator"]),
    )
    assert not (base | node) & NOT_ON_NODE
    assert not (base | coord) & NOT_ON_COORDINATOR
    assert "torch" in node and "ortools" in coord and "fastapi" in coord
    # The test extra is everything: `make test` installs it and runs both sides.
    assert "parallax-p2p[node,coordinator]" in extras["test"]
    assert "grpcio-tools" in names(extras["test"])


def test_version_flag_prints_the_installed_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "parallax", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip()
        == f"parallax {project()['version']}"
        == f"parallax {installed_version()}"
    )


def pip_commands(text: str) -> list[str]:
    """Every `pip install` command in a Dockerfile or a README, one line each, no `RUN`."""
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(RUN\s+)?", "", line)
        if re.match(r"(\S*/)?(pip3?|python3? -m pip) install ", line):
            found.append(" ".join(line.split("#")[0].split()))
    return found


def test_dockerfiles_install_exactly_what_the_readme_says() -> None:
    readme = pip_commands((DEPLOY / "README.md").read_text())
    assert len(DOCKERFILES) == 2, DOCKERFILES
    in_docker: set[str] = set()
    for path in DOCKERFILES:
        cmds = pip_commands(path.read_text())
        assert cmds, f"{path.name} installs nothing"
        missing = [c for c in cmds if c not in readme]
        assert not missing, (
            f"{path.name} runs install commands deploy/README.md does not: {missing}"
        )
        in_docker.update(cmds)
    assert set(readme) == in_docker, "deploy/README.md documents installs no Dockerfile runs"
    # The torch pin is the node extra's, and the CPU image never gets the CUDA build.
    torch_pin = next(r for r in project()["optional-dependencies"]["node"] if r.startswith("torch"))
    for path in DOCKERFILES:
        torch_cmds = [c for c in pip_commands(path.read_text()) if " torch" in c]
        assert len(torch_cmds) == 1 and torch_pin in torch_cmds[0], path.name
    assert "/whl/cpu" in " ".join(pip_commands((DEPLOY / "docker/Dockerfile.cpu").read_text()))


def test_dockerfiles_name_real_extras_and_targets() -> None:
    extras = set(project()["optional-dependencies"])
    for path in DOCKERFILES:
        text = path.read_text()
        for extra in re.findall(r"/opt/parallax/src\[([a-z,]+)\]", text):
            assert set(extra.split(",")) <= extras, f"{path.name}: no extra [{extra}]"
    compose = yaml.safe_load((DEPLOY / "docker/compose.yaml").read_text())
    targets = set(
        re.findall(r"^FROM \S+ AS (\S+)", (DEPLOY / "docker/Dockerfile.cpu").read_text(), re.M)
    )
    for svc in compose["services"].values():
        assert svc["build"]["target"] in targets
        assert (DEPLOY / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_compose_runs_one_coordinator_and_two_nodes_with_valid_commands() -> None:
    services = yaml.safe_load((DEPLOY / "docker/compose.yaml").read_text())["services"]
    commands = {name: svc["command"] for name, svc in services.items()}
    assert sorted(c[0] for c in commands.values()) == ["join", "join", "run"]

    def environment(svc: dict) -> dict[str, str]:
        # `${VAR:?message}`: compose refuses to start without VAR; stand in a value.
        env = svc.get("environment", {})
        return {k: re.sub(r"\$\{(\w+):\?[^}]*\}", r"value-of-\1", v) for k, v in env.items()}

    configs = {
        name: parse_parallax(svc["command"], environment(svc)) for name, svc in services.items()
    }
    coord = next(c for c in configs.values() if hasattr(c, "grpc_port"))
    for name, cfg in configs.items():
        if hasattr(cfg, "coordinator"):  # a node dials the coordinator service by name
            assert cfg.coordinator == f"coordinator:{coord.grpc_port}"
            assert cfg.advertise_host == name and cfg.model == coord.model


def test_a_bad_flag_is_refused_by_the_same_parser() -> None:
    """The check above is real: a misspelt flag does not parse."""
    with pytest.raises(SystemExit):
        parse_parallax(["join", "--coordinator", "c:7000", "--memory-gigs", "2"])


def env_file() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return dict(pairs)


def exec_start(unit: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "systemd" / unit).read_text())
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    env = env_file()
    # systemd substitutes ${VAR} as one word, from EnvironmentFile=.
    line = re.sub(r"\$\{(\w+)\}", lambda m: shlex.quote(env[m.group(1)]), line)
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.mark.parametrize("unit", ["parallax-node.service", "parallax-coordinator.service"])
def test_systemd_units_are_hardened_and_run_valid_commands(unit: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0].isalpha()
    )
    for key, want in {
        "User": "parallax",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "parallax",
        "EnvironmentFile": "/etc/parallax/env",
    }.items():
        assert settings.get(key) == want, f"{unit}: {key}={settings.get(key)!r}, want {want!r}"
    argv = exec_start(unit)
    assert argv[0] == f"{VENV_BIN}parallax"
    cfg = parse_parallax(argv[1:], env_file())
    assert cfg.model == env_file()["PARALLAX_MODEL"]  # the node unit names its model too
    readme = (DEPLOY / "README.md").read_text()
    for path in (VENV_BIN, "/etc/parallax/env", "/var/lib/parallax", f"systemd/{unit}"):
        assert path in readme, f"deploy/README.md never explains {path}"
    assert "useradd --system" in readme and "journalctl -u" in readme


def test_every_env_variable_a_unit_uses_is_in_the_example() -> None:
    env = env_file()
    for unit in (DEPLOY / "systemd").glob("*.service"):
        used = set(re.findall(r"\$\{(\w+)\}", unit.read_text()))
        assert used <= set(env), f"{unit.name} uses {used - set(env)} missing from env.example"
