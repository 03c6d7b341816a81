"""CPU cost of one DeepSeek-V3 DES step against a bare-SimPy baseline.

The budget: one V3 step (PP16, 120 micro-batches, DualPipe) may cost no more CPU
time than 300,000 bare ``env.timeout`` events in SimPy. Both are timed with
``time.process_time`` as the median of a few repetitions (the DES after one
warm-up run, so imports and first-touch caches are not counted).

    python benchmarks/bench_des.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import simpy  # noqa: E402

BASELINE_EVENTS = 300_000


def _own_baseline(n: int = BASELINE_EVENTS) -> float:
    env = simpy.Environment()

    def proc(env):
        for _ in range(n):
            yield env.timeout(1)

    env.process(proc(env))
    t = time.process_time()
    env.run()
    return time.process_time() - t


def baseline_seconds(reps: int = 5) -> float:
    try:
        from benchmarks.bench_simpy_baseline import baseline_seconds as ext  # type: ignore
        return float(ext())
    except Exception:  # noqa: BLE001 (absent or different API: measure it here)
        return statistics.median(_own_baseline() for _ in range(reps))


def des_seconds(reps: int = 5) -> tuple[float, int]:
    from simulator.des.engine import predict_des
    from simulator.scenario import load_scenario

    sc = load_scenario("deepseek-v3")
    pred = predict_des(sc, record_timeline=False)  # warm-up
    times = []
    for _ in range(reps):
        t = time.process_time()
        pred = predict_des(sc, record_timeline=False)
        times.append(time.process_time() - t)
    return statistics.median(times), pred.extra["des_events"]


def routing_sample_ms(n: int = 100) -> float:
    """Mean CPU ms of one routing sample at V3 scale (Zipf s=1, 32 redundant experts), layer built."""
    from simulator.des.routing import RoutingConfig, RoutingSampler

    s = RoutingSampler(RoutingConfig(tokens=4096, n_experts=256, top_k=8, ep=64, gpus_per_node=8, max_nodes=4,
                                     skew="zipf", zipf_s=1.0, redundant=32))
    s.sample(0, 0)  # builds the layer's Monte-Carlo marginals once
    t = time.process_time()
    for mb in range(n):
        s.sample(0, mb)
    return (time.process_time() - t) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    base = baseline_seconds(a.reps)
    des, events = des_seconds(a.reps)
    rows = [
        ("DES, one DeepSeek-V3 step (CPU s)", f"{des:.3f}"),
        ("SimPy baseline, 300k timeouts (CPU s)", f"{base:.3f}"),
        ("ratio DES / baseline (must be <= 1)", f"{des / base:.2f}"),
        ("DES SimPy events", f"{events:,}"),
        ("routing sample at V3 scale, zipf 1.0, 32 redundant (CPU ms)", f"{routing_sample_ms():.2f}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"{'measure':<{w}}  value")
    print(f"{'-' * w}  -----")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0 if des <= base else 1


if __name__ == "__main__":
    sys.exit(main())
