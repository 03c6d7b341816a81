"""Whole-run cost: phases and batch-size ramps integrated into GPU-hours.

A run is a list of phases (pre-training, context extension, post-training).
Each phase has its own sequence length and batch, optionally a linear batch
ramp at its start, and optionally plan overrides (long-context phases often
change the plan). A phase's GPU-hours are its tokens divided by the predicted
throughput, integrated piecewise over the ramp. A phase may instead carry a
given ``gpu_hours`` (e.g. post-training, which this simulator does not model).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import PhaseConfig, PlanConfig, Scenario, build
from .errors import ConfigError


def _valid_batch(sc: Scenario, batch: float) -> int:
    """The nearest batch (in sequences) at or above ``batch`` that the plan accepts."""
    p = sc.plan
    unit = sc.dp * p.micro_batch * (2 if p.schedule in ("dualpipe", "dualpipev") else 1)
    if p.schedule == "interleaved":
        unit = sc.dp * p.micro_batch * p.pp
    min_mb = 2 * p.pp if p.schedule in ("dualpipe", "dualpipev") else 1
    n = max(round(batch / unit), -(-min_mb * sc.dp * p.micro_batch // unit), 1)
    return int(n * unit)


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
    """GPU-hours and dollars per phase and in total."""
    from .api import predict

    price = sc.cost.usd_per_gpu_hour
    out = []
    for ph in phases_of(sc):
        if ph.gpu_hours and not (ph.tokens or ph.steps):
            out.append({"name": ph.name, "gpu_hours": ph.gpu_hours, "usd": ph.gpu_hours * price,
                        "published_gpu_hours": ph.published_gpu_hours or None, "modelled": False,
                        "tokens": 0.0, "seq_len": ph.seq_len})
            continue
        tokens = ph.total_tokens
        if tokens <= 0:
            raise ConfigError(f"training.phases.{ph.name}", "has neither tokens nor steps nor gpu_hours")
        pieces: list[tuple[float, int]] = []  # (tokens, batch)
        ramp_tokens = min(ph.batch_ramp_tokens, tokens) if ph.batch_ramp_from else 0.0
        if ramp_tokens > 0:
            for i in range(segments):
                frac = (i + 0.5) / segments
                pieces.append((ramp_tokens / segments, _valid_batch(
                    with_phase(sc, ph.seq_len, ph.global_batch, ph.plan), ph.batch_ramp_from + frac * (ph.global_batch - ph.batch_ramp_from))))
        pieces.append((tokens - ramp_tokens, ph.global_batch))
        hours = 0.0
        steady = None
        for tok, batch in pieces:
            if tok <= 0:
                continue
            variant = with_phase(sc, ph.seq_len, batch, ph.plan)
            pred = predict(variant, engine=engine, profile=profile)
            hours += tok * pred.gpu_hours_per_trillion_tokens / 1e12
            steady = pred
        out.append({
            "name": ph.name, "gpu_hours": hours, "usd": hours * price, "tokens": tokens, "seq_len": ph.seq_len,
            "published_gpu_hours": ph.published_gpu_hours or None, "modelled": True,
            "steady_gpu_hours_per_trillion_tokens": steady.gpu_hours_per_trillion_tokens if steady else None,
        })
    total = sum(p["gpu_hours"] for p in out)
    modelled_tokens = sum(p["tokens"] for p in out if p["modelled"])
    return {
        "phases": out,
        "total_gpu_hours": total,
        "total_usd": total * price,
        "tokens": modelled_tokens,
        "gpu_hours_per_trillion_tokens_run": (sum(p["gpu_hours"] for p in out if p["modelled"]) / modelled_tokens * 1e12)
        if modelled_tokens else None,
        "days_on_cluster": total / sc.cluster.num_gpus / 24,
    }
