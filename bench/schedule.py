"""`parallax bench schedule`: our scheduler vs Parallax, Petals, exo and Helix, simulated.

For each generated cluster every design allocates layers and routes the same Poisson
workload through the discrete-event simulator; we report throughput, p50/p99 time per
output token, TTFT and solve time, plus the MILP bound on small pools, allocation and
routing time at a thousand nodes, and layers reloaded under churn. Beside the
simulator's figures, each allocation is judged by the neutral evaluator of the
sched-eval kit (`--sched-eval DIR`, imported from there at run time): its LP and
Little's-law throughputs and whether it fits memory with the kit's 10% margin.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.sim import designs
from bench.sim.cost import SimCost
from bench.sim.engine import simulate
from bench.sim.scenarios import (
    OUTPUT,
    PROMPT,
    Scenario,
    as_cluster_json,
    make_scenario,
    with_solver,
)
from bench.sim.workload import poisson_requests
from coordinator.scheduler.allocate import allocate
from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.exact import solve_group
from coordinator.scheduler.mend import layers_reloaded
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.route import Router, route
from coordinator.scheduler.types import ClusterState, NodeLoad, RouteRequest
from parallax.config.bench import BenchConfig


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def allocations(s: Scenario, perf: PerfModel, milp_s: float, with_exact: bool) -> dict[str, Any]:
    """design -> (assignments, policy, solve seconds)."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    # What `parallax run` does by default: the heuristic, and up to 64 nodes the MILP
    # too, keeping the allocation the performance model rates higher.
    ours = allocate(s.nodes, s.model, with_solver(s, "auto", milp_s))
    out["ours"] = (dict(ours.assignments), designs.ours_policy, time.perf_counter() - t)
    if with_exact:
        t = time.perf_counter()
        ex = allocate(s.nodes, s.model, with_solver(s, "exact", milp_s))
        out["ours-exact"] = (dict(ex.assignments), designs.ours_policy, time.perf_counter() - t)
    t = time.perf_counter()
    px, pipes = designs.parallax_allocation(s.nodes, perf)
    out["parallax"] = (px, lambda: designs.round_robin_policy(pipes), time.perf_counter() - t)
    t = time.perf_counter()
    pt = designs.petals_allocation(s.nodes, perf)
    out["petals"] = (pt, lambda: designs.dijkstra_policy(0), time.perf_counter() - t)
    out["petals-batched"] = out["petals"]  # its allocation on our engine, for reference
    t = time.perf_counter()
    exo, ring = designs.exo_allocation(s.nodes, perf)
    out["exo"] = (exo, lambda: designs.round_robin_policy([ring]), time.perf_counter() - t)
    t = time.perf_counter()
    hx = designs.helix_allocation(s.nodes, perf, milp_s)
    out["helix"] = (hx, lambda: designs.flow_weighted_policy(0), time.perf_counter() - t)
    return out


def load_evaluator(folder: str) -> Any | None:
    """The kit's evaluate.py as a module, imported from `folder` (never copied here);
    None, with a note on stderr, when the folder or its numpy/scipy are missing."""
    if not folder:
        return None
    path = Path(folder) / "evaluate.py"
    if not path.is_file():
        say(f"no neutral evaluator: {path} does not exist (--sched-eval DIR)")
        return None
    spec = importlib.util.spec_from_file_location("sched_eval_evaluate", path)
    if spec is None or spec.loader is None:
        say(f"no neutral evaluator: {path} cannot be imported")
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        say(f"no neutral evaluator: {e}; pip install scipy (the [test] extra has it)")
        return None
    return module


