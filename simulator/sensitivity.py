"""Sensitivity: ``gpuhours sensitivity NAME`` prints a tornado table.

Each input is moved down and up one at a time (the rest held at the
scenario's values) and the steady-state GPU-hours per trillion tokens are
re-predicted with the analytic engine. Each move is the scenario itself with
that one input changed, predicted as it stands: its routing (``plan.routing``,
Zipf skew or a histogram) included, so a scenario with skewed routing keeps its
skew under every move but the routing-skew one.

The inputs:

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
  the plan's (every move is relative to the scenario, so none repeats its own value). The SMs move
  the compute side only: the all-to-all is priced at the rates DeepEP's normal kernels were
  measured at (the profile's ``collectives`` rows, DeepEP README), which ran on DeepEP's default
  20 SMs (``deep_ep.Buffer.num_sms``), and this cost model has no curve of that rate against the
  SMs it is given; so fewer SMs can only look faster. The row carries a note that says so;
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
A move whose plan is valid but does not fit in the GPU's memory (doubling the
micro-batch, typically) keeps its GPU-hours, a price for a plan that cannot
run, and is marked: ``low_fits``/``high_fits`` False in its row, "does not
fit" beside the move in the table and a note with the peak memory.

Beside the tornado it prints the prediction's two error bands (validation and
calibration, :mod:`simulator.uncertainty`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Callable

from .analytic import Prediction, predict_analytic, resolve_profile
from .config import ATTENTION_KERNELS, Scenario
from .errors import ConfigError
from .profile import Profile
from .timer import SUSTAINED_CLOCK_NOTE
from .uncertainty import band_rows, prediction_bands

METRIC = "gpu_hours_per_trillion_tokens"
SKEWS = (0.2, 0.5)  # Zipf exponents of the routing-skew moves (see the module docstring)
FUSED_ATTENTION_KERNELS = tuple(k for k in ATTENTION_KERNELS if k != "unfused")
DOES_NOT_FIT = "does not fit"  # beside a move whose plan is valid but exceeds the GPU's memory
# What a row's numbers leave out, said beside it (see the module docstring).
ROW_NOTES = {
    "plan.comm_sms": "compute side only: the all-to-all keeps its rate whatever SMs it is given (DeepEP's "
                     "normal kernels' rate measured at 20 SMs, where the profile has their rows), so fewer SMs "
                     "can only look faster",
}


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


def _predict(sc: Scenario, profile: Any = None) -> Prediction:
    """The analytic prediction of a moved scenario, as the base case is predicted: no ``imbalance``
    is passed, so :func:`predict_analytic` derives it from the moved scenario's own routing
    (:func:`simulator.analytic.routing_imbalance`) and a move of a bandwidth or a kernel rate
    keeps the scenario's routing skew."""
    return predict_analytic(sc, profile=profile)


def _cluster(sc: Scenario, **kw: Any) -> Scenario:
    return dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, **kw)).validate()


def _plan(sc: Scenario, **kw: Any) -> Scenario:
    return dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, **kw)).validate()


Move = tuple[str, str, str, Callable[[], Prediction], Callable[[], Prediction]]  # input, labels, predictions


def _moves(sc: Scenario, prof: Profile | None, clocked: bool) -> list[Move]:
    c, p = sc.cluster, sc.plan
    return [
        ("cluster.ib_gbps", f"x0.5 ({c.ib_gbps * 0.5:g})", f"x2 ({c.ib_gbps * 2:g})",
         lambda: _predict(_cluster(sc, ib_gbps=c.ib_gbps * 0.5), prof), lambda: _predict(_cluster(sc, ib_gbps=c.ib_gbps * 2), prof)),
        ("cluster.nvlink_gbps", f"x0.5 ({c.nvlink_gbps * 0.5:g})", f"x2 ({c.nvlink_gbps * 2:g})",
         lambda: _predict(_cluster(sc, nvlink_gbps=c.nvlink_gbps * 0.5), prof),
         lambda: _predict(_cluster(sc, nvlink_gbps=c.nvlink_gbps * 2), prof)),
        ("kernel efficiency", "x0.8", "x1.2",
         lambda: _predict(_scaled_gpu(sc, 0.8), scaled_profile(prof, 0.8)),
         lambda: _predict(_scaled_gpu(sc, 1.2), scaled_profile(prof, 1.2))),
        ("routing skew", f"zipf s={SKEWS[0]:g}", f"zipf s={SKEWS[1]:g}",
         lambda: _predict(_plan(sc, routing="zipf", zipf_s=SKEWS[0]), prof),
         lambda: _predict(_plan(sc, routing="zipf", zipf_s=SKEWS[1]), prof)),
        ("plan.comm_sms", f"-8 ({p.comm_sms - 8})", f"+8 ({p.comm_sms + 8})",
         lambda: _predict(_plan(sc, comm_sms=p.comm_sms - 8), prof), lambda: _predict(_plan(sc, comm_sms=p.comm_sms + 8), prof)),
        ("plan.micro_batch", f"x0.5 ({p.micro_batch / 2:g})", f"x2 ({p.micro_batch * 2})",
         lambda: _predict(_plan(sc, micro_batch=_half(p.micro_batch)), prof),
         lambda: _predict(_plan(sc, micro_batch=p.micro_batch * 2), prof)),
        _attention_move(sc, prof),
        *_clock_moves(sc, prof, clocked),
    ]


def _skip(reason: str) -> Callable[[], Prediction]:
    """A move that cannot be made here: calling it raises ``reason`` (reported as a note)."""
    def fn() -> Prediction:
        raise ValueError(reason)
    return fn


