"""Error bars: how far a prediction may be off, from the two things it rests on.

A prediction is only as good as (1) the model's mechanisms and (2) the kernel
measurements it reads. Each gives its own band around the GPU-hours per
trillion tokens; neither is a statistical confidence interval, and they are
reported side by side, never combined:

- **Validation band.** ``gpuhours validate`` compares the analytic engine with
  published runs. For a run, ``r = predicted throughput / measured throughput``;
  GPU-hours scale as 1 / throughput, so the published run's GPU-hours were the
  prediction times ``r``. The band is the prediction times the 10th and 90th
  percentiles of ``r`` over the included rows of the public set: had this
  scenario erred like eight in ten of the published runs, its GPU-hours would
  lie inside. The errors are signed, so a model that tends to come in fast
  gives a band above its prediction, not a symmetric one.
- **Calibration band.** The spread of the profile's own measurements: every
  measured row of a kernel table (GEMM, grouped GEMM, attention and
  memory-bound rows of one dtype / direction / library / op) is predicted from
  the table's other rows by the same interpolation the op timer uses (outside
  their range: the same clamping), and the median absolute log-error of those
  leave-one-out predictions is the table's spread ``s``. It grows with how
  much independent measurements of one shape disagree and with how far a
  shape is from its neighbours. The band re-predicts the scenario with every
  table's throughputs divided (slow side) and multiplied (fast side) by
  ``exp(s)``; tables with fewer than three measured rows, collectives and the
  datasheet peaks the roofline falls back on are left alone (and named).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .analytic import predict_analytic, resolve_profile
from .config import Scenario
from .profile import Lookup, Profile, table_label

# Validation-band percentiles of the predicted/measured ratio.
QUANTILES = (0.10, 0.90)
# A table needs this many measured rows for a leave-one-out spread.
MIN_ROWS = 3

# Kernel tables with a spread: (what identifies one table of rows, its coordinates, value key, and the
# lookup the op timer makes for a row's shape), the same as :class:`simulator.profile.Profile`'s lookups.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, Callable[[Profile, dict], Lookup]]] = {
    "gemm": (("dtype",), ("m", "n", "k"), "tflops",
             lambda p, r: p.gemm_tflops(r["dtype"], r["m"], r["n"], r["k"])),
    "grouped_gemm": (("dtype",), ("groups", "m_per_group", "n", "k"), "tflops",
                     lambda p, r: p.grouped_gemm_tflops(r["dtype"], r["groups"], r["m_per_group"], r["n"], r["k"])),
    "attention": (("dtype", "direction", "library", "causal"), ("seq", "heads", "qk_dim", "v_dim"), "tflops",
                  lambda p, r: p.attention_tflops(r["dtype"], r["direction"], r["seq"], r["heads"], r["qk_dim"],
                                                  r["v_dim"], r.get("library") or "", r["causal"])),
    "memory_bound": (("op",), ("bytes",), "gbps", lambda p, r: p.memory_gbps(r["op"], r["bytes"], own=True)),
}


@dataclass(frozen=True)
class HeldOut:
    """One measured row predicted from the rest of its profile: ``lookup`` is what the timer answered."""

    table: str
    match: dict  # the row's table identity (dtype, direction, library or op)
    row: dict
    lookup: Lookup

    @property
    def log_error(self) -> float | None:
        """ln(measured / predicted throughput), i.e. ln(predicted / measured time); None without a value."""
        value_key = TABLES[self.table][2]
        return math.log(self.row[value_key] / self.lookup.value) if self.lookup.value else None


def leave_one_out(data: dict, tables=None) -> list[HeldOut]:
    """Every ordinary row of the kernel tables of a profile's data, predicted from all its other rows.

    Only rows whose table (same dtype / direction / library / op) keeps at least ``MIN_ROWS - 1`` ordinary
    rows without them are held out; ceiling rows (maxima over shapes) are never held out but stay in as
    bounds. Predictions go through the timer's own lookups, so edge rows come back clamped."""
    out = []
    for table, rows in data.get("tables", {}).items():
        if table not in TABLES or (tables and table not in tables):
            continue
        match_keys, _, _, lookup = TABLES[table]
        for i, r in enumerate(rows):
            if r.get("ceiling"):
                continue
            rest = rows[:i] + rows[i + 1:]
            same = [o for o in rest if not o.get("ceiling") and all(o.get(k) == r.get(k) for k in match_keys)]
            if len(same) < MIN_ROWS - 1:
                continue
            prof = Profile(dict(data, tables={table: rest}))
            out.append(HeldOut(table, {k: r.get(k) for k in match_keys}, r, lookup(prof, r)))
    return out


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of ``xs`` by linear interpolation between order statistics."""
    ys = sorted(xs)
    pos = q * (len(ys) - 1)
    i = int(math.floor(pos))
    j = min(i + 1, len(ys) - 1)
    return ys[i] + (pos - i) * (ys[j] - ys[i])


@lru_cache(maxsize=1)
def validation_ratios() -> tuple[tuple[str, float], ...]:
    """(run id, predicted / measured throughput) of every modelled row of the public set, analytic engine
    (computed once per process)."""
    from .validate import DEFAULT_CSV, read_csv, validate_rows

    results, _ = validate_rows(read_csv(DEFAULT_CSV), engine="analytic")
    return tuple((r.run_id, r.predicted / r.measured) for r in results
                 if r.predicted is not None and r.measured and math.isfinite(r.predicted))


@dataclass(frozen=True)
class Spread:
    """One kernel table's leave-one-out spread."""

    table: str
    match: dict
    rows: int
    spread: float | None  # median |ln(measured / predicted from the other rows)|; None below MIN_ROWS

    @property
    def label(self) -> str:
        return table_label(self.table, self.match)