def neutral(evaluator: Any, s: Scenario, assign: dict) -> dict:
    """The kit's verdict on one allocation of a generated cluster."""
    alloc = {n: None if r is None else [r.start, r.end] for n, r in assign.items()}
    cluster = as_cluster_json(s)
    # The kit takes sequences as half full on average: give it the context at which
    # that is this workload's mean (prompt plus half the output), so it judges the
    # allocations under the load the simulator serves.
    mean = sum(PROMPT) / 2 + sum(OUTPUT) / 4
    cluster["context_tokens"] = int(2 * mean)
    got = evaluator.evaluate(cluster, {"assignments": alloc})
    return {
        "feasible": got["feasible"],
        "lp_tok_s": got["throughput_tok_s"],
        "littles_tok_s": got["throughput_littles_tok_s"],
        "latency_ms": got["latency_ms_per_token"],
        "violations": got["violations"][:2],
    }


def run_scenario(
    s: Scenario, requests: int, milp_s: float, with_exact: bool, seed: int, evaluator: Any = None
) -> dict:
    perf = PerfModel.of(s.model, s.options)
    cost = SimCost.of(s.model, s.options)  # the simulator's own model, not the planner's
    allocs = allocations(s, perf, milp_s, with_exact)
    est = estimate(allocs["ours"][0], s.nodes, perf).throughput_tok_s
    mean_out = sum(OUTPUT) / 2
    # Throughput: every request queued at once, admission keeps each design full (KV and
    # max-running permitting), and we count the steady phase. Latency: the same Poisson
    # load for every design, a third of our expected capacity, so p50/p99 compare at
    # equal, moderate load.
    burst = poisson_requests(requests, 1e6, seed, PROMPT, OUTPUT)
    steady = poisson_requests(
        requests // 2, max(est / 3 / mean_out, 0.05), seed + 1, PROMPT, OUTPUT
    )
    row: dict[str, Any] = {"nodes": len(s.nodes), "expected_tok_s": est, "designs": {}}
    for name, (assign, policy_of, solve_s) in allocs.items():
        if not any(r is not None for r in assign.values()):
            row["designs"][name] = {"error": "no allocation"}
            continue
        batching = name not in designs.UNBATCHED
        sat = simulate(s.nodes, assign, cost, burst, policy_of(), saturated=True, batching=batching)
        mod = simulate(s.nodes, assign, cost, steady, policy_of(), batching=batching)
        row["designs"][name] = {
            "throughput_tok_s": sat.throughput_tok_s,
            "completed": sat.completed,
            "tpot_p50_ms": mod.tpot_p50_ms,
            "tpot_p99_ms": mod.tpot_p99_ms,
            "ttft_p50_ms": mod.ttft_p50_ms,
            "ttft_p99_ms": mod.ttft_p99_ms,
            "solve_s": solve_s,
            "nodes_used": sum(r is not None for r in assign.values()),
            "estimate_tok_s": estimate(assign, s.nodes, perf).throughput_tok_s,
        }
        judged = ""
        if evaluator is not None:
            verdict = neutral(evaluator, s, assign)
            row["designs"][name]["neutral"] = verdict
            judged = (
                f"  | kit LP {verdict['lp_tok_s']:8.0f} Little {verdict['littles_tok_s']:7.0f}"
                + ("" if verdict["feasible"] else " INFEASIBLE")
            )
        say(
            f"  {s.name:<16} {name:<11} {sat.throughput_tok_s:9.0f} tok/s  "
            f"tpot p50 {mod.tpot_p50_ms:7.1f} ms p99 {mod.tpot_p99_ms:7.1f}  "
            f"ttft p50 {mod.ttft_p50_ms / 1e3:6.2f} s  solve {solve_s:6.3f} s" + judged
        )
    if len(s.nodes) <= 64:
        eligible = [n for n in s.nodes if perf.mem.max_layers(n.memory_bytes) >= 1]
        _g, obj, bound, status = solve_group(eligible, perf, milp_s)
        from coordinator.scheduler.estimate import window_flow

        ours = allocs["ours"][0]
        fast_flow = window_flow(
            [(r, perf.speed(n)) for n in s.nodes if (r := ours[n.node_id])], perf.num_layers
        )
        row["milp"] = {"flow": obj, "bound": bound, "status": status, "ours_flow": fast_flow}
        # A solve cut short on a loaded box may report no bound (0): say so, not crash.
        share = f"{fast_flow / bound:.1%}" if bound > 0 else "no bound in time"
        say(f"  {s.name:<16} MILP flow bound {bound:,.0f}; ours {fast_flow:,.0f} ({share})")
    return row


