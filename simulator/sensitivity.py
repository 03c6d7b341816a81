"""Sensitivity: ``gpuhours sensitivity NAME`` prints a tornado table.

Each input is moved down and up one at a time (the rest held at the
scenario's values) and the steady-state GPU-hours per trillion tokens are
re-predicted with the analytic engine:

- ``cluster.ib_gbps`` and ``cluster.nvlink_gbps``: x0.5 and x2;
- kernel efficiency: every compute and memory-bound throughput of the
  calibration profile (and the datasheet peaks the roofline falls back on)
  scaled x0.8 and x1.2; collectives are left alone;
- routing skew: Zipf s=0.2 and s=0.5 over the experts (mild and moderate
  popularity skew left over by a load balancer: on V3's 256 experts over EP64
  they load the busiest rank 1.4x and 2.7x the mean), turned into the analytic
  engine's ``imbalance`` (max/mean expert load per EP rank) by
  :func:`simulator.des.routing.expected_max_load_factor`. Zipf s=1 (6.8x on V3)
  describes a router with no balancing at all: a what-if, not a sensitivity;
- ``plan.comm_sms``: 8 fewer and 8 more than the plan's; ``plan.micro_batch``: half and double
  the plan's (every move is relative to the scenario, so none repeats its own value);
- ``plan.attention_kernel``: the plan's kernel swapped for each of two other fused libraries
  (FlashAttention-3 ``flash``, cuDNN, FlashAttention-2, the first two the profile has rows for):
  which one a run had is often not published (DeepSeek's reports name an "improved"
  FlashAttention-2 for MLA), and their measured rates differ by up to ~2x; a swap, not an
  up/down move, so each side is labelled "to <kernel>";
- sustained SM clock, ``cluster.gpu.sustained_clock_mhz`` (held under training load, it scales the
  profile's tables timed in bursts): 10 % lower, and the peak clock (no throttling at all), where
  the GPU gives one and the scenario reads such tables.

A move that makes the plan invalid (or an input the model does not have,
such as routing for a dense model) is skipped and reported with the reason.

Beside the tornado it prints the prediction's two error bands (validation and
calibration, :mod:`simulator.uncertainty`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Callable

from .analytic import predict_analytic, resolve_profile, routing_imbalance
from .config import ATTENTION_KERNELS, Scenario
from .errors import ConfigError
from .profile import Profile
from .timer import SUSTAINED_CLOCK_NOTE
from .uncertainty import band_rows, prediction_bands

METRIC = "gpu_hours_per_trillion_tokens"
SKEWS = (0.2, 0.5)  # Zipf exponents of the routing-skew moves (see the module docstring)
FUSED_ATTENTION_KERNELS = tuple(k for k in ATTENTION_KERNELS if k != "unfused")


def scaled_profile(prof: Profile | None, k: float) -> Profile | None:
    """A copy of ``prof`` with every kernel throughput (TFLOP/s, memory GB/s) scaled by ``k``."""
    if prof is None:
        return None
    return prof.scaled(lambda table, row: 1.0 if table in ("collectives", "sm_scaling") else k, f"{prof.name} x{k:g}")


def _scaled_gpu(sc: Scenario, k: float) -> Scenario:
    g = sc.cluster.gpu
    gpu = dataclasses.replace(g, bf16_tflops=g.bf16_tflops * k, fp8_tflops=g.fp8_tflops * k,
                              fp16_tflops=g.fp16_tflops * k, hbm_gbps=g.hbm_gbps * k)
    return dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, gpu=gpu))


def _gh(sc: Scenario, profile: Any = None, imbalance: float = 1.0) -> float:
    pred = predict_analytic(sc, profile=profile, imbalance=imbalance)
    return pred.gpu_hours_per_trillion_tokens


def _cluster(sc: Scenario, **kw: Any) -> Scenario:
    return dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, **kw)).validate()


def _plan(sc: Scenario, **kw: Any) -> Scenario:
    return dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, **kw)).validate()


def _imbalance(sc: Scenario, s: float) -> float:
    return routing_imbalance(_plan(sc, routing="zipf", zipf_s=s))


def _moves(sc: Scenario, prof: Profile | None,
           clocked: bool) -> list[tuple[str, str, str, Callable[[], float], Callable[[], float]]]:
    c, p = sc.cluster, sc.plan
    return [
        ("cluster.ib_gbps", f"x0.5 ({c.ib_gbps * 0.5:g})", f"x2 ({c.ib_gbps * 2:g})",
         lambda: _gh(_cluster(sc, ib_gbps=c.ib_gbps * 0.5), prof), lambda: _gh(_cluster(sc, ib_gbps=c.ib_gbps * 2), prof)),
        ("cluster.nvlink_gbps", f"x0.5 ({c.nvlink_gbps * 0.5:g})", f"x2 ({c.nvlink_gbps * 2:g})",
         lambda: _gh(_cluster(sc, nvlink_gbps=c.nvlink_gbps * 0.5), prof),
         lambda: _gh(_cluster(sc, nvlink_gbps=c.nvlink_gbps * 2), prof)),
        ("kernel efficiency", "x0.8", "x1.2",
         lambda: _gh(_scaled_gpu(sc, 0.8), scaled_profile(prof, 0.8)),
         lambda: _gh(_scaled_gpu(sc, 1.2), scaled_profile(prof, 1.2))),
        ("routing skew", f"zipf s={SKEWS[0]:g}", f"zipf s={SKEWS[1]:g}",
         lambda: _gh(sc, prof, _imbalance(sc, SKEWS[0])), lambda: _gh(sc, prof, _imbalance(sc, SKEWS[1]))),
        ("plan.comm_sms", f"-8 ({p.comm_sms - 8})", f"+8 ({p.comm_sms + 8})",
         lambda: _gh(_plan(sc, comm_sms=p.comm_sms - 8), prof), lambda: _gh(_plan(sc, comm_sms=p.comm_sms + 8), prof)),
        ("plan.micro_batch", f"x0.5 ({p.micro_batch / 2:g})", f"x2 ({p.micro_batch * 2})",
         lambda: _gh(_plan(sc, micro_batch=_half(p.micro_batch)), prof),
         lambda: _gh(_plan(sc, micro_batch=p.micro_batch * 2), prof)),
        _attention_move(sc, prof),
        *_clock_moves(sc, prof, clocked),
    ]


def _skip(reason: str) -> Callable[[], float]:
    """A move that cannot be made here: calling it raises ``reason`` (reported as a note)."""
    def fn() -> float:
        raise ValueError(reason)
    return fn


def _attention_move(sc: Scenario, prof: Profile | None) -> tuple[str, str, str, Callable[[], float], Callable[[], float]]:
    """The plan's attention kernel swapped for the first two of flash, cudnn, fa2 (in that order) that are
    not the plan's and that the profile has rows for: a kernel without rows would be priced like the
    default one (with a warning), and the row would show a move that is not one."""
    name = "plan.attention_kernel"
    have = prof.attention_kernels() if prof else set()
    others = [k for k in FUSED_ATTENTION_KERNELS if k != sc.plan.attention_kernel and k in have][:2]
    if not others:
        why = _skip(f"profile {prof.name if prof else '(none)'} has attention rows for no other kernel")
        return (name, "other", "other", why, why)
    moves = [(f"to {k}", lambda k=k: _gh(_plan(sc, attention_kernel=k), prof)) for k in others]
    if len(moves) == 1:
        moves.append(("-", _skip(f"profile {prof.name} has attention rows for one other kernel only")))
    (lo_lab, lo), (hi_lab, hi) = moves
    return (name, lo_lab, hi_lab, lo, hi)


def _clock(sc: Scenario, mhz: float) -> Scenario:
    g = sc.cluster.gpu
    return _cluster(sc, gpu=dataclasses.replace(g, sustained_clock_mhz=mhz))


def _clock_moves(sc: Scenario, prof: Profile | None,
                 clocked: bool) -> list[tuple[str, str, str, Callable[[], float], Callable[[], float]]]:
    """``clocked``: the base prediction read a rate the sustained clock corrected."""
    g = sc.cluster.gpu
    name = "sustained SM clock"  # cluster.gpu.sustained_clock_mhz
    # Only rates read from a table timed in bursts follow the clock (simulator.timer), which notes each
    # table it corrected.
    if not g.sustained_clock_mhz:
        reason = "the GPU gives no sustained clock"
    elif not clocked:
        reason = "no rate this scenario reads comes from a table timed in bursts"
    else:
        reason = ""
    if reason:
        return [(name, "-10 %", "peak", _skip(reason), _skip(reason))]
    low = g.sustained_clock_mhz * 0.9
    return [(name, f"-10 % ({low:g})", f"peak ({g.peak_clock_mhz:g})",
             lambda: _gh(_clock(sc, low), prof), lambda: _gh(_clock(sc, g.peak_clock_mhz), prof))]


def _half(n: int) -> int:
    if n % 2:
        raise ValueError(f"half of micro-batch {n} is not a whole number of sequences")
    return n // 2


def sensitivity(sc: Scenario, profile: Any = None, notes: list[str] | None = None) -> list[dict]:
    """Tornado rows ``{input, low_label, high_label, low, base, high}``, largest swing first.

    ``low``/``high`` are GPU-hours per trillion tokens after the down/up move, or None where the
    move is invalid for this scenario (the reason is appended to ``notes`` when given).
    """
    prof = resolve_profile(sc, profile)
    pred = predict_analytic(sc, profile=prof)
    base = pred.gpu_hours_per_trillion_tokens
    clocked = any(w.startswith(SUSTAINED_CLOCK_NOTE) for w in pred.warnings)
    rows = []
    for name, lo_lab, hi_lab, lo_fn, hi_fn in _moves(sc, prof, clocked):
        if name == "routing skew" and not (sc.model.is_moe and sc.plan.ep > 1):
            if notes is not None:
                notes.append(f"{name} skipped: no expert parallelism in this plan")
            continue
        vals, why = [], []
        for lab, fn in ((lo_lab, lo_fn), (hi_lab, hi_fn)):
            try:
                vals.append(fn())
            except (ConfigError, ValueError) as e:
                vals.append(None)
                why.append((lab, str(e)))
        if notes is not None:
            if len(why) == 2 and why[0][1] == why[1][1]:  # both moves refused for one reason: say it once
                notes.append(f"{name} skipped: {why[0][1]}")
            else:
                notes += [f"{name} {lab} skipped: {e}" for lab, e in why]
        lo, hi = vals
        if lo is None and hi is None:  # neither move is valid here (an input it does not have): notes say why
            continue
        rows.append({"input": name, "low_label": lo_lab, "high_label": hi_lab, "low": lo, "base": base, "high": hi})
    rows.sort(key=lambda r: -_swing(r))
    return rows


def _swing(r: dict) -> float:
    vals = [v for v in (r["low"], r["high"]) if v is not None]
    return max(abs(v - r["base"]) for v in vals) if vals else 0.0


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_scenario_args

    p = subparsers.add_parser("sensitivity", help="tornado table: how GPU-hours move with each input")
    add_scenario_args(p)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .api import load
    from .cli import check_finite

    sc = load(args.scenario, args.overrides)
    notes: list[str] = []
    rows = sensitivity(sc, profile=args.profile, notes=notes)
    bands = prediction_bands(sc, profile=args.profile)
    base = bands["base"]
    doc = {"scenario": sc.name, "metric": METRIC, "base": base, "rows": rows, "notes": notes, "interval": bands}
    check_finite(doc)
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"gpuhours sensitivity: {sc.name}, GPU-hours per 1T tokens (analytic, steady state)")
    print(f"  base {base:,.0f}")
    for label, text in band_rows(bands):
        print(f"  {label}: {text}")
    w = 24
    nw = max([len("input")] + [len(r["input"]) for r in rows])
    print(f"  {'input':<{nw}} {'low move':>16} {'GPU-h/1T':>10} {'':>7}  {'high move':>16} {'GPU-h/1T':>10} {'':>7}  "
          "tornado")
    # Bars on a log scale of the ratio to the base, so that x2 and x0.5 draw alike and one large
    # swing (routing skew) does not flatten every other row to nothing.
    logs = [abs(math.log(v / base)) for r in rows for v in (r["low"], r["high"]) if v and base]
    span = max(logs, default=0.0) or 1.0

    def bar(v):  # a move of 0.5 % or more always gets a mark
        if not (v and base):
            return 0
        n = int(round(w * abs(math.log(v / base)) / span))
        return max(n, 1) if abs(v / base - 1) >= 0.005 else n

    for r in rows:
        def cell(v):
            if v is None:
                return f"{'invalid':>10} {'':>7}"
            return f"{v:>10,.0f} {f'{(v / base - 1) * 100:+.0f} %' if base else '':>7}"

        dl = (r["low"] - base) if r["low"] is not None else 0.0
        dh = (r["high"] - base) if r["high"] is not None else 0.0
        left = max(bar(r["low"]) if dl < 0 else 0, bar(r["high"]) if dh < 0 else 0)
        right = max(bar(r["low"]) if dl > 0 else 0, bar(r["high"]) if dh > 0 else 0)
        print(f"  {r['input']:<{nw}} {r['low_label']:>16} {cell(r['low'])}  {r['high_label']:>16} {cell(r['high'])}  "
              f"{' ' * (w - left)}{'<' * left}|{'>' * right}")
    print(f"  tornado: '<' GPU-hours fall, '>' they rise; log scale: {w} marks = x{math.exp(span):.2f} "
          "(the largest move), half as many = its square root")
    for n in notes:
        print(f"  note: {n}")
    return 0
