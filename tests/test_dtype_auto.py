"""--dtype auto: bfloat16 on CUDA; on a CPU, whichever measures faster, with the reason."""

from __future__ import annotations

import node.model.dtype as dtype_mod


def test_cuda_picks_bfloat16():
    assert dtype_mod.choose_dtype("cuda")[0] == "bfloat16"


def test_cpu_picks_the_measured_faster_dtype_and_says_why(monkeypatch):
    timings = {}
    monkeypatch.setattr(dtype_mod, "_matvec_seconds", lambda dt, *a: timings[dt])
    import torch

    timings.update({torch.float32: 2.0, torch.bfloat16: 1.0})
    name, why = dtype_mod.choose_dtype("cpu")
    assert name == "bfloat16" and "2.00x" in why
    timings.update({torch.float32: 1.0, torch.bfloat16: 0.95})  # within noise: keep fp32
    name, why = dtype_mod.choose_dtype("cpu")
    assert name == "float32" and "1.05x" in why


def test_cpu_measurement_runs_for_real():
    name, why = dtype_mod.choose_dtype("cpu", rows=256, cols=256)
    assert name in ("float32", "bfloat16") and "x float32" in why


def test_generate_with_dtype_auto_runs_and_logs_its_choice(tiny_models, capfd):
    import json

    from parallax.cli import main

    args = ["generate", "--model", str(tiny_models["llama"]), "--dtype", "auto"]
    assert main([*args, "--prompt", "hi", "--max-tokens", "3"]) == 0
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    (chosen,) = [x for x in lines if x.get("msg") == "dtype chosen"]
    assert chosen["dtype"] in ("float32", "bfloat16") and chosen["why"]
