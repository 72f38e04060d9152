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


def test_dtype_auto_takes_the_measured_choice_and_generate_runs_with_it(tiny_models, monkeypatch):
    import torch

    from node.engine import engine
    from parallax.cli import main
    from parallax.config.generate import EngineConfig

    assert engine.compute_dtype(EngineConfig(dtype="float16")) == torch.float16
    monkeypatch.setattr(engine, "choose_dtype", lambda device: ("bfloat16", "test says so"))
    assert engine.compute_dtype(EngineConfig(dtype="auto")) == torch.bfloat16
    monkeypatch.undo()
    assert engine.compute_dtype(EngineConfig(dtype="auto")) in (torch.float32, torch.bfloat16)
    args = ["generate", "--model", str(tiny_models["llama"]), "--dtype", "auto"]
    assert main([*args, "--prompt", "hi", "--max-tokens", "3"]) == 0
