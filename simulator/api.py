"""The public Python API: what the CLI and the dashboard call.

>>> from simulator.api import load, predict, report
>>> sc = load("deepseek-v3", ["plan.pp=8"])          # doctest: +SKIP
>>> report(predict(sc))["gpu_hours_per_trillion_tokens"]   # doctest: +SKIP

``predict`` picks the engine (``analytic`` for speed, ``des`` for detail);
``report`` turns a prediction into the plain dict printed by
``gpuhours predict --json``; ``run_cost`` integrates a whole run (batch ramp
and phases) into GPU-hours and dollars.
"""

from __future__ import annotations

from typing import Any

from .analytic import Prediction, predict_analytic
from .config import Scenario, to_dict
from .profile import Profile, list_profiles, load_profile
from .scenario import list_clusters, list_models, list_scenarios, load_scenario, scenario_from_dict
from .workload import param_counts, train_flops_per_token

ENGINES = ("analytic", "des")

__all__ = [
    "ENGINES", "Prediction", "Scenario", "list_clusters", "list_models", "list_profiles", "list_scenarios",
    "load", "load_profile", "predict", "report", "run_cost", "scenario_from_dict", "to_dict",
]


def load(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A validated scenario from a preset name or YAML path plus ``section.field=value`` overrides."""
    return load_scenario(name_or_path, tuple(overrides))


def predict(sc: Scenario, engine: str = "analytic", profile: Profile | str | None = None, **kw: Any) -> Prediction:
    """Predict one training step of ``sc``."""
    if engine == "analytic":
        return predict_analytic(sc, profile=profile, **kw)
    if engine == "des":
        from .des.engine import predict_des

        return predict_des(sc, profile=profile, **kw)
    from .errors import ConfigError

    raise ConfigError("--engine", f"unknown engine {engine!r}", ", ".join(ENGINES))


def run_cost(sc: Scenario, engine: str = "analytic", profile: Profile | str | None = None,
             segments: int = 8) -> dict:
    """GPU-hours and dollars of the scenario's whole run, batch ramp included.

    The ramp (``training.batch_ramp_from`` to ``global_batch`` over
    ``batch_ramp_tokens``) is cut into ``segments`` equal-token pieces, each
    predicted at its mean batch rounded to a batch the plan accepts.
    """
    from .lifecycle import phase_gpu_hours

    return phase_gpu_hours(sc, engine=engine, profile=profile, segments=segments)


def report(pred: Prediction) -> dict:
    """The plain-data report of one prediction (the keys of ``gpuhours predict --json``)."""
    sc = pred.scenario
    m = sc.model
    pc = param_counts(m)
    price = sc.cost.usd_per_gpu_hour
    out = {
        "scenario": sc.name,
        "engine": pred.engine,
        "model": m.name,
        "cluster": sc.cluster.name,
        "num_gpus": sc.cluster.num_gpus,
        "plan": to_dict(sc.plan),
        "total_params": pc.total,
        "activated_params": pc.activated_excl_embedding,
        "activated_params_incl_embedding": pc.activated,
        "mtp_params": pc.mtp,
        "train_flops_per_token": train_flops_per_token(m, sc.training.seq_len),
        "model_flops_per_token": pred.model_flops_per_token,
        "step_time_s": pred.step_time_s,
        "tokens_per_s_per_gpu": pred.tokens_per_s_per_gpu,
        "mfu": pred.mfu,
        "bubble_fraction": pred.bubble_s / pred.step_time_s,
        "exposed_comm_fraction": pred.exposed_comm_s / pred.step_time_s,
        "overlap_ratio": _overlap(pred),
        "peak_memory_gib": pred.peak_memory_gib,
        "hbm_gib": sc.cluster.gpu.hbm_gib,
        "fits_in_memory": pred.fits_in_memory,
        "gpu_hours_per_trillion_tokens": pred.gpu_hours_per_trillion_tokens,
        "usd_per_trillion_tokens": pred.gpu_hours_per_trillion_tokens * price,
        "microbatches": sc.microbatches,
        "step_breakdown_s": {
            "busy": pred.busy_s, "bubble": pred.bubble_s, "dp_exposed": pred.dp_exposed_s,
            "optimizer": pred.optimizer_s, "exposed_comm": pred.exposed_comm_s, "hidden_comm": pred.hidden_comm_s,
        },
        "chunk_times_ms": pred.extra.get("chunk_times_ms", {}),
        "stages": [
            {
                "rank": s.rank, "stages": s.stages, "layers": s.layers,
                "chunk_times_ms": {"F": s.F * 1e3, "B": s.B * 1e3, "W": s.W * 1e3, "FB": s.FB * 1e3},
                "busy_s": s.busy, "bubble_s": s.bubble, "exposed_comm_s": s.exposed_comm,
                "hidden_comm_s": s.hidden_comm, "memory_gib": s.memory.gib(),
                **({"memory_over_time": s.memory_over_time} if getattr(s, "memory_over_time", None) else {}),
            }
            for s in pred.stages
        ],
        "warnings": pred.warnings,
    }
    bulky = ("timeline", "dp_timeline", "p2p_flows")  # in pred.extra and the trace, not in the report
    out.update({k: v for k, v in pred.extra.items() if k not in out and k not in bulky and _jsonable(v)})
    return out


def _overlap(pred: Prediction) -> float:
    total = pred.hidden_comm_s + pred.exposed_comm_s
    return pred.hidden_comm_s / total if total > 0 else 1.0


def _jsonable(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, list, dict, type(None)))
