"""`parallax bench kernels` end to end: on CPU, `--quick` in Triton's interpreter.

The real run needs a GPU (docs/BENCHMARKS.md has the command); here the same code paths
run on tiny shapes, in a fresh process because TRITON_INTERPRET=1 must be set before
triton is first imported. The figures mean nothing on CPU; the test checks that every
section is there, finite, and that each Triton kernel computed what torch did.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).parent.parent


def _bench(tmp_path: Path, *flags: str, interpret: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-m", "parallax", "bench", "kernels", *flags]
    cmd += ["--output", str(tmp_path / "kernels.json")]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_quick_run_writes_every_section_with_finite_figures(tmp_path):
    proc = _bench(tmp_path, "--quick", interpret=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "kernels.json").read_text())

    tests = result["tests"]
    assert tests["returncode"] == 0 and tests["failed"] == 0 and tests["errors"] == 0, tests
    assert tests["passed"] >= 5, tests

    kernels = result["kernels"]
    seen = {(r["kernel"], r["batch"]) for r in kernels}
    for name in ("add_rms_norm", "silu_mul", "rotary", "decode_attention"):
        assert {(name, 1), (name, 4)} <= seen, seen
    assert any(r["shape"].startswith("mixed") for r in kernels)
    for r in kernels:
        assert all(_finite(r[k]) for k in ("triton_us", "torch_us", "speedup")), r
        # The two sides timed the same computation (bf16: a rounding step or two apart).
        assert r["max_rel_diff"] < 0.03, r
        if r["kernel"] == "decode_attention":
            assert _finite(r["triton_gbs"]) and _finite(r["triton_fraction_of_copy"]), r
            assert _finite(r["torch_fraction_of_copy"]), r

    assert _finite(result["copy"]["gbs"])
    engine = result["engine"]
    assert [r["batch"] for r in engine] == [1, 4]
    for r in engine:
        assert _finite(r["triton_tok_s"]) and _finite(r["torch_tok_s"]), r
        assert r["cuda_graphs"] == "not implemented"
    assert _finite(engine[0]["triton_fraction_of_weight_roofline"])
    assert "decode_attention" in proc.stdout and "CUDA graphs" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_it_needs_one(tmp_path):
    proc = _bench(tmp_path, interpret=False)
    assert proc.returncode == 2, proc.stderr
    assert "needs a CUDA device" in proc.stderr and "--quick" in proc.stderr
    proc = _bench(tmp_path, "--quick", interpret=False)
    assert proc.returncode == 2 and "TRITON_INTERPRET=1" in proc.stderr, proc.stderr
    assert not (tmp_path / "kernels.json").exists()
