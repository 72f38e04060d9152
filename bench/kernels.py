"""`parallax bench kernels`: the Triton kernels against torch, on a GPU (issue 14, item 5).

Four parts, one run (under 5 minutes on an H100):
1. the kernel tests (tests/triton_cases.py) compiled on the device, in a subprocess;
2. each Triton kernel against its torch reference (`TorchKernels`) on the decode shapes
   of a 1B Llama at batch 1, 32 and 64, timed with `triton.testing.do_bench`;
3. decode attention's bandwidth (K/V bytes read / time) as a fraction of a device-to-
   device copy measured in the same run;
4. the engine's decode tok/s at batch 1 and 64 on a random 1B Llama in bf16 (written to a
   temporary folder, nothing downloaded), on Triton and on torch kernels.
Kernels and the copy are timed in interleaved rounds and medians reported.

Without CUDA it stops with a ConfigError, except `--quick` under TRITON_INTERPRET=1: the
same code paths on CPU in Triton's interpreter, tiny shapes, `time.perf_counter`, so
the default test suite can run it end to end. `python -m bench.kernels` runs it from a
checkout that is not pip-installed (the GPU machine: see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import triton

from bench.kernel_cases import LLAMA_1B, TINY, Rig, say, time_engine, time_kernels
from parallax.bench import write_result
from parallax.config.bench import BenchConfig
from parallax.errors import ConfigError, ParallaxError

ROOT = Path(__file__).resolve().parent.parent


def pick_rig(quick: bool) -> Rig:
    """The device and sizes of this run, or a ConfigError saying what it needs."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if not interpreted and not torch.cuda.is_available():
        if quick:
            raise ConfigError(
                "bench kernels --quick without CUDA runs Triton's CPU interpreter, which "
                "must be on before triton is imported: run it as "
                "`TRITON_INTERPRET=1 parallax bench kernels --quick`"
            )
        raise ConfigError(
            "bench kernels needs a CUDA device (torch sees none here); on CPU, "
            "`TRITON_INTERPRET=1 parallax bench kernels --quick` runs the same code paths "
            "in Triton's interpreter on tiny shapes (a smoke check, not a benchmark)"
        )
    if interpreted and not quick:
        raise ConfigError(
            "TRITON_INTERPRET=1 runs the kernels on CPU: add --quick, or unset it on a GPU"
        )
    if quick:
        dev = "cpu" if interpreted else "cuda"
        # The full kernel tests take ~15 s in the interpreter; --quick runs the fp32
        # elementwise cases (dtype0) and GQA group 4 of paged attention.
        tests_filter = "dtype0 or group4" if interpreted else ""
        return Rig(dev, TINY, (1, 4), 40, 40, 8 << 20, 1, (1, 4), 8, 3, tests_filter)
    return Rig("cuda", LLAMA_1B, (1, 32, 64), 2048, 4096, 1 << 30, 3, (1, 64), 128, 32, "")


