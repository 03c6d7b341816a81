"""CPU-time yardstick for the discrete-event engine.

The performance target for the DES is relative to the machine it runs on: one
DeepSeek-V3 training step must cost no more CPU time than 300,000 bare
``env.timeout`` events in SimPy. This script measures that yardstick (one
process yielding 300,000 timeouts of 1, and 16 processes sharing them, which
exercises SimPy's event heap a little more), plus the cost of the engine's
building blocks for comparison: flows through the bandwidth-shared network and
MoE routing samples.

Run: ``.venv/bin/python benchmarks/bench_simpy_baseline.py``. Import
:func:`baseline_seconds` to compare against in tests or reports.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import simpy

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_EVENTS = 300_000


def _best_cpu(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best-of-``repeat`` CPU time (time.process_time) of ``fn()``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _timeouts(n: int, procs: int) -> None:
    env = simpy.Environment()
    per = n // procs

    def proc(count: int):
        timeout = env.timeout
        for _ in range(count):
            yield timeout(1)

    for i in range(procs):
        env.process(proc(per + (1 if i < n - per * procs else 0)))
    env.run()


def baseline_seconds(n: int = N_EVENTS, procs: int = 1, repeat: int = 3) -> float:
    """CPU seconds for ``n`` bare ``env.timeout(1)`` events (best of ``repeat``)."""
    return _best_cpu(lambda: _timeouts(n, procs), repeat)


def _all_to_all(n_ranks: int, rounds: int, gpus_per_node: int = 8, distinct: bool = False) -> int:
    """Dispatch-like traffic: every rank sends to every other node's NIC.

    With ``distinct`` every flow has its own size, so every completion is a
    separate event and a full max-min recomputation over ~450 active flows
    (the engine's worst case); otherwise sizes take 3 values and completions
    coincide.
    """
    import random

    from simulator.des.links import Network

    rng = random.Random(0)

    env = simpy.Environment()
    net = Network(env, record_flows=False)
    for r in range(n_ranks):
        net.add_link(f"tx{r}", 50.0)
        net.add_link(f"rx{r}", 50.0)
    nodes = n_ranks // gpus_per_node

    def rank(r: int):
        node = r // gpus_per_node
        for i in range(rounds):
            evs = [net.transfer(rng.uniform(0.5e6, 1.5e6) if distinct else 1e6 * (1 + (r + j + i) % 3),
                                [f"tx{r}", f"rx{j * gpus_per_node + r % gpus_per_node}"], latency_s=2e-6)
                   for j in range(nodes) if j != node]
            yield env.all_of(evs)

    for r in range(n_ranks):
        env.process(rank(r))
    env.run()
    return net.n_completed


def _single_link_staggered(n_flows: int) -> int:
    from simulator.des.links import Network

    env = simpy.Environment()
    net = Network(env, record_flows=False)
    net.add_link("l", 100.0)

    def flow(i: int):
        yield env.timeout(i * 997)
        yield net.transfer(1e5 * (1 + i % 7), ["l"])

    for i in range(n_flows):
        env.process(flow(i))
    env.run()
    return net.n_completed


def links_flows_per_second() -> dict[str, float]:
    """Completed flows per CPU second for two traffic shapes."""
    out = {}
    for name, fn in [("a2a 64 ranks x 8 nodes, 3 sizes", lambda: _all_to_all(64, 20)),
                     ("a2a 64 ranks x 8 nodes, all sizes distinct", lambda: _all_to_all(64, 4, distinct=True)),
                     ("1 link, 5000 staggered arrivals (PS overload)", lambda: _single_link_staggered(5000))]:
        t0 = time.process_time()
        n = fn()
        out[name] = n / (time.process_time() - t0)
    return out


def routing_sample_ms() -> tuple[float, float]:
    """(first-sample ms incl. per-layer setup, steady-state ms per sample) at V3 scale."""
    from simulator.des.routing import RoutingConfig, RoutingSampler

    s = RoutingSampler(RoutingConfig(tokens=4096, n_experts=256, top_k=8, ep=64, gpus_per_node=8,
                                     max_nodes=4, skew="zipf", zipf_s=1.0))
    t0 = time.process_time()
    s.sample(0, 0)
    first = time.process_time() - t0
    t0 = time.process_time()
    for mb in range(1, 201):
        s.sample(0, mb)
    return first * 1e3, (time.process_time() - t0) / 200 * 1e3


def main() -> None:
    one = baseline_seconds(N_EVENTS, 1)
    many = baseline_seconds(N_EVENTS, 16)
    print(f"{'benchmark':46s} {'CPU s':>8s} {'us/event':>9s}")
    print(f"{'300k env.timeout, 1 process':46s} {one:8.3f} {one / N_EVENTS * 1e6:9.2f}")
    print(f"{'300k env.timeout, 16 processes':46s} {many:8.3f} {many / N_EVENTS * 1e6:9.2f}")
    print()
    print(f"{'links':46s} {'flows per CPU s':>16s}")
    for name, rate in links_flows_per_second().items():
        print(f"{name:46s} {rate:16,.0f}")
    print()
    first, steady = routing_sample_ms()
    print(f"routing V3 (4096 tok x 64 ranks, 256 exp, top-8, M=4, zipf 1.0): "
          f"first sample {first:.1f} ms (layer setup), then {steady:.3f} ms/sample")


if __name__ == "__main__":
    main()