@lru_cache(maxsize=8)
def calibration_spreads(prof: Profile) -> tuple[Spread, ...]:
    """Leave-one-out spread of every kernel table of ``prof`` (cached per profile object: loaded
    profiles are themselves cached per file)."""
    errors: dict[tuple, list[float]] = {}
    for h in leave_one_out(prof.data):
        if h.log_error is not None:
            errors.setdefault((h.table, tuple(h.match.items())), []).append(abs(h.log_error))
    counts: dict[tuple, int] = {}  # ordinary rows per (table, identity), in the profile's order
    for table, (match_keys, _, _, _) in TABLES.items():
        for r in prof.tables.get(table, []):
            if not r.get("ceiling"):
                key = (table, tuple((k, r.get(k)) for k in match_keys))
                counts[key] = counts.get(key, 0) + 1
    return tuple(Spread(table, dict(ident), n, statistics.median(errors[(table, ident)])
                        if errors.get((table, ident)) else None)
                 for (table, ident), n in counts.items())


def spread_profile(prof: Profile, spreads: tuple[Spread, ...], sign: int) -> Profile:
    """A copy of ``prof`` with each table's throughputs multiplied by exp(sign x its spread)."""
    moves = [(sp.table, sp.match, math.exp(sign * sp.spread)) for sp in spreads if sp.spread]

    def factor(table: str, row: dict) -> float:
        return next((k for t, match, k in moves
                     if t == table and all(row.get(key) == v for key, v in match.items())), 1.0)

    return prof.scaled(factor, f"{prof.name} {'+' if sign > 0 else '-'}spread")


def prediction_bands(sc: Scenario, profile: Profile | str | None = None, engine: str = "analytic",
                     headline: float | None = None, run: dict | None = None) -> dict:
    """The validation and calibration bands of a scenario's GPU-hours per trillion tokens.

    ``{"base", "validation": {"low", "high", "rows", "quantiles", "ratio_low", "ratio_high", "method"},
    "calibration": {"low", "high", "profile", "spreads": [{"table", "rows", "spread_pct"}], "not_estimated",
    "method"}}``; ``spreads`` lists the tables this scenario reads, largest first; ``calibration`` is None
    when the scenario runs on datasheet peaks alone (no profile). A scenario with phases or a batch ramp
    adds ``"run": {"total_gpu_hours", "validation": {"low", "high"}, "calibration": {"low", "high"}}``
    for the whole run (phases given as GPU-hours stay put); otherwise ``run`` is None.

    The bands are found with the analytic engine (a band needs several predictions); under ``engine``
    "des" they are carried over to the DES prediction, every figure scaled by DES / analytic at the
    scenario's plan, so that they sit around the number they qualify. A caller that has already run that
    engine passes its GPU-hours per trillion tokens (``headline``) and its whole run (``run``, as
    :func:`simulator.lifecycle.phase_gpu_hours` gives it), which are then not simulated again.
    """
    prof = resolve_profile(sc, profile)
    base = predict_analytic(sc, profile=prof).gpu_hours_per_trillion_tokens
    k = 1.0  # every modelled GPU-hour figure below is carried over by this ratio
    carried = ""
    if engine == "des":
        from .des.engine import predict_des

        k = (headline if headline is not None else predict_des(sc, profile=prof).gpu_hours_per_trillion_tokens) / base
        carried = "; carried over to the DES prediction (x DES / analytic at this plan)"
        base *= k
    ratios = [r for _, r in validation_ratios()]
    q_lo, q_hi = (quantile(ratios, q) for q in QUANTILES)
    validation = {
        "low": base * q_lo, "high": base * q_hi, "rows": len(ratios), "quantiles": list(QUANTILES),
        "ratio_low": q_lo, "ratio_high": q_hi,
        "method": "prediction x the 10th and 90th percentiles of predicted/measured throughput "
                  "over the public validation rows (analytic engine); not a confidence interval" + carried,
    }
    calibration = moved = None
    if prof is not None:
        spreads = calibration_spreads(prof)
        moved = fast_prof, slow_prof = spread_profile(prof, spreads, +1), spread_profile(prof, spreads, -1)
        fast = k * predict_analytic(sc, profile=fast_prof).gpu_hours_per_trillion_tokens
        slow = k * predict_analytic(sc, profile=slow_prof).gpu_hours_per_trillion_tokens
        # The fresh copy's lookups (its own, and its sustained-clock copies') are exactly the tables this scenario read.
        used = fast_prof.tables_read()
        read = [s for s in spreads if (s.table, tuple(sorted(s.match.items()))) in used]
        calibration = {
            "low": min(fast, slow), "high": max(fast, slow), "profile": prof.name,
            "spreads": sorted(({"table": s.label, "rows": s.rows, "spread_pct": 100 * (math.exp(s.spread) - 1)}
                               for s in read if s.spread is not None), key=lambda d: -d["spread_pct"]),
            "not_estimated": [f"{s.label}: {s.rows} row(s)" for s in read if s.spread is None]
            + ["collectives and datasheet-peak fallbacks"],
            "method": "each kernel table's throughputs moved by its median leave-one-out error "
                      "(profile rows predicted from the others); not a confidence interval" + carried,
        }
    if sc.training.phases or sc.training.batch_ramp_from:
        run_bands = _run_bands(sc, prof, q_lo, q_hi, moved, engine, k, run)
    else:
        run_bands = None
    return {"base": base, "validation": validation, "calibration": calibration, "run": run_bands}


