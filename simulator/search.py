"""Plan search: ``gpuhours search NAME --gpus N``.

Enumerates parallelism plans (TP, PP, EP, CP, schedule, virtual stages,
micro-batch, recompute, ZeRO; communication SMs only where ``space`` asks:
see :data:`DEFAULT_SPACE`) for a model on ``N`` GPUs, drops the ones
:meth:`Scenario.validate` rejects and the ones whose parameter and optimizer
state alone (a lower bound, before any timing) exceed HBM, times the rest
with the analytic engine, keeps those that fit in memory, ranks them by the
objective and re-simulates the best ``top`` with the DES when
:mod:`simulator.des.engine` is available. ``top`` is at most :data:`MAX_TOP`:
each of those plans gets a full report and a DES run.

Candidates are cut into chunks; each chunk is evaluated by one call of
:func:`evaluate_chunk` that builds one :class:`~simulator.analytic.Evaluator`
(so unit timings are cached across the chunk's plans). Chunks run in a local
process pool, or on a Dask cluster with ``--scheduler tcp://host:port``
(the same function, via ``distributed.Client.map``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from .atomic import check_writable, write_atomic
from .config import ModelConfig, PlanConfig, Scenario
from .errors import ConfigError
from .memory import GIB, state_bytes
from .workload import expert_params, param_counts

OBJECTIVES = {
    "gpu_hours": "gpu_hours_per_trillion_tokens",
    "usd": "usd_per_trillion_tokens",
    "step_time": "step_time_s",
}
SCHEDULE_VARIANTS = (("1f1b", 1), ("interleaved", 2), ("interleaved", 4), ("zb1p", 1), ("dualpipe", 1),
                     ("dualpipev", 1))
# Context parallelism splits each sequence into 2*cp chunks, two per rank (Megatron-Core's load-balanced
# ring attention), and pays a KV exchange per ring step that only hides behind attention on a chunk long
# enough. NVIDIA's Megatron-Core parallelism guide gives CP for "long sequences (8K+ tokens)", and
# Llama 3's 128K-context stage (arXiv 2407.21783 sec 3.3.2, Table 4) ran CP16: 8K tokens per rank.
# The default space therefore offers CP in powers of two up to the degree that leaves each rank 8K tokens,
# and never less than CP2 (the space before, kept so that short sequences lose no plan they had):
# 4K: CP 1-2, 32K: 1-4, 128K: 1-16.
CP_MIN_TOKENS_PER_RANK = 8192
DEFAULT_SPACE: dict[str, tuple] = {
    "tp": (1, 2, 4, 8),
    "pp": (1, 2, 4, 8, 16, 32),  # filtered: must divide N and fit the layers
    # filtered, in the default space only: at most max(2, seq_len / CP_MIN_TOKENS_PER_RANK) (above);
    # a CP given in ``space`` is enumerated as given
    "cp": (1, 2, 4, 8, 16, 32),
    "schedule": SCHEDULE_VARIANTS,  # (schedule, vpp)
    "micro_batch": (1, 2, 4),
    "recompute": ("none", "selective", "full"),
    "zero": (1, 2, 3),
    # Empty: the scenario's own plan.comm_sms, not varied. The cost model's all-to-all time does not
    # depend on the SMs its kernels hold (comm.py prices dispatch and combine at the profile's rates,
    # DeepEP's README figures, whose kernels run with 20 SMs unless told otherwise: Buffer.num_sms in
    # deepseek-ai/DeepEP deep_ep/buffer.py), while compute keeps the SMs they leave. Fewer SMs could then
    # only look faster: a search over (12, 20, 24) always took 12, each overlapped plan ~5 % cheaper than
    # any measured rate supports (V3's best on 2048 GPUs: 158,526 GPU-h/1T at 12 SMs, 167,152 at 20).
    # Until a profile carries all-to-all rates measured at other SM counts, SMs are varied only when
    # ``space`` names them, and then only for plans that overlap the all-to-all (Scenario.ep_overlapped;
    # elsewhere the kernels hold no SMs beside compute and the plans would only repeat).
    "comm_sms": (),
    "ep": None,  # None: every divisor of n_routed_experts that divides tp*cp*dp
}
PLAN_KEYS = ("tp", "pp", "dp", "cp", "ep", "vpp", "schedule", "micro_batch", "recompute", "zero", "comm_sms")
# Most plans --top may ask for. Each gets a full report and a DES run, about 0.5 s apiece for the best
# DeepSeek-V3 plans on 2048 GPUs (the analytic ranking of all ~36,000 takes ~26 s on two cores), so 100
# adds under a minute, where --top 100000 meant a DES run of every one of the ~29,000 plans that fit:
# about four hours. Past a screenful a table is not read; --out writes every plan that fits, ranked.
MAX_TOP = 100
# Most local worker processes: the pool forks them all at once, and --workers 100000 exhausted a 2-core box
# (a search is CPU-bound: more processes than cores only share them).
WORKERS_MAX = 256
METRICS = ("step_time_s", "gpu_hours_per_trillion_tokens", "usd_per_trillion_tokens", "tokens_per_s_per_gpu",
           "mfu", "peak_memory_gib", "bubble_fraction", "exposed_comm_fraction")


@dataclass
class SearchResult:
    """Ranked plans (best first) and what the search cost."""

    plans: list[dict]  # best first: {"plan", "rank", ...predict report keys..., "des"} (none when reports=False)
    evaluated: int  # candidates given to the analytic engine (``failed`` ones included)
    valid: int  # timed candidates that fit in memory
    enumerated: int  # candidates generated (before validation and pruning)
    pruned: int  # rejected by validate() or by the state-memory bound
    seconds: float
    objective: str
    des_available: bool
    rows: list[dict] = field(default_factory=list)  # every valid plan, ranked (compact)
    failed: int = 0  # timed candidates the analytic engine refused (each row keeps its "error")
    errors: tuple[str, ...] = ()  # their distinct messages, the first few
    des_disagree: dict | None = None  # where the DES orders the re-simulated plans otherwise (rank_by_des)

    @property
    def plans_per_second(self) -> float:
        return self.evaluated / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "plans": self.plans, "evaluated": self.evaluated, "valid": self.valid,
            "enumerated": self.enumerated, "pruned": self.pruned, "objective": self.objective,
            "seconds": self.seconds, "plans_per_second": self.plans_per_second,
            "des": "simulator.des.engine" if self.des_available else None,
            "failed": self.failed, "errors": list(self.errors), "des_disagree": self.des_disagree,
        }


# --------------------------------------------------------------------------- enumeration


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _space(space: dict | None) -> dict:
    """The default space with ``space``'s dimensions in its place, each without repeated values."""
    out = dict(DEFAULT_SPACE)
    for k, v in (space or {}).items():
        if k not in out:
            raise ConfigError(f"space.{k}", "unknown search dimension", ", ".join(out))
        # A value given twice is one choice; a list value (a schedule read from JSON) counts as its tuple.
        out[k] = tuple(dict.fromkeys(tuple(x) if isinstance(x, list) else x for x in v)) if v is not None else None
    return out