def scale(sizes: list[int], seed: int) -> dict:
    out = {}
    for n in sizes:
        s = make_scenario(f"scale-{n}", n, 3, seed + n)
        # Wall and CPU time (this process's): on a shared, loaded box the wall time
        # counts other processes' turns on the cores; the CPU time is the planner's.
        t, c = time.perf_counter(), time.process_time()
        alloc = allocate(s.nodes, s.model, with_solver(s, "fast", 1.0))
        t_alloc, c_alloc = time.perf_counter() - t, time.process_time() - c
        loads = tuple(
            NodeLoad(
                nid,
                "",
                r,
                running=random.Random(i).randint(0, 30),
                layer_latency_ms=1.0,
                region=nid.split("-")[0],
            )
            for i, (nid, r) in enumerate(sorted(alloc.assignments.items()))
            if r is not None
        )
        state = ClusterState(s.model.num_layers, loads)
        t = time.perf_counter()
        router = Router(state)
        t_index = time.perf_counter() - t
        reps = 200
        t, c = time.perf_counter(), time.process_time()
        for i in range(reps):
            router.route(RouteRequest(str(i), 100, 100))
        t_route, c_route = (time.perf_counter() - t) / reps, (time.process_time() - c) / reps
        # As the gateway routes: the registry's state (rebuilt when a heartbeat brings
        # new loads, at most every 0.1 s) plus, per request, its own open chains per node
        # as a floor over the reported counts.
        rng = random.Random(seed)
        ids = [x.node_id for x in loads]
        floors = [{rng.choice(ids): rng.randint(1, 40) for _ in range(20)} for _ in range(reps)]
        t = time.perf_counter()
        for i, floor in enumerate(floors):
            route(RouteRequest(str(i), 100, 100), replace(state, running_floor=floor))
        t_gateway = (time.perf_counter() - t) / reps
        # A fresh heartbeat state every time (new loads for every node): the worst case.
        states = [
            replace(state, nodes=(replace(loads[0], running=k), *loads[1:])) for k in range(reps)
        ]
        t = time.perf_counter()
        for i, st in enumerate(states):
            router.with_loads(st).route(RouteRequest(str(i), 100, 100))
        t_fresh = (time.perf_counter() - t) / reps
        out[n] = {
            "allocate_s": t_alloc,
            "allocate_cpu_s": c_alloc,
            "router_index_s": t_index,
            "route_ms": t_route * 1e3,
            "route_cpu_ms": c_route * 1e3,
            "route_gateway_ms": t_gateway * 1e3,
            "route_new_loads_ms": t_fresh * 1e3,
            "throughput_tok_s": alloc.throughput_tok_s,
            "nodes_used": sum(r is not None for r in alloc.assignments.values()),
        }
        say(
            f"  scale {n:5d} nodes: allocate {t_alloc:.3f} s ({c_alloc:.3f} s CPU), route "
            f"{t_route * 1e3:.3f} ms ({c_route * 1e3:.3f} ms CPU), "
            f"{t_gateway * 1e3:.3f} ms as the gateway routes ({t_fresh * 1e3:.3f} ms with a "
            f"new heartbeat state each time; +{t_index * 1e3:.1f} ms index)"
        )
    return out


