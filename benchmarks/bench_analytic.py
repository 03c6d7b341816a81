"""Analytic engine speed: plan evaluations per second per core (CPU time, one process).

Each evaluation is a full `predict_analytic` of a plan (stage split, per-rank times, bubble, DP
traffic, memory). Three columns:

- shared Evaluator: 12 variants of the preset (micro-batch, recompute, comm SMs) cycled 2,000 times
  through one Evaluator: after the first pass every layer and stage timing is a cache hit, so this is
  the engine's floor cost per plan, not what a search sees.
- search worker: what a plan search's worker does. The scenario's own search space on its GPU count
  (`search.candidates`), cut into chunks as `search.search` cuts them; six chunks spread over the
  space, run one after another through `search.evaluate_chunk` (the worker's Evaluator, kept from
  chunk to chunk). Every plan is new, and most layer shapes are timed for the first time.
- cold: a fresh Evaluator for every evaluation (one-off `predict` calls).

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


def worker(name: str, chunks: int = 6) -> tuple[float, int]:
    """Evaluations per second per core of a search worker over ``chunks`` chunks of the scenario's space."""
    from simulator import search

    sc = load_scenario(name)
    plans = search.candidates(sc, sc.cluster.num_gpus)[0]
    size = max(16, min(512, -(-len(plans) // 8)))  # search.search's cut on a 2-core box
    cut = [plans[i:i + size] for i in range(0, len(plans), size)]
    picked = cut[:: max(1, len(cut) // chunks)][:chunks]
    search._EVALUATORS.clear()
    t = time.process_time()
    for ch in picked:
        search.evaluate_chunk(sc, ch)
    n = sum(map(len, picked))
    return n / (time.process_time() - t), n


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
    print(f"{'scenario':18s} {'evals/s/core: shared Evaluator':>31s} {'search worker':>14s} {'cold':>6s}"
          f"  {'plans (worker)':>14s}")
    for name in ("deepseek-v3", "deepseek-v2", "deepseekmoe-16b", "llama3-405b"):
        hot, cold = bench(name)
        rate, plans = worker(name)
        print(f"{name:18s} {hot:31,.0f} {rate:14,.0f} {cold:6,.0f}  {plans:14,d}")