def default_cp(seq_len: int) -> tuple[int, ...]:
    """The context-parallel degrees the default space offers for sequences of ``seq_len`` tokens.

    Powers of two from 1 while each rank keeps at least :data:`CP_MIN_TOKENS_PER_RANK` tokens (the
    reasons are at that constant), and at least 1 and 2 whatever the length."""
    most = max(2, seq_len // CP_MIN_TOKENS_PER_RANK)
    return tuple(c for c in DEFAULT_SPACE["cp"] if c <= most)


@lru_cache(maxsize=16)  # a search asks once per candidate, always of the same model
def _dense_and_expert_params(m: ModelConfig) -> tuple[float, float]:
    """The model's parameters outside its routed experts and inside them (MTP modules included)."""
    pc = param_counts(m)
    pe_all = (m.n_moe_layers + (m.mtp_depth if m.is_moe else 0)) * m.n_routed_experts * expert_params(m) if m.is_moe else 0.0
    return pc.total + pc.mtp - pe_all, pe_all


def schedule_choice(plan: PlanConfig) -> tuple[str, int] | None:
    """A plan's schedule as a search's (schedule, vpp) choice; None for "none", which is PP1's 1F1B."""
    return None if plan.schedule == "none" else (plan.schedule, plan.vpp)


def state_lower_bound_gib(sc: Scenario) -> float:
    """Weights + gradients + optimizer state per GPU if layers split perfectly evenly (a lower bound)."""
    p = sc.plan
    dense, pe_all = _dense_and_expert_params(sc.model)
    pd = dense / (p.tp * p.pp)
    pe = pe_all / (p.ep * p.pp)
    dp = sc.dp
    dp_expert = sc.dp_expert
    w, g, o = state_bytes(pd, pe, p.zero, dp * p.cp, dp_expert, p.grad_dtype, p.moment_dtype)
    return (w + g + o) / GIB


def candidates(sc: Scenario, gpus: int, space: dict | None = None) -> tuple[list[PlanConfig], int, int]:
    """Valid, not-obviously-too-big plans for ``sc`` on ``gpus`` GPUs: (plans, enumerated, pruned).

    No two plans are the same: every dimension's values are distinct, and the communication SMs are
    varied only for a candidate that overlaps the all-to-all (elsewhere they hold nothing and would
    only repeat the plan)."""
    sp = _space(space)
    given = space or {}
    if "cp" not in given:
        sp["cp"] = default_cp(sc.training.seq_len)
    # A default dimension also holds the scenario's own value, so the search can find the plan it starts from
    # (Llama 3 405B's interleaved x8 is not among the default schedules, and its best plan came out 1.5 %
    # dearer than its own). A dimension the caller names is searched as named.
    own = {"tp": sc.plan.tp, "pp": sc.plan.pp, "cp": sc.plan.cp, "micro_batch": sc.plan.micro_batch,
           "recompute": sc.plan.recompute, "zero": sc.plan.zero, "schedule": schedule_choice(sc.plan)}
    for k, v in own.items():
        if k not in given and v is not None and v not in sp[k]:
            sp[k] = (*sp[k], v)
    m = sc.model
    cluster = dataclasses.replace(sc.cluster, num_gpus=gpus)
    base = dataclasses.replace(sc, cluster=cluster)
    base_plan = dataclasses.replace(sc.plan, dp=0)
    hbm = cluster.gpu.hbm_gib
    # The candidates differ from ``base`` in their plan alone: check the other parts once, and each
    # candidate's plan against them. (Parts that fail leave every candidate to fail its whole check.)
    try:
        base.validate_parts()
        check = Scenario.validate_plan
    except ConfigError:
        check = Scenario.validate
    out: list[PlanConfig] = []
    enumerated = pruned = 0
    tps = [t for t in sp["tp"] if t <= cluster.gpus_per_node and m.heads % t == 0 and gpus % t == 0]
    for tp in tps:
        for pp in sp["pp"]:
            if pp > m.layers or gpus % (tp * pp):
                continue
            for cp in sp["cp"]:
                if gpus % (tp * pp * cp) or (cp > 1 and sc.training.seq_len % (2 * cp)):
                    continue
                dp = gpus // (tp * pp * cp)
                if m.is_moe:
                    eps = sp["ep"] or [e for e in _divisors(m.n_routed_experts) if (tp * cp * dp) % e == 0]
                else:
                    eps = (1,)
                for ep in eps:
                    for sched, vpp in sp["schedule"]:
                        if pp == 1 and sched != "1f1b":
                            continue
                        # A space that names SM counts varies them where the all-to-all overlaps, by the
                        # scenario's own rule (plan.ep_overlap: auto overlaps under DualPipe(V), on also
                        # Megatron's interleaved pairs, off never); by default the plan keeps its own.
                        sms_choices = (sc.plan.comm_sms,)
                        if sp["comm_sms"]:
                            shape = dataclasses.replace(base_plan, pp=pp, ep=ep, schedule=sched)
                            if dataclasses.replace(base, plan=shape).ep_overlapped:
                                sms_choices = sp["comm_sms"]
                        for mb in sp["micro_batch"]:
                            for rc in sp["recompute"]:
                                for zero in sp["zero"]:
                                    for sms in sms_choices:
                                        enumerated += 1
                                        plan = dataclasses.replace(
                                            base_plan, tp=tp, sp=tp > 1, pp=pp, cp=cp, ep=ep, schedule=sched, vpp=vpp,
                                            micro_batch=mb, recompute=rc, zero=zero, comm_sms=sms)
                                        cand = dataclasses.replace(base, plan=plan)
                                        try:
                                            check(cand)
                                        except ConfigError:
                                            pruned += 1
                                            continue
                                        if state_lower_bound_gib(cand) > hbm:
                                            pruned += 1
                                            continue
                                        out.append(plan)
    return out, enumerated, pruned


# --------------------------------------------------------------------------- evaluation (runs in workers)


def _plan_row(sc: Scenario) -> dict:
    p = sc.plan
    return {"tp": p.tp, "pp": p.pp, "dp": sc.dp, "cp": p.cp, "ep": p.ep, "vpp": p.vpp, "schedule": p.schedule,
            "micro_batch": p.micro_batch, "recompute": p.recompute, "zero": p.zero, "comm_sms": p.comm_sms}


def evaluate_chunk(sc: Scenario, plans: list[PlanConfig], profile: Any = None) -> list[dict]:
    """Time each plan of one chunk with the analytic engine, reusing one Evaluator; compact rows back.

    Python's cyclic garbage collector is paused for the chunk. Evaluating plans makes no reference cycles (a
    test collects after a chunk and finds nothing), so what it frees, reference counting frees at once; but
    each of its passes walks the objects that survived earlier ones, here the Evaluator's cached layer and
    schedule timings, and those passes took a fifth of a DeepSeek-V3 worker's time. Pausing only postpones:
    the collector runs again once the chunk is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _evaluate_chunk(sc, plans, profile)
    finally:
        if was_enabled:
            gc.enable()


# One Evaluator per worker process, kept from chunk to chunk: neighbouring chunks share TP, PP, CP and
# micro-batch sizes, so most of a chunk's layer shapes were timed by the chunk before (a search of 35,820
# DeepSeek-V3 plans cuts them into 70 chunks). Keyed by the cluster and the profile object it was made with.
_EVALUATORS: dict[tuple, tuple] = {}


def _evaluator(sc: Scenario, profile: Any):
    from .analytic import Evaluator, resolve_profile

    prof = resolve_profile(sc, profile)
    key = (sc.cluster, id(prof))  # the entry holds the profile, so its id stays its own
    hit = _EVALUATORS.get(key)
    if hit is None:
        if len(_EVALUATORS) >= 4:  # a long-lived worker (dask) serving other searches: start afresh
            _EVALUATORS.clear()
        hit = _EVALUATORS[key] = (prof, Evaluator(sc, prof))
    hit[1].forget_plans()
    return hit[1]


def _evaluate_chunk(sc: Scenario, plans: list[PlanConfig], profile: Any = None) -> list[dict]:
    from .analytic import predict_analytic

    ev = _evaluator(sc, profile)
    price = sc.cost.usd_per_gpu_hour
    rows = []
    for plan in plans:
        cand = dataclasses.replace(sc, plan=plan)
        try:
            pred = predict_analytic(cand, evaluator=ev)
        except (ConfigError, ValueError, ZeroDivisionError) as e:  # counted and shown, never dropped unseen
            rows.append({**_plan_row(cand), "error": str(e)})
            continue
        st = pred.step_time_s
        gh = pred.gpu_hours_per_trillion_tokens
        rows.append({
            **_plan_row(cand), "step_time_s": st, "gpu_hours_per_trillion_tokens": gh,
            "usd_per_trillion_tokens": gh * price, "tokens_per_s_per_gpu": pred.tokens_per_s_per_gpu,
            "mfu": pred.mfu, "peak_memory_gib": pred.peak_memory_gib, "fits_in_memory": pred.fits_in_memory,
            "bubble_fraction": pred.bubble_s / st, "exposed_comm_fraction": pred.exposed_comm_s / st,
        })
    return rows


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def _run_local(sc, chunks, profile, workers, tick) -> list[dict]:
    rows: list[dict] = []
    if workers <= 1 or len(chunks) <= 1:
        for ch in chunks:
            rows.extend(evaluate_chunk(sc, ch, profile))
            tick(len(ch))
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = {pool.submit(evaluate_chunk, sc, ch, profile): len(ch) for ch in chunks}
        for f in as_completed(futs):
            rows.extend(f.result())
            tick(futs[f])
    return rows


def _run_dask(sc, chunks, profile, address, tick) -> list[dict]:
    try:
        from distributed import Client, as_completed
    except ModuleNotFoundError:
        raise ConfigError("--scheduler", "the 'distributed' package is not installed", "pip install -e '.[cluster]'") from None
    try:
        client = Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as e:  # ValueError: not an address (no port, unknown protocol)
        raise ConfigError("--scheduler", f"cannot reach Dask scheduler {address!r} ({e})", "tcp://host:port of a running scheduler") from None
    rows: list[dict] = []
    try:
        sc_f = client.scatter(sc, broadcast=True)
        futs = client.map(evaluate_chunk, [sc_f] * len(chunks), chunks, [profile] * len(chunks), pure=False)
        sizes = {f.key: len(ch) for f, ch in zip(futs, chunks)}
        for f in as_completed(futs):
            rows.extend(f.result())
            tick(sizes[f.key])
    finally:
        client.close()
    return rows


def des_available() -> bool:
    try:
        import simulator.des.engine  # noqa: F401
    except ImportError:
        return False
    return True


def search(sc: Scenario, gpus: int, objective: str = "gpu_hours", top: int = 10, scheduler: str | None = None,
           progress: Callable[[int, int], None] | None = None, space: dict | None = None,
           profile: Any = None, workers: int | None = None, des: bool = True, reports: bool = True) -> SearchResult:
    """Rank the plans of ``sc`` on ``gpus`` GPUs by ``objective`` (best first).

    ``reports``: give the best ``top`` plans whole reports (``plans``; each re-simulated with the DES
    when ``des``); ``api.search_plans``, which builds its own rows from ``rows``, asks for none."""
    if objective not in OBJECTIVES:
        raise ConfigError("--objective", f"unknown objective {objective!r}", ", ".join(OBJECTIVES))
    if not isinstance(gpus, int) or gpus < 1:
        raise ConfigError("--gpus", f"must be a positive integer, got {gpus!r}")
    if gpus > sc.cluster.gpus_per_node and gpus % sc.cluster.gpus_per_node:
        raise ConfigError("--gpus", f"{gpus} is not a whole number of {sc.cluster.gpus_per_node}-GPU nodes",
                          f"a multiple of {sc.cluster.gpus_per_node}")
    if not 1 <= top <= MAX_TOP:
        raise ConfigError("--top", f"{top} is out of range (each plan shown is re-simulated with the DES)",
                          f"1 .. {MAX_TOP}; --out writes every plan, ranked")
    t0 = time.perf_counter()
    base = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, num_gpus=gpus))
    plans, enumerated, pruned = candidates(sc, gpus, space)
    workers = min(workers or os.cpu_count() or 1, WORKERS_MAX)
    # Chunks group neighbouring plans (same TP/PP/CP/EP) so one Evaluator's cache serves many.
    size = max(16, min(512, -(-len(plans) // (4 * max(1, workers)))))
    chunks = _chunks(plans, size)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(plans))

    if scheduler:
        rows = _run_dask(base, chunks, profile, scheduler, tick)
    else:
        rows = _run_local(base, chunks, profile, workers, tick)
    key = OBJECTIVES[objective]
    ok = [r for r in rows if "error" not in r and r["fits_in_memory"]]
    # Plans equal on the objective (to 6 significant digits: e.g. ZeRO stages that only move where the
    # optimizer state lives) rank by step time, then by the memory they leave free.
    ok.sort(key=lambda r: (float(f"{r[key]:.6g}"), float(f"{r['step_time_s']:.6g}"), r["peak_memory_gib"],
                           tuple(str(r[k]) for k in PLAN_KEYS)))
    for i, r in enumerate(ok):
        r["rank"] = i + 1
    bad = [r["error"] for r in rows if "error" in r]
    has_des = des_available()
    best = [_full(base, r, profile, has_des and des) for r in ok[:top]] if reports else []
    disagree = rank_by_des(best, objective)
    seconds = time.perf_counter() - t0
    return SearchResult(best, len(rows), len(ok), enumerated, pruned, seconds, objective, has_des, ok,
                        failed=len(bad), errors=tuple(dict.fromkeys(bad))[:5], des_disagree=disagree)


def plan_of(sc: Scenario, row: dict) -> Scenario:
    """The scenario of one search row."""
    # Sequence parallelism is not a search axis: the enumeration pairs it with TP (Megatron's recipe).
    plan = dataclasses.replace(sc.plan, dp=0, sp=row["tp"] > 1, **{k: row[k] for k in PLAN_KEYS if k != "dp"})
    return dataclasses.replace(sc, plan=plan).validate()


# What of a DES run a search row keeps: the three objectives and what explains them.
DES_KEYS = ("step_time_s", "gpu_hours_per_trillion_tokens", "usd_per_trillion_tokens", "mfu", "bubble_fraction",
            "exposed_comm_fraction", "peak_memory_gib")


def des_metrics(cand: Scenario, profile: Any) -> dict:
    """One plan re-simulated with the DES: :data:`DES_KEYS`, or ``{"error": first line}`` where the DES
    rejects it (it is optional: the analytic row stays)."""
    from .api import predict, report

    try:
        d = report(predict(cand, engine="des", profile=profile))
    except Exception as e:  # noqa: BLE001
        return {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    return {k: d[k] for k in DES_KEYS if k in d}


def rank_by_des(plans: list[dict], objective: str) -> dict | None:
    """Rank the re-simulated plans among themselves by the DES's figure of the objective (``des_rank``:
    1 is its best; None where the DES did not run or rejected the plan), and say where the two engines
    disagree on the best: ``{"analytic_best", "des_best", "gain_pct"}`` with the plans' analytic ranks and
    how much the DES's best saves on the analytic best by the DES's own figures; None where they agree or
    fewer than two plans were re-simulated.

    The analytic engine ranks every plan (thousands a second); the DES sees per-flow link sharing and each
    chunk's own times, so among plans within a few per cent of each other it may order them differently,
    and then its order is the one to act on."""
    key = OBJECTIVES[objective]
    ran = [r for r in plans if r.get("des") and key in r["des"]]
    for r in plans:
        r["des_rank"] = None
    ran.sort(key=lambda r: (float(f"{r['des'][key]:.6g}"), r["rank"]))
    for i, r in enumerate(ran):
        r["des_rank"] = i + 1
    if len(ran) < 2 or ran[0] is plans[0]:
        return None
    first = plans[0]
    if not (first.get("des") and key in first["des"]):
        return None
    return {"analytic_best": first["rank"], "des_best": ran[0]["rank"],
            "gain_pct": 100 * (1 - ran[0]["des"][key] / first["des"][key])}


def _full(base: Scenario, row: dict, profile: Any, run_des: bool) -> dict:
    from .api import predict, report

    cand = plan_of(base, row)
    rep = report(predict(cand, profile=profile))
    rep.pop("stages", None)
    out = {"plan": rep["plan"], "rank": row["rank"], **{k: v for k, v in rep.items() if k != "plan"}}  # dp resolved
    out["des"] = des_metrics(cand, profile) if run_des else None
    return out


# --------------------------------------------------------------------------- output


def plan_label(p: dict) -> str:
    s = f"TP{p['tp']} PP{p['pp']} EP{p['ep']} DP{p['dp']} CP{p['cp']} {p['schedule']}"
    if p["schedule"] == "interleaved":
        s += f"x{p['vpp']}"
    return s + f" mb{p['micro_batch']} rc={p['recompute']} Z{p['zero']} sms{p['comm_sms']}"


def write_rows(rows: list[dict], path: str) -> None:
    """Write ranked rows atomically: CSV, or Parquet when pyarrow is installed."""
    cols = ["rank", *PLAN_KEYS, *METRICS, "fits_in_memory"]
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
        write_atomic(path, lambda f: pq.write_table(table, f), binary=True, field="--out")
        return

    def fill(f) -> None:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    write_atomic(path, fill, field="--out")


def _check_out(path: str | None) -> None:
    if path is None:
        return
    if not (path.endswith(".csv") or path.endswith(".parquet")):
        raise ConfigError("--out", f"{path!r} has an unknown extension", ".csv or .parquet")
    if path.endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("--out", "writing .parquet needs pyarrow, which is not installed", "a .csv path, or pip install pyarrow") from None
    check_writable(path, "--out")


class _Bar:
    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width, self.t0 = stream, width, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        n = int(self.width * frac)
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        self.stream.write(f"\r  [{'#' * n}{'.' * (self.width - n)}] {done}/{total} plans {rate:,.0f}/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_scenario_args, some_text

    p = subparsers.add_parser("search", help="rank parallelism plans for a model and GPU count")
    add_scenario_args(p)
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    p.add_argument("--objective", default="gpu_hours", help="gpu_hours (default), usd or step_time")
    p.add_argument("--top", type=int, default=10,
                   help=f"plans to show and re-simulate with the DES, 1 .. {MAX_TOP} (default 10); "
                        "--out writes every plan")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", type=some_text("a Dask scheduler address"),
                   help="Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--out", default=None, help="write every valid plan, ranked, to a .csv or .parquet file")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (there is none when stderr is not a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .api import load_for_search
    from .cli import check_finite

    if args.objective not in OBJECTIVES:
        raise ConfigError("--objective", f"unknown objective {args.objective!r}", ", ".join(OBJECTIVES))
    if args.gpus < 1:
        raise ConfigError("--gpus", f"must be a positive integer, got {args.gpus}")
    if args.workers is not None and not 1 <= args.workers <= WORKERS_MAX:
        raise ConfigError("--workers", f"{args.workers} is out of range (each is a process forked up front)",
                          f"1 .. {WORKERS_MAX}")
    _check_out(args.out)
    sc = load_for_search(args.scenario, args.overrides)  # the plan's searched fields need not fit: they are replaced
    # A bar redrawn with '\r' only makes sense on a terminal; piped or logged, it would be one endless line.
    bar = None if args.no_progress or not sys.stderr.isatty() else _Bar()
    res = search(sc, args.gpus, objective=args.objective, top=args.top, scheduler=args.scheduler,
                 progress=bar, profile=args.profile, workers=args.workers)
    if not res.plans and res.evaluated == 0:  # before any output: --json or not, bad input exits 2
        raise ConfigError("--gpus", f"none of the {res.enumerated:,} candidate plans for {args.gpus} GPUs could be "
                                    "timed: each is invalid (sizes must divide the GPUs, batch and experts) or its "
                                    "weights and optimizer state alone exceed HBM")
    doc = res.to_json()
    check_finite(doc)  # before writing --out or printing: an input so extreme that a metric is inf
    if args.out is not None:
        write_rows(res.rows, args.out)
    if args.json:
        print(json.dumps(doc))
        return 0
    key = OBJECTIVES[args.objective]
    print(f"gpuhours search: {sc.model.name} on {args.gpus} x {sc.cluster.gpu.name}, objective {args.objective}")
    print(f"  {res.enumerated} enumerated, {res.pruned} pruned (invalid or state > HBM), {res.evaluated - res.failed} timed, "
          f"{res.valid} fit in memory; {res.seconds:.1f} s, {res.plans_per_second:,.0f} plans/s")
    if not res.des_available:
        print("  DES: simulator.des.engine not available; analytic numbers only")
    if res.failed:
        print(f"  {res.failed} plans could not be timed, e.g.: {res.errors[0]}")
    print(f"  {'#':>3} {'plan':<62} {'GPU-h/1T':>10} {'step s':>8} {'MFU':>6} {'mem GiB':>8} {'DES GPU-h/1T':>12}"
          f" {'DES #':>5}")
    for r in res.plans:
        des = r["des"]
        dtxt = f"{des['gpu_hours_per_trillion_tokens']:,.0f}" if des and "gpu_hours_per_trillion_tokens" in des else "-"
        print(f"  {r['rank']:>3} {plan_label(r['plan']):<62} {r['gpu_hours_per_trillion_tokens']:>10,.0f} "
              f"{r['step_time_s']:>8.3f} {100 * r['mfu']:>5.1f}% {r['peak_memory_gib']:>8.1f} {dtxt:>12} "
              f"{r['des_rank'] or '-':>5}")
    if not res.plans:
        print("  no plan fits in memory")
    elif key != "gpu_hours_per_trillion_tokens":
        print(f"  ranked by {key} (DES #: by the DES's {key})")
    if res.des_disagree:
        d = res.des_disagree
        print(f"  the DES ranks #{d['des_best']} first: by its figures {d['gain_pct']:.1f} % under #{d['analytic_best']}, "
              f"the analytic engine's best")
    if args.out is not None:
        print(f"  wrote {len(res.rows)} plans to {args.out}")
    return 0