def _attention_move(sc: Scenario, prof: Profile | None) -> Move:
    """The plan's attention kernel swapped for the first two of flash, cudnn, fa2 (in that order) that are
    not the plan's and that the profile has rows for: a kernel without rows would be priced like the
    default one (with a warning), and the row would show a move that is not one."""
    name = "plan.attention_kernel"
    have = prof.attention_kernels() if prof else set()
    others = [k for k in FUSED_ATTENTION_KERNELS if k != sc.plan.attention_kernel and k in have][:2]
    if not others:
        why = _skip(f"profile {prof.name if prof else '(none)'} has attention rows for no other kernel")
        return (name, "other", "other", why, why)
    moves = [(f"to {k}", lambda k=k: _predict(_plan(sc, attention_kernel=k), prof)) for k in others]
    if len(moves) == 1:
        moves.append(("-", _skip(f"profile {prof.name} has attention rows for one other kernel only")))
    (lo_lab, lo), (hi_lab, hi) = moves
    return (name, lo_lab, hi_lab, lo, hi)


def _clock(sc: Scenario, mhz: float) -> Scenario:
    g = sc.cluster.gpu
    return _cluster(sc, gpu=dataclasses.replace(g, sustained_clock_mhz=mhz))


def _clock_moves(sc: Scenario, prof: Profile | None, clocked: bool) -> list[Move]:
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
             lambda: _predict(_clock(sc, low), prof), lambda: _predict(_clock(sc, g.peak_clock_mhz), prof))]


def _half(n: int) -> int:
    if n % 2:
        raise ValueError(f"half of micro-batch {n} is not a whole number of sequences")
    return n // 2


def sensitivity(sc: Scenario, profile: Any = None, notes: list[str] | None = None) -> list[dict]:
    """Tornado rows ``{input, low_label, high_label, low, base, high, low_fits, high_fits, note}``,
    largest swing first.

    ``low``/``high`` are GPU-hours per trillion tokens after the down/up move, or None where the
    move is invalid for this scenario (the reason is appended to ``notes`` when given).
    ``low_fits``/``high_fits``: whether the moved plan fits in the GPU's memory (None where the move
    is invalid); a move that does not fit keeps its GPU-hours and a note gives its peak memory.
    ``note``: what the row's numbers leave out ("" for most rows), also appended to ``notes``.
    """
    prof = resolve_profile(sc, profile)
    pred = predict_analytic(sc, profile=prof)
    base = pred.gpu_hours_per_trillion_tokens
    clocked = any(w.startswith(SUSTAINED_CLOCK_NOTE) for w in pred.warnings)
    if notes is not None and not pred.fits_in_memory:  # then most moves do not fit either: say it once
        notes.append(f"the scenario's own plan {DOES_NOT_FIT} in memory: {_memory(pred)}; nor does any move "
                     f"marked '{DOES_NOT_FIT}'")
    rows = []
    for name, lo_lab, hi_lab, lo_fn, hi_fn in _moves(sc, prof, clocked):
        if name == "routing skew" and not (sc.model.is_moe and sc.plan.ep > 1):
            if notes is not None:
                notes.append(f"{name} skipped: no expert parallelism in this plan")
            continue
        vals, fits, why, full = [], [], [], []
        for lab, fn in ((lo_lab, lo_fn), (hi_lab, hi_fn)):
            try:
                moved = fn()
            except (ConfigError, ValueError) as e:
                vals.append(None)
                fits.append(None)
                why.append((lab, str(e)))
                continue
            vals.append(moved.gpu_hours_per_trillion_tokens)
            fits.append(moved.fits_in_memory)
            if not moved.fits_in_memory and pred.fits_in_memory:  # else said once, of the base, above
                full.append(f"{name} {lab} {DOES_NOT_FIT} in memory: {_memory(moved)}; its GPU-hours are "
                            "for a plan that cannot run")
        if notes is not None:
            if len(why) == 2 and why[0][1] == why[1][1]:  # both moves refused for one reason: say it once
                notes.append(f"{name} skipped: {why[0][1]}")
            else:
                notes += [f"{name} {lab} skipped: {e}" for lab, e in why]
        lo, hi = vals
        if lo is None and hi is None:  # neither move is valid here (an input it does not have): notes say why
            continue
        note = ROW_NOTES.get(name, "")
        if notes is not None:
            notes += full + ([f"{name}: {note}"] if note else [])
        rows.append({"input": name, "low_label": lo_lab, "high_label": hi_lab, "low": lo, "base": base, "high": hi,
                     "low_fits": fits[0], "high_fits": fits[1], "note": note})
    rows.sort(key=lambda r: -_swing(r))
    return rows


def _memory(pred: Prediction) -> str:
    return f"needs {pred.peak_memory_gib:,.0f} GiB a GPU, more than its {pred.scenario.cluster.gpu.hbm_gib:,.0f} GiB"


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

    def move(r: dict, side: str) -> str:  # the move's label, and "does not fit" where its plan exceeds memory
        return r[f"{side}_label"] + (f", {DOES_NOT_FIT}" if r[f"{side}_fits"] is False else "")

    mw = max([16] + [len(move(r, side)) for r in rows for side in ("low", "high")])
    print(f"  {'input':<{nw}} {'low move':>{mw}} {'GPU-h/1T':>10} {'':>7}  {'high move':>{mw}} {'GPU-h/1T':>10} {'':>7}  "
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
        print(f"  {r['input']:<{nw}} {move(r, 'low'):>{mw}} {cell(r['low'])}  {move(r, 'high'):>{mw}} {cell(r['high'])}  "
              f"{' ' * (w - left)}{'<' * left}|{'>' * right}")
    print(f"  tornado: '<' GPU-hours fall, '>' they rise; log scale: {w} marks = x{math.exp(span):.2f} "
          "(the largest move), half as many = its square root")
    for n in notes:
        print(f"  note: {n}")
    return 0