def _run_bands(sc: Scenario, prof: Profile | None, q_lo: float, q_hi: float, moved: tuple | None,
               engine: str = "analytic", k: float = 1.0, run: dict | None = None) -> dict:
    """Both bands on the whole run's GPU-hours: modelled phases move, phases given as GPU-hours stay.
    ``moved``: the two spread profiles of the calibration band (None without a profile); the run itself
    is ``engine``'s, and the calibration band's analytic runs are carried over to it by ``k`` (see
    :func:`prediction_bands`); ``run``: ``engine``'s run when the caller has it."""
    from .lifecycle import phase_gpu_hours

    def split(p, eng="analytic", scale=k, done=None):
        res = done or phase_gpu_hours(sc, engine=eng, profile=p)
        modelled = sum(ph["gpu_hours"] for ph in res["phases"] if ph["modelled"])
        return scale * modelled, res["total_gpu_hours"] - modelled

    modelled, given = split(prof, engine, 1.0, run)
    out = {"total_gpu_hours": modelled + given,
           "validation": {"low": given + modelled * q_lo, "high": given + modelled * q_hi}}
    if moved is not None:
        totals = [sum(split(p)) for p in moved]
        out["calibration"] = {"low": min(totals), "high": max(totals)}
    return out


def band_rows(bands: dict) -> list[tuple[str, str]]:
    """(label, text) lines of :func:`prediction_bands` for the CLI's tables."""
    v = bands["validation"]
    rows = [("validation band", f"{v['low']:,.0f} .. {v['high']:,.0f} GPU-h/1T: published runs took "
                                f"{v['ratio_low']:.2f}x .. {v['ratio_high']:.2f}x our prediction "
                                f"(10th-90th pct of {v['rows']} rows; not a confidence interval)")]
    c = bands["calibration"]
    if c is None:
        rows.append(("calibration band", "none: no calibration profile (datasheet peaks)"))
    else:
        worst = c["spreads"][:2]
        rows.append(("calibration band", f"{c['low']:,.0f} .. {c['high']:,.0f} GPU-h/1T: profile {c['profile']} "
                                         "tables moved by their leave-one-out error (largest: "
                                         + ", ".join(f"{s['table']} {s['spread_pct']:.0f} %" for s in worst) + ")"))
    run = bands.get("run")
    if run:
        text = f"validation {run['validation']['low']:,.0f} .. {run['validation']['high']:,.0f}"
        if "calibration" in run:
            text += f", calibration {run['calibration']['low']:,.0f} .. {run['calibration']['high']:,.0f}"
        rows.append(("run total bands", text + " GPU-hours"))
    return rows


__all__ = ["HeldOut", "TABLES", "band_rows", "leave_one_out", "QUANTILES", "Spread", "calibration_spreads", "prediction_bands", "quantile", "spread_profile",
           "validation_ratios"]
