"""Analytic engine speed: plan evaluations per second per core (CPU time, one process).

Each evaluation is a full `predict_analytic` of a scenario variant (stage split, per-rank times,
bubble, DP traffic, memory). Variants cycle through micro-batch, recompute, comm SMs and IB
bandwidth so caches see realistic reuse, as in a plan search sharing one Evaluator.

Run: .venv/bin/python benchmarks/bench_analytic.py
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from simulator.analytic import Evaluator, predict_analytic, resolve_profile
from simulator.scenario import load_scenario


def variants(name: str):
    sc = load_scenario(name)
    out = []
    for mb, rc, sms in itertools.product((1, 2), ("selective", "full"), (16, 20, 24)):
        plan = dataclasses.replace(sc.plan, micro_batch=mb, recompute=rc, comm_sms=sms)
        try:
            out.append(dataclasses.replace(sc, plan=plan).validate())
        except ValueError:
            pass
    return out


def bench(name: str, n: int = 2000) -> tuple[float, float]:
    vs = variants(name)
    ev = Evaluator(vs[0], resolve_profile(vs[0], None))
    for v in vs:  # warm caches once, as a search does on its first pass
        predict_analytic(v, evaluator=ev)
    t = time.process_time()
    for i in range(n):
        predict_analytic(vs[i % len(vs)], evaluator=ev)
    hot = n / (time.process_time() - t)
    t = time.process_time()
    cold_n = 50
    for i in range(cold_n):
        predict_analytic(vs[i % len(vs)])  # fresh Evaluator each time: no reuse
    cold = cold_n / (time.process_time() - t)
    return hot, cold


if __name__ == "__main__":
    print(f"{'scenario':22s} {'evals/s/core (shared Evaluator)':>32s} {'evals/s/core (cold)':>20s}")
    for name in ("deepseek-v3", "deepseek-v2", "deepseekmoe-16b", "llama3-405b"):
        hot, cold = bench(name)
        print(f"{name:22s} {hot:32,.0f} {cold:20,.0f}")
