"""Whole-run cost: phases and batch-size ramps integrated into GPU-hours.

A run is a list of phases (pre-training, context extension, post-training).
Each phase has its own sequence length and batch, optionally a linear batch
ramp at its start, and optionally plan overrides (long-context phases often
change the plan). A phase's GPU-hours are its tokens divided by the predicted
throughput, integrated piecewise over the ramp. A phase may instead carry a
given ``gpu_hours`` (e.g. post-training, which this simulator does not model).

Phases are gathered into the columns of a published cost table (``PhaseConfig.column``),
each column's published figure the sum of its phases' figures, so that a prediction
is compared with what was published at the granularity it was published at.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import MICROBATCHES_MAX, PhaseConfig, PlanConfig, Scenario, build
from .errors import ConfigError


def _batch_unit(sc: Scenario) -> int:
    """The step in which the plan's batch may grow, in sequences: one micro-batch per data-parallel
    replica (``dp x micro_batch``), two under DualPipe(V) (its micro-batches run in forward-backward
    pairs) and ``pp`` under the interleaved schedule (Megatron-LM needs a multiple of ``pp``)."""
    p = sc.plan
    per = sc.dp * p.micro_batch
    if p.schedule == "interleaved":
        return per * p.pp
    return per * (2 if p.schedule in ("dualpipe", "dualpipev") else 1)


def _least_batch(sc: Scenario) -> tuple[int, str]:
    """The smallest batch (in sequences) the plan runs, and why it can run no fewer.

    DualPipe and DualPipeV need at least ``2 x pp`` micro-batches per pipeline replica (deepseek-ai/DualPipe's
    reference asserts it; ``Scenario.validate`` checks it); every schedule needs one unit of
    :func:`_batch_unit`."""
    p = sc.plan
    per = sc.dp * p.micro_batch
    if p.schedule in ("dualpipe", "dualpipev"):
        need = 2 * p.pp
        why = f"{p.schedule} needs at least 2 x pp = {need} micro-batches per pipeline replica"
    elif p.schedule == "interleaved":
        need = p.pp
        why = f"interleaved needs a multiple of pp = {need} micro-batches per pipeline replica"
    else:
        need = 1
        why = "every data-parallel replica needs at least one micro-batch"
    # need x per is a whole number of _batch_unit(sc) under every schedule (2 pp x per for DualPipe, pp x per
    # interleaved, per otherwise).
    return need * per, f"{why} (dp {sc.dp} x micro_batch {p.micro_batch} x {need} = {need * per:,} sequences)"


def _valid_batch(sc: Scenario, batch: float) -> int:
    """The batch (in sequences) the plan accepts that is nearest ``batch``: a whole number of
    :func:`_batch_unit`, rounded to the nearest (so it may lie below ``batch`` as well as above),
    and never below :func:`_least_batch`, which may lift it well above ``batch``."""
    return _nearest_batch(batch, _batch_unit(sc), _least_batch(sc)[0])[0]


def _nearest_batch(batch: float, unit: int, least: int) -> tuple[int, bool]:
    """:func:`_valid_batch` from the plan's unit and least batch, and whether the least batch lifted it
    (rather than mere rounding)."""
    rounded = round(batch / unit) * unit
    return int(max(rounded, least)), rounded < least


def with_phase(sc: Scenario, seq: int, batch: int, plan: tuple[tuple[str, Any], ...] = ()) -> Scenario:
    # One step of the phase: its own ramp is priced by the caller, so the step's scenario has none.
    training = dataclasses.replace(sc.training, seq_len=seq, global_batch=batch, batch_ramp_from=0,
                                   batch_ramp_tokens=0.0)
    new_plan = sc.plan
    if plan:  # checked and coerced like the scenario's own plan (a phase's YAML says `pp: 8` or `pp: "8"`)
        merged = {f.name: getattr(sc.plan, f.name) for f in dataclasses.fields(sc.plan)}
        merged.update(dict(plan))
        new_plan = build(PlanConfig, merged, "training.phases.plan")
    return dataclasses.replace(sc, training=training, plan=new_plan).validate()


def phases_of(sc: Scenario) -> tuple[PhaseConfig, ...]:
    t = sc.training
    if t.phases:
        return t.phases
    return (PhaseConfig("pre-training", t.seq_len, t.global_batch, tokens=t.tokens,
                        batch_ramp_from=t.batch_ramp_from, batch_ramp_tokens=t.batch_ramp_tokens),)


def phase_gpu_hours(sc: Scenario, engine: str = "analytic", profile: Any = None, segments: int = 8) -> dict:
    """GPU-hours and dollars per phase, per published column and in total."""
    price = sc.cost.usd_per_gpu_hour
    out = []
    for ph in phases_of(sc):
        if ph.gpu_hours and not (ph.tokens or ph.steps):
            out.append({"name": ph.name, "column": ph.column or ph.name, "gpu_hours": ph.gpu_hours,
                        "usd": ph.gpu_hours * price, "published_gpu_hours": ph.published_gpu_hours or None,
                        "modelled": False, "tokens": 0.0, "seq_len": ph.seq_len})
            continue
        tokens = ph.total_tokens
        if tokens <= 0:
            raise ConfigError(f"training.phases.{ph.name}", "has neither tokens nor steps nor gpu_hours")
        try:  # a phase's plan or batch that does not validate is named with its phase
            hours, steady, notes = _phase_hours(sc, ph, tokens, segments, engine, profile)
        except ConfigError as e:
            if e.field.startswith("training."):  # names its own field already
                raise
            raise ConfigError(f"training.phases.{ph.name}", str(e)) from None
        summary = _steady_summary(steady) if steady else {}
        out.append({
            "name": ph.name, "column": ph.column or ph.name, "gpu_hours": hours, "usd": hours * price,
            "tokens": tokens, "seq_len": ph.seq_len,
            "published_gpu_hours": ph.published_gpu_hours or None, "modelled": True,
            "steady_gpu_hours_per_trillion_tokens": steady.gpu_hours_per_trillion_tokens if steady else None,
            **summary, "warnings": [*summary.get("warnings", []), *notes],
        })
    total = sum(p["gpu_hours"] for p in out)
    modelled_tokens = sum(p["tokens"] for p in out if p["modelled"])
    table = _columns(out, price)
    # A published total exists only when every column has its figure: a sum over some columns
    # compared with the whole predicted run would report the missing columns as error.
    published = [c["published_gpu_hours"] for c in table]
    pub_total = sum(published) if all(published) else None
    return {
        "phases": out,
        "warnings": phase_warnings({"phases": out}),
        "table": table,
        "total_gpu_hours": total,
        "published_total_gpu_hours": pub_total,
        "total_error": total / pub_total - 1 if pub_total else None,
        "total_usd": total * price,
        "tokens": modelled_tokens,
        "gpu_hours_per_trillion_tokens_run": (sum(p["gpu_hours"] for p in out if p["modelled"]) / modelled_tokens * 1e12)
        if modelled_tokens else None,
        "days_on_cluster": total / sc.cluster.num_gpus / 24,
    }


def phase_warnings(run: dict, shown=()) -> list[str]:
    """Warnings of a run's phases not already among ``shown`` (the headline's), each named with its phase."""
    seen = set(shown)
    return [f"[{ph['name']}] {w}" for ph in run["phases"] for w in ph.get("warnings", []) if w not in seen]


def _phase_hours(sc: Scenario, ph: PhaseConfig, tokens: float, segments: int, engine: str, profile: Any):
    """GPU-hours of one modelled phase, its batch ramp integrated piecewise, its steady prediction, and
    warnings: ramp segments lifted above the batch they asked for because the plan runs no fewer."""
    from .api import predict

    pieces: list[tuple[float, int]] = []  # (tokens, batch)
    notes: list[str] = []
    ramp_tokens = min(ph.batch_ramp_tokens, tokens) if ph.batch_ramp_from else 0.0
    if ramp_tokens > 0:
        base = with_phase(sc, ph.seq_len, ph.global_batch, ph.plan)
        per = base.dp * base.plan.micro_batch  # sequences per micro-batch, over the data-parallel replicas
        if ph.batch_ramp_from > MICROBATCHES_MAX * per:
            field = f"training.phases.{ph.name}.batch_ramp_from" if sc.training.phases else "training.batch_ramp_from"
            raise ConfigError(field, f"{ph.batch_ramp_from} sequences are {ph.batch_ramp_from // per:,} micro-batches "
                                     f"per pipeline replica (dp {base.dp} x micro_batch {base.plan.micro_batch})",
                              f"0 (no ramp) or at most {MICROBATCHES_MAX * per} ({MICROBATCHES_MAX} micro-batches)")
        unit = _batch_unit(base)
        least, why = _least_batch(base)
        lifted: list[float] = []  # batches asked for that the plan's least batch lifts (not mere rounding)
        for i in range(segments):
            frac = (i + 0.5) / segments
            asked = ph.batch_ramp_from + frac * (ph.global_batch - ph.batch_ramp_from)
            batch, was_lifted = _nearest_batch(asked, unit, least)
            pieces.append((ramp_tokens / segments, batch))
            if was_lifted:
                lifted.append(asked)
        if lifted:
            asked = ", ".join(f"{a:,.0f}" for a in lifted)
            notes.append(
                f"batch ramp lifted: {len(lifted)} of {segments} segments ({asked} sequences asked) priced at "
                f"{least:,} sequences, the least this phase's plan runs: {why}; "
                f"{len(lifted) * ramp_tokens / segments / 1e9:,.0f}B of the ramp's {ramp_tokens / 1e9:,.0f}B tokens "
                "priced at the larger batch")
    pieces.append((tokens - ramp_tokens, ph.global_batch))
    hours = 0.0
    steady = None
    for tok, batch in pieces:
        if tok <= 0:
            continue
        pred = predict(with_phase(sc, ph.seq_len, batch, ph.plan), engine=engine, profile=profile)
        hours += tok * pred.gpu_hours_per_trillion_tokens / 1e12
        steady = pred
    return hours, steady, notes


def _steady_summary(pred) -> dict:
    """What a user needs to trust a phase's figure: its plan, step, memory and warnings."""
    from .api import report

    rep = report(pred)
    return {
        "plan": rep["plan"],
        "global_batch": pred.scenario.training.global_batch,
        "step_time_s": rep["step_time_s"], "tokens_per_s_per_gpu": rep["tokens_per_s_per_gpu"], "mfu": rep["mfu"],
        "peak_memory_gib": rep["peak_memory_gib"], "fits_in_memory": rep["fits_in_memory"],
        "warnings": rep["warnings"],
    }


def _columns(phases: list[dict], price: float) -> list[dict]:
    """The phases gathered into the published table's columns, in order of first appearance."""
    cols: dict[str, dict] = {}
    for ph in phases:
        c = cols.setdefault(ph["column"], {"column": ph["column"], "phases": [], "gpu_hours": 0.0,
                                           "published_gpu_hours": None, "modelled": False})
        c["phases"].append(ph["name"])
        c["gpu_hours"] += ph["gpu_hours"]
        c["modelled"] = c["modelled"] or ph["modelled"]
        if ph["published_gpu_hours"]:
            c["published_gpu_hours"] = (c["published_gpu_hours"] or 0.0) + ph["published_gpu_hours"]
    for c in cols.values():
        c["usd"] = c["gpu_hours"] * price
        pub = c["published_gpu_hours"]
        c["error"] = c["gpu_hours"] / pub - 1 if pub and c["modelled"] else None
    return list(cols.values())
