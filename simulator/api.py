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
from .breakdown import PARTS as STEP_PARTS
from .config import (
    ATTENTION_KERNELS,
    CP_COMMS,
    DISPATCHERS,
    DUALPIPE_SENDS,
    EP_OVERLAPS,
    FP8_RECIPES,
    LOSS_KERNELS,
    RECOMPUTE,
    SCHEDULES,
    Scenario,
    to_dict,
)
from .errors import ConfigError
from .lifecycle_text import plan_text
from .profile import Profile, list_profiles, load_profile
from .scenario import list_clusters, list_models, list_scenarios, load_scenario, scenario_from_dict
from .workload import param_counts, train_flops_per_token

ENGINES = ("analytic", "des")

__all__ = [
    "ENGINES", "PLAN_CHOICES", "Prediction", "STEP_PARTS", "Scenario", "list_clusters", "list_models", "list_profiles",
    "list_scenarios", "load", "load_for_search", "load_profile", "plan_text", "predict", "report", "run_cost", "scenario_from_dict",
    "to_dict", "headline_warnings", "gpu_counts",
]

# The values each categorical plan field accepts (what config validation allows), for front ends that
# offer them as choices.
PLAN_CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": SCHEDULES, "recompute": RECOMPUTE, "dispatcher": DISPATCHERS, "ep_overlap": EP_OVERLAPS,
    "loss_kernel": LOSS_KERNELS, "attention_kernel": ATTENTION_KERNELS, "cp_comm": CP_COMMS,
    "fp8_recipe": FP8_RECIPES, "dualpipe_sends": DUALPIPE_SENDS,
}


