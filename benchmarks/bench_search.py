"""Benchmark: whole plan search for DeepSeek-V3 on 2048 H800 (DES of the top 10 included).

    .venv/bin/python benchmarks/bench_search.py [--gpus 2048] [--scenario deepseek-v3]

Prints plans enumerated/evaluated/valid, seconds, plans/s, the best plan and how it differs
from DeepSeek's published plan (PP16, EP64, DualPipe, ZeRO-1, TP1, 20 comm SMs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.analytic import predict_analytic  # noqa: E402
from simulator.api import load  # noqa: E402
from simulator.search import PLAN_KEYS, plan_label, search  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="deepseek-v3")
    ap.add_argument("--gpus", type=int, default=2048)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args()
    sc = load(a.scenario)
    res = search(sc, a.gpus, top=a.top)
    best = res.plans[0]
    ref = predict_analytic(sc).gpu_hours_per_trillion_tokens
    ref_plan = {k: getattr(sc.plan, k) for k in PLAN_KEYS if k != "dp"} | {"dp": sc.dp}
    diff = [f"{k} {ref_plan[k]}->{best['plan'][k]}" for k in PLAN_KEYS if ref_plan[k] != best["plan"][k]]
    rows = [
        ("scenario", f"{a.scenario} on {a.gpus} GPUs"),
        ("plans enumerated", f"{res.enumerated:,}"),
        ("pruned (invalid / state > HBM)", f"{res.pruned:,}"),
        ("plans evaluated (analytic)", f"{res.evaluated:,}"),
        ("valid (fit in memory)", f"{res.valid:,}"),
        ("seconds (incl. DES of top %d)" % a.top, f"{res.seconds:.1f}"),
        ("plans/s", f"{res.plans_per_second:,.0f}"),
        ("DES", "simulator.des.engine" if res.des_available else "not available"),
        ("best plan", plan_label(best["plan"])),
        ("best GPU-h/1T (analytic)", f"{best['gpu_hours_per_trillion_tokens']:,.0f}"),
        ("best GPU-h/1T (DES)", f"{best['des']['gpu_hours_per_trillion_tokens']:,.0f}"
         if best.get("des") and "gpu_hours_per_trillion_tokens" in best["des"] else "-"),
        ("DeepSeek plan GPU-h/1T", f"{ref:,.0f} ({plan_label(ref_plan)})"),
        ("best vs DeepSeek plan", (", ".join(diff) or "same plan") + f"; {100 * (best['gpu_hours_per_trillion_tokens'] / ref - 1):+.1f}%"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