def churn(s: Scenario, events: int, seed: int) -> dict:
    """Alternate leaves and joins; count layers reloaded by each way of reacting."""
    rng = random.Random(seed)
    perf = PerfModel.of(s.model, s.options)
    opts = with_solver(s, "fast", 1.0)
    pool = list(s.nodes[: len(s.nodes) * 3 // 4])
    spare = list(s.nodes[len(s.nodes) * 3 // 4 :])
    prev = allocate(pool, s.model, opts)
    prev_px, _ = designs.parallax_allocation(pool, perf)
    totals = {"ours-incremental": 0, "ours-global": 0, "parallax-global": 0}
    thr = {"ours-incremental": [], "ours-global": []}
    for e in range(events):
        if e % 2 == 0 and len(pool) > 2:
            pool.remove(rng.choice(sorted(pool, key=lambda n: n.node_id)))
        elif spare:
            pool.append(spare.pop())
        inc = allocate(pool, s.model, replace(opts, previous=prev))
        fresh = allocate(pool, s.model, opts)
        px, _ = designs.parallax_allocation(pool, perf)
        totals["ours-incremental"] += layers_reloaded(prev.assignments, inc.assignments)
        totals["ours-global"] += layers_reloaded(prev.assignments, fresh.assignments)
        totals["parallax-global"] += layers_reloaded(prev_px, px)
        thr["ours-incremental"].append(inc.throughput_tok_s)
        thr["ours-global"].append(fresh.throughput_tok_s)
        prev, prev_px = inc, px
    mean = {k: sum(v) / len(v) for k, v in thr.items()}
    say(f"  churn {events} events: layers reloaded {totals}; mean est. tok/s {mean}")
    return {"layers_reloaded": totals, "mean_throughput_tok_s": mean, "events": events}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = list(result["scenarios"])
    names = ["ours", "ours-exact", "parallax", "petals", "petals-batched", "exo", "helix"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for i, d in enumerate(names):
        xs, thr, tpot = [], [], []
        for j, sc in enumerate(scen):
            r = result["scenarios"][sc]["designs"].get(d)
            if r and "throughput_tok_s" in r:
                xs.append(j + i * width)
                thr.append(r["throughput_tok_s"])
                tpot.append(r["tpot_p50_ms"])
        axes[0].bar(xs, thr, width, label=d)
        axes[1].bar(xs, tpot, width, label=d)
    for ax, title in zip(
        axes, ("throughput (tok/s)", "p50 time per output token (ms)"), strict=True
    ):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scen))], scen, rotation=15)
        ax.set_title(title)
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Simulated serving, llama3-70b bf16 on mixed volunteer GPUs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def bench_schedule(config: BenchConfig) -> dict:
    quick = config.quick
    seed = config.seed
    plan = (
        [("mixed-12", 12, 1, True), ("mixed-16-2reg", 16, 2, False)]
        if quick
        else [
            ("mixed-8", 8, 1, True),
            ("mixed-16", 16, 1, True),
            ("mixed-32-2reg", 32, 2, True),
            ("mixed-64-3reg", 64, 3, True),
        ]
    )
    requests = 300 if quick else 600
    milp_s = 2.0 if quick else 10.0
    result: dict[str, Any] = {"quick": quick, "seed": seed, "scenarios": {}}
    evaluator = load_evaluator(config.sched_eval)
    result["neutral_evaluator"] = (
        str(Path(config.sched_eval) / "evaluate.py") if evaluator is not None else None
    )
    t0 = time.perf_counter()
    for name, size, regions, with_exact in plan:
        say(f"[{time.perf_counter() - t0:6.1f} s] scenario {name}")
        s = make_scenario(name, size, regions, seed + size)
        result["scenarios"][name] = run_scenario(
            s, requests, milp_s, with_exact and size <= 64, seed, evaluator
        )
    say(f"[{time.perf_counter() - t0:6.1f} s] scale")
    result["scale"] = scale([1000] if quick else [100, 300, 1000], seed)
    say(f"[{time.perf_counter() - t0:6.1f} s] churn")
    result["churn"] = churn(
        make_scenario("churn", 24 if quick else 48, 2, seed + 7), 6 if quick else 16, seed
    )
    png = Path("bench-output/schedule-quick.png" if quick else "docs/plots/schedule.png")
    plot(result, png)
    result["plot"] = str(png)
    say(f"[{time.perf_counter() - t0:6.1f} s] done; plot {png}")
    return result