def load(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A validated scenario from a preset name or YAML path plus ``section.field=value`` overrides."""
    return load_scenario(name_or_path, tuple(overrides))


def load_for_search(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """:func:`load` for a plan search, which replaces the plan's searched fields (:data:`SEARCHED_PLAN_KEYS`).

    Where those fields do not fit the rest (the preset's PP16 x EP64 on 16 GPUs, or DualPipe short of
    micro-batches at 16,384), the scenario is still returned, its parts each checked alone: the search asks
    which plan fits, so the plan it starts from need not. Any other error is raised as :func:`load` raises it."""
    try:
        return load(name_or_path, overrides)
    except ConfigError as e:
        if e.field != "plan" and e.field not in {f"plan.{k}" for k in SEARCHED_PLAN_KEYS}:
            raise
    return load_scenario(name_or_path, tuple(overrides), check_plan=False)


def predict(sc: Scenario, engine: str = "analytic", profile: Profile | str | None = None, **kw: Any) -> Prediction:
    """Predict one training step of ``sc``."""
    if engine == "analytic":
        return predict_analytic(sc, profile=profile, **kw)
    if engine == "des":
        from .des.engine import predict_des

        return predict_des(sc, profile=profile, **kw)
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
        "plan": {**to_dict(sc.plan), "dp": sc.dp},  # the resolved DP size (0 in a scenario means "derived")
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
        "warnings": sorted(set(pred.warnings)),  # one order run after run
    }
    bulky = ("timeline", "dp_timeline", "p2p_flows")  # in pred.extra and the trace, not in the report
    out.update({k: v for k, v in pred.extra.items() if k not in out and k not in bulky and _jsonable(v)})
    return out


def _overlap(pred: Prediction) -> float:
    total = pred.hidden_comm_s + pred.exposed_comm_s
    return pred.hidden_comm_s / total if total > 0 else 1.0


def _jsonable(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, list, dict, type(None)))


# --------------------------------------------------------------------------- dashboard entry points
# Appended for the dashboard, which calls only this module. Each returns plain data (dicts, lists,
# numbers, strings) so that callers can cache and serialize it.

SEARCHED_PLAN_KEYS = ("tp", "pp", "dp", "cp", "ep", "vpp", "schedule", "micro_batch", "recompute", "zero",
                      "comm_sms", "sp")


def search_space() -> dict[str, tuple | None]:
    """The default values of each dimension ``search_plans`` enumerates (``ep=None``: every valid divisor;
    ``comm_sms=()``: the scenario's own, not varied; ``cp``: filtered by the sequence length,
    :func:`simulator.search.default_cp`, unless a space names it)."""
    from .search import DEFAULT_SPACE

    return dict(DEFAULT_SPACE)


def plan_overrides(sc: Scenario, plan: dict) -> list[str]:
    """The ``plan.field=value`` overrides that turn ``sc``'s plan into ``plan`` (searched keys only).

    ``dp`` is left out when ``sc`` derives it (``plan.dp=0``): TP, PP and CP fix it then.
    """
    out = []
    for k in SEARCHED_PLAN_KEYS:
        if k not in plan:
            continue
        cur, new = getattr(sc.plan, k), plan[k]
        if k == "dp" and cur == 0:
            continue
        if cur != new:
            out.append(f"plan.{k}={str(new).lower() if isinstance(new, bool) else new}")
    return out


def search_plans(sc: Scenario, objective: str = "gpu_hours", top: int = 10, space: dict | None = None,
                 des_top: int = 0, progress: Any = None, profile: Profile | str | None = None,
                 workers: int = 1) -> dict:
    """Rank the plans of ``sc`` on its own GPU count (best first), the analytic engine timing each.

    ``space`` narrows the enumerated dimensions (see :func:`search_space`); ``des_top`` re-simulates
    the best ``des_top`` plans with the discrete-event engine; ``progress(fraction, text)`` is called
    as chunks of plans finish. Returns ``{"plans": [...], "all": [...], "evaluated", "valid",
    "enumerated", "pruned", "failed", "errors", "seconds", "objective", "des_disagree"}`` (``failed``: plans
    the analytic engine refused, ``errors`` their first distinct messages); each plan carries its ``overrides``
    relative to ``sc`` (``load(name, overrides_of_sc + overrides)`` reproduces it), every metric of the
    ranking, ``des`` (None, :data:`simulator.search.DES_KEYS`, or ``{"error": ...}``) and ``des_rank`` (its
    rank among the re-simulated plans by the DES's figure of the objective); ``des_disagree`` names the DES's
    best where it is another plan than the analytic one (:func:`simulator.search.rank_by_des`). ``all``
    holds every plan that fits, compactly, for plotting.
    """
    import time

    from .search import METRICS, PLAN_KEYS, des_metrics, plan_of, rank_by_des, search

    def tell(frac: float, text: str) -> None:
        if progress:
            progress(min(1.0, max(0.0, frac)), text)

    t0 = time.perf_counter()
    k_des = max(0, min(int(des_top), int(top)))
    share = 0.85 if k_des else 1.0

    def tick(done: int, total: int) -> None:
        tell(share * done / max(1, total), f"timed {done:,} of {total:,} plans (analytic)")

    res = search(sc, sc.cluster.num_gpus, objective=objective, top=top, progress=tick, space=space,
                 profile=profile, workers=workers, des=False, reports=False)
    best = res.rows[:top]
    plans = []
    for i, r in enumerate(best):
        cand = plan_of(sc, r)
        pc = cand.plan
        plan = {k: getattr(pc, k) for k in SEARCHED_PLAN_KEYS}
        plan["dp"] = cand.dp
        row = {"rank": r["rank"], "plan": plan, "overrides": plan_overrides(sc, plan),
               **{k: r[k] for k in (*METRICS, "fits_in_memory")}, "hbm_gib": sc.cluster.gpu.hbm_gib,
               "microbatches": cand.microbatches, "des": None}
        if i < k_des:
            tell(share + (1 - share) * i / k_des, f"discrete-event simulation of plan #{i + 1} of {k_des}")
            row["des"] = des_metrics(cand, profile)  # the CLI's helper: the same figures
        plans.append(row)
    disagree = rank_by_des(plans, res.objective)
    tell(1.0, f"done: {res.evaluated:,} plans timed, {res.valid:,} fit in memory")
    compact = [{**{k: r[k] for k in PLAN_KEYS}, **{k: r[k] for k in METRICS}} for r in res.rows]
    return {"plans": plans, "all": compact, "evaluated": res.evaluated, "valid": res.valid,
            "enumerated": res.enumerated, "pruned": res.pruned, "objective": res.objective,
            "failed": res.failed, "errors": list(res.errors), "seconds": time.perf_counter() - t0,
            "des_disagree": disagree}


def sensitivity(sc: Scenario, profile: Profile | str | None = None) -> dict:
    """Tornado data: ``{"base", "rows", "notes"}``; each row moves one input down and up.

    Rows are ``{input, low_label, high_label, low, base, high, low_fits, high_fits, note}`` in GPU-hours
    per trillion tokens (analytic engine, steady state), largest swing first; ``low``/``high`` are None
    where the move is invalid for this scenario, an input neither of whose moves is valid has no row,
    and ``notes`` say why; ``low_fits``/``high_fits`` say whether the moved plan fits in memory, and
    ``note`` what a row's numbers leave out.
    """
    from .sensitivity import METRIC
    from .sensitivity import sensitivity as _tornado

    notes: list[str] = []
    rows = _tornado(sc, profile=profile, notes=notes)
    base = rows[0]["base"] if rows else getattr(predict(sc, profile=profile), METRIC)
    return {"base": base, "rows": rows, "notes": notes}


def prediction_bands(sc: Scenario, profile: Profile | str | None = None, engine: str = "analytic",
                     headline: float | None = None, run: dict | None = None) -> dict:
    """The prediction's two error bands on GPU-hours per trillion tokens, side by side, around ``engine``'s
    prediction (``headline`` and ``run``: that prediction and its whole run, when the caller has them).

    ``{"base", "validation": {"low", "high", ...}, "calibration": {"low", "high", ...} or None}``:
    the spread of published runs around our predictions of them, and the spread of the calibration
    profile's own measurements (see :mod:`simulator.uncertainty`). Neither is a confidence interval.
    """
    from .uncertainty import prediction_bands as _bands

    return _bands(sc, profile=profile, engine=engine, headline=headline, run=run)


def chrome_trace(pred: Prediction) -> dict:
    """The Chrome trace (Perfetto) JSON object of a DES prediction: ranks, streams, P2P arrows, memory."""
    from .des.trace_cli import build_trace

    return build_trace(pred).to_dict()


def pipeline_schedule(schedule: str, pp: int, microbatches: int, vpp: int, f: float, b: float, w: float,
                      fb: float) -> dict:
    """The analytic pipeline schedule as tasks: ``{"tasks": [{rank, kind, name, start, end}], "makespan"}``.

    Times are in the units of ``f, b, w, fb`` (the chunk times of one micro-batch on one stage).
    Raises ValueError (one line) when the schedule rejects ``pp``, ``microbatches`` or ``vpp``.
    """
    from .schedules import TaskTimes, simulate, validate_schedule_args

    validate_schedule_args(schedule, pp, microbatches, vpp)
    tl = simulate(schedule, pp, microbatches, TaskTimes(f, b, min(w, b), fb), vpp)
    tasks = [{"rank": r, "kind": t.kind, "name": t.label(), "start": s, "end": e}
             for r, ts in enumerate(tl.ranks) for t, s, e in ts]
    return {"tasks": tasks, "makespan": tl.makespan}


def schedule_accepts(schedule: str, pp: int, microbatches: int, vpp: int = 1) -> bool:
    """Whether ``schedule`` can run ``microbatches`` micro-batches on ``pp`` stages (``vpp`` virtual)."""
    from .schedules import validate_schedule_args

    try:
        validate_schedule_args(schedule, pp, microbatches, vpp)
    except ValueError:
        return False
    return True


def headline_warnings(sc: Scenario) -> list[str]:
    """The warnings of a prediction of ``sc`` that change what its headline figures mean, word for word as
    they appear in ``report(...)["warnings"]``: a mechanism priced cheaper than any measurement supports
    (TP overlap without sequence parallelism hidden for free; DeepEP's all-to-all kept at the rate measured
    on 20 SMs while it is given fewer), so the step can only look faster than the plan would run."""
    from .analytic import headline_warnings as _headline

    return _headline(sc)


def gpu_counts(sc: Scenario, near: int | None = None, each_side: int = 3) -> dict:
    """GPU counts on which ``sc``'s plan and global batch stay valid, around ``near`` (default: its own count).

    ``{"step", "counts"}``: ``step`` is the granularity of the plan's layout, the least multiple of whole
    nodes and of TP x PP x CP x (EP / gcd(EP, TP x CP)) GPUs (every pipeline stage's TP x CP x DP GPUs must
    hold whole EP groups); ``counts`` are up to ``each_side`` valid multiples of ``step`` below ``near`` and
    as many from ``near`` up, ascending. A multiple of ``step`` can still be refused (DP must divide the
    global batch; a schedule needs enough micro-batches); ``counts`` holds only the ones ``Scenario.validate``
    accepts. With a fixed ``plan.dp`` the one count is TP x PP x DP x CP.
    """
    from dataclasses import replace
    from math import gcd

    from .config import GPUS

    p, c, m = sc.plan, sc.cluster, sc.model
    near = c.num_gpus if near is None else int(near)
    unit = p.tp * p.pp * p.cp
    if p.dp:
        return {"step": unit * p.dp, "counts": [unit * p.dp]}
    per = p.ep // gcd(p.ep, p.tp * p.cp) if m.is_moe else 1
    step = unit * per
    step = step * c.gpus_per_node // gcd(step, c.gpus_per_node)
    top = min(GPUS[1], sc.training.global_batch * unit)  # DP at most the global batch
    below: list[int] = []
    above: list[int] = []
    for n in range(step, top + 1, step):
        if n >= near and len(above) >= each_side:
            break
        try:
            replace(sc, cluster=replace(c, num_gpus=n)).validate()
        except GpuhoursError:
            continue
        (above if n >= near else below).append(n)
    return {"step": step, "counts": below[-each_side:] + above}


def validation_rows(engine: str = "analytic") -> dict:
    """Predicted against published runs: ``{"rows": [...], "mape_pct", "source"}`` (``gpuhours validate``).

    Each row names its run by id and ``description``, what the run was in words from the CSV's own
    columns (model, GPUs, source in a few words: ``dense · 48× H100 · Megatron-LM 2024``);
    ``step_parts_s`` maps each modelled run to where its predicted step goes (``STEP_PARTS``)."""
    from .validate import DEFAULT_CSV, describe_run, read_csv, validate_rows

    csv_rows = read_csv(DEFAULT_CSV)
    described = {row["run_id"]: describe_run(row) for row in csv_rows}
    res, mape = validate_rows(csv_rows, engine=engine)
    rows = [{"run": r.run_id, "description": described.get(r.run_id, ""), "metric": r.metric,
             "predicted": r.predicted, "measured": r.measured, "error %": r.error_pct, "note": r.reason}
            for r in res]
    # Where each run's predicted step goes (STEP_PARTS), for the runs that were modelled.
    parts = {r.run_id: r.step_parts_s for r in res if r.step_parts_s}
    return {"rows": rows, "mape_pct": mape, "source": str(DEFAULT_CSV), "step_parts_s": parts}


def parse_profile(data: Any, name: str = "profile") -> Profile:
    """A :class:`Profile` from parsed JSON; raises ValueError (one line) when it breaks the schema."""
    from .profile import validate_profile

    return Profile(validate_profile(data, where=name), path=name)


def device_peaks(prof: Profile) -> dict | None:
    """The datasheet dense peaks of the GPU ``prof`` was measured on, ``{"name", "bf16", "fp16", "fp8"}``
    (TFLOP/s), from the cluster preset of the same GPU model (an H800 profile: the h800 preset's); None for
    a CPU profile or a GPU no preset describes. A profile's rows read against another GPU's peaks would
    show the wrong share of peak (A100 rows against an H800's 989 TFLOP/s)."""
    from .scenario import load_cluster
    from .timer import _gpu_family

    dev = prof.device or {}
    family = _gpu_family(dev.get("name") or "") if dev.get("kind") != "cpu" else None
    if family is None:
        return None
    for name in list_clusters():
        gpu = load_cluster(name).gpu
        if _gpu_family(gpu.name) == family:
            return {"name": gpu.name, "bf16": gpu.bf16_tflops, "fp16": gpu.fp16_tflops or gpu.bf16_tflops,
                    "fp8": gpu.fp8_tflops}
    return None


from .errors import GpuhoursError  # noqa: E402,F401  (re-exported for callers' except clauses)