def _timer(device: str):
    """fn -> its median time in microseconds."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3

    def wall(fn) -> float:
        fn()  # warm-up (the interpreter's first call traces the kernel)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    return wall


# ---- 1. the kernel tests on the device ----


def run_kernel_tests(rig: Rig) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRITON_INTERPRET", "PARALLAX_TRITON_DEVICE")
    }
    env.update(
        {"TRITON_INTERPRET": "1"} if rig.device == "cpu" else {"PARALLAX_TRITON_DEVICE": "cuda"}
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider"]
    cmd += ["tests/triton_cases.py"] + (["-k", rig.tests_filter] if rig.tests_filter else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped", "deselected")}
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", tail):
        counts["errors" if word.startswith("error") else word] = int(n)
    out = {**counts, "returncode": proc.returncode, "seconds": time.perf_counter() - t0}
    out["command"] = " ".join(cmd[1:])
    if proc.returncode != 0:
        out["output_tail"] = (proc.stdout[-3000:] + proc.stderr[-1000:]).strip()
        say(out["output_tail"])
    return out


# ---- the run ----


def _table(result: dict) -> str:
    """The run as text: one row per kernel case, the copy, then the engine."""
    t = result["tests"]
    lines = [f"kernel tests on the device: {t['passed']} passed, {t['failed']} failed"]
    widths = (17, 18, 6, 10, 10, 13, 10)
    cols = ("kernel", "case", "batch", "triton us", "torch us", "torch/triton", "attn/copy")
    if "kernels" in result:
        lines.append(_line(cols, widths, left=2))
        for r in result["kernels"]:
            frac = r.get("triton_fraction_of_copy")
            cells = (r["kernel"], r["shape"], r["batch"], f"{r['triton_us']:.1f}")
            cells += (f"{r['torch_us']:.1f}", f"{r['speedup']:.2f}")
            lines.append(_line(cells + ("" if frac is None else f"{frac:.2f}",), widths, left=2))
        c = result["copy"]
        lines.append(
            f"device-to-device copy: {c['gbs']:.0f} GB/s ({c['bytes'] >> 20} MiB, read+write)"
        )
    if "engine" in result:
        widths = (13, 14, 13, 14, 17)
        cols = ("engine batch", "triton tok/s", "torch tok/s", "triton/torch", "CUDA graphs")
        lines.append(_line(cols, widths))
        for r in result["engine"]:
            cells = (r["batch"], f"{r['triton_tok_s']:.1f}", f"{r['torch_tok_s']:.1f}")
            lines.append(_line(cells + (f"{r['speedup']:.2f}", r["cuda_graphs"]), widths))
        e = result["engine_info"]
        lines.append(
            f"batch-1 weight roofline {e['roofline_b1_tok_s']:.0f} tok/s "
            f"({e['weight_bytes'] / 1e9:.2f} GB of weights at the copy's bandwidth)"
        )
    lines += [f"FAILED: {part} (traceback in the JSON)" for part in result.get("errors", {})]
    return "\n".join(lines)


def _line(cells, widths, left: int = 1) -> str:
    """Cells padded to their widths: the first `left` to the left, numbers to the right."""
    return "".join(
        f"{c:<{w}}" if i < left else f"{c:>{w}}"
        for i, (c, w) in enumerate(zip(map(str, cells), widths, strict=True))
    )


def bench_kernels(config: BenchConfig) -> dict[str, Any]:
    rig = pick_rig(config.quick)
    torch.manual_seed(config.seed)
    name = torch.cuda.get_device_name() if rig.device == "cuda" else "cpu (Triton interpreter)"
    say(f"bench kernels on {name}: {'quick, ' if config.quick else ''}{rig.rounds} rounds")
    say("  1/3 kernel tests on the device ...")
    tests = run_kernel_tests(rig)
    say(
        f"  kernel tests: {tests['passed']} passed, {tests['failed']} failed, "
        f"{tests['errors']} errors ({tests['seconds']:.0f} s)"
    )
    result: dict[str, Any] = {
        "device": name,
        "quick": config.quick,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "timer": "triton.testing.do_bench, median" if rig.device == "cuda" else "perf_counter",
        "rounds": rig.rounds,
        "dtype": "bfloat16",
        "shape": {k: v for k, v in rig.shape.items() if not isinstance(v, dict)},
        "tests": tests,
    }
    say("  2/3 kernels against torch ...")
    timer = _timer(rig.device)
    with torch.inference_mode():
        kernels = _part(result, "kernels", lambda: time_kernels(rig, timer))
    if kernels:
        result["kernels"], info = kernels
        result["copy"], result["raw_us"] = info["copy"], info["raw_us"]
    say("  3/3 the engine ...")
    copy_gbs = result["copy"]["gbs"] if "copy" in result else math.nan
    engine = _part(result, "engine", lambda: time_engine(rig, copy_gbs))
    if engine:
        result["engine"], result["engine_info"] = engine
    print(_table(result), flush=True)
    if "errors" in result:
        # One GPU call should bring back every part that worked: write, then fail.
        write_result(config, result)
        raise ParallaxError(
            f"bench kernels: {', '.join(result['errors'])} failed (tracebacks above and in "
            "the JSON's 'errors')"
        )
    return result


def _part(result: dict, key: str, fn):
    """Run one part of the benchmark; a failure is recorded with its traceback and the
    run goes on, so the other parts' figures still come back."""
    try:
        return fn()
    except Exception:  # a benchmark part: reported in full, never swallowed
        tb = traceback.format_exc()
        say(tb)
        result.setdefault("errors", {})[key] = tb[-4000:]
        return None


def _main(argv: list[str]) -> int:
    """`python -m bench.kernels [flags]`: `parallax bench kernels` without an install."""
    import argparse

    from parallax.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__)
    add_config_arguments(parser, BenchConfig)
    try:
        config = config_from_args(BenchConfig, parser.parse_args(["kernels", *argv]))
        write_result(config, bench_kernels(config))
    except ParallaxError as e:
        print(f"bench kernels: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
