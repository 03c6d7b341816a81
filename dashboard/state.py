"""Shared helpers of the dashboard: cached calls into ``simulator.api`` and the
plan controls (sidebar) that every page reads.

Everything here goes through the public API (``simulator.api``); cached
functions are pure functions of ``(scenario name, tuple of overrides)``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from simulator import api  # noqa: E402

# One colour per part of a step (api.STEP_PARTS' order): kernels in blues and greens, expert imbalance in
# purple, what compute loses beside communication and the communication left exposed in warm colours, the
# waits in greys and yellow.
STEP_COLOURS = ("#4C78A8", "#72B7B2", "#54A24B", "#9ECAE9", "#B279A2", "#F58518", "#E45756", "#BAB0AC", "#EECA3B",
                "#79706E")


def step_part_styles() -> list[tuple[str, str, str, str]]:
    """(key, label, legend name, colour) of each part of a step, in api.STEP_PARTS' order."""
    return [(key, label, label[:1].upper() + label[1:], colour)
            for (key, label), colour in zip(api.STEP_PARTS, STEP_COLOURS)]

GpuhoursError = api.GpuhoursError

DEFAULT_SCENARIO = "deepseek-v3"
CURRENT = "current_plan"  # session key: (scenario, overrides tuple)
PLANS = "plans"  # session key: list of {"scenario", "overrides"} for Compare
PLANS_VERSION = "plans_version"  # session key: bumped whenever PLANS changes, so the editor restarts from it
DES_DONE = "des_done"  # session key: (scenario, overrides) of the last discrete-event run

SCHEDULES = tuple(s for s in api.PLAN_CHOICES["schedule"] if s != "none")  # "none" (no pipeline) is not offered
RECOMPUTE = api.PLAN_CHOICES["recompute"]
DISPATCHERS = api.PLAN_CHOICES["dispatcher"]
EP_OVERLAPS = api.PLAN_CHOICES["ep_overlap"]
LOSS_KERNELS = api.PLAN_CHOICES["loss_kernel"]
CP_COMMS = api.PLAN_CHOICES["cp_comm"]
DUALPIPE_SENDS = api.PLAN_CHOICES["dualpipe_sends"]
ATTENTION_KERNELS = api.PLAN_CHOICES["attention_kernel"]
FP8_RECIPES = api.PLAN_CHOICES["fp8_recipe"]
ZERO_STAGES = (0, 1, 2, 3)  # plan.zero
KIND_COLOURS = {"F": "#4C78A8", "B": "#F58518", "W": "#54A24B", "FB": "#B279A2", "comm": "#9D9D9D"}


# --------------------------------------------------------------------------- cached API calls
@st.cache_data(show_spinner=False, max_entries=256)
def scenario_dict(name: str, overrides: tuple[str, ...] = (), for_search: bool = False) -> dict:
    """The scenario's parts as plain data. ``for_search``: loaded as a plan search loads it
    (``api.load_for_search``), its searched plan fields allowed not to fit; it then has no micro-batch count."""
    sc = api.load_for_search(name, list(overrides)) if for_search else api.load(name, list(overrides))
    return {
        "plan": api.to_dict(sc.plan),
        "cluster": api.to_dict(sc.cluster),
        "training": api.to_dict(sc.training),
        "cost": api.to_dict(sc.cost),
        "model": sc.model.name,
        "microbatches": None if for_search else sc.microbatches,
    }


@st.cache_data(show_spinner=False, max_entries=256)
def analytic_report(name: str, overrides: tuple[str, ...] = ()) -> dict:
    return api.report(api.predict(api.load(name, list(overrides))))


@st.cache_data(show_spinner=False, max_entries=256)
def run_cost(name: str, overrides: tuple[str, ...] = ()) -> dict:
    return api.run_cost(api.load(name, list(overrides)))


@st.cache_data(show_spinner=False, max_entries=16)
def des_prediction(name: str, overrides: tuple[str, ...] = ()) -> tuple[dict, list | None, bytes]:
    """(report, timeline or None, Perfetto trace JSON) of the discrete-event engine."""
    pred = api.predict(api.load(name, list(overrides)), engine="des")
    trace = json.dumps(api.chrome_trace(pred), separators=(",", ":")).encode()
    tl = pred.extra.get("timeline")
    dp = pred.extra.get("dp_timeline") or []
    if tl is not None:
        tl = tl + [dict(r, kind="dp", mb=None) for r in dp]
    return api.report(pred), tl, trace


@st.cache_data(show_spinner=False, max_entries=64)
def prediction_bands(name: str, overrides: tuple[str, ...] = ()) -> dict:
    return api.prediction_bands(api.load(name, list(overrides)))


@st.cache_data(show_spinner=False, max_entries=64)
def sensitivity(name: str, overrides: tuple[str, ...] = ()) -> dict:
    return api.sensitivity(api.load(name, list(overrides)))


@st.cache_data(show_spinner=False, max_entries=256)
def headline_warnings(name: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """The prediction's warnings that change what the headline means (``api.headline_warnings``)."""
    return api.headline_warnings(api.load(name, list(overrides)))


@st.cache_data(show_spinner=False, max_entries=256)
def gpu_counts(name: str, overrides: tuple[str, ...], near: int) -> dict | None:
    """``api.gpu_counts`` of the plan (``overrides`` without the GPU count) around ``near`` GPUs; None where
    the plan is invalid at ``near`` and at the preset's count both."""
    for ov in (list(overrides) + [f"cluster.num_gpus={near}"], list(overrides)):
        try:
            return api.gpu_counts(api.load(name, ov), near=near)
        except (GpuhoursError, ValueError):
            continue
    return None


def evaluate(name: str, overrides: tuple[str, ...]) -> tuple[dict | None, dict | None, str | None]:
    """(report, run cost, error message) for one plan; errors as one line."""
    try:
        return analytic_report(name, overrides), run_cost(name, overrides), None
    except GpuhoursError as e:
        return None, None, str(e)
    except ValueError as e:  # e.g. a schedule argument check: one line too
        return None, None, str(e)


# --------------------------------------------------------------------------- plan state
def current() -> tuple[str, tuple[str, ...]]:
    return st.session_state.get(CURRENT, (DEFAULT_SCENARIO, ()))


def plans() -> list[dict]:
    return st.session_state.setdefault(PLANS, [])


def set_plans(new: list[dict]) -> None:
    """Replace the Compare list and restart its table editor from it."""
    st.session_state[PLANS] = [{"scenario": p["scenario"], "overrides": list(p["overrides"])} for p in new]
    st.session_state[PLANS_VERSION] = st.session_state.get(PLANS_VERSION, 0) + 1


def add_plans(entries: list[dict]) -> int:
    """Append plans to the Compare list (skipping ones already there); returns how many were new."""
    cur = plans()
    new = [e for i, e in enumerate(entries) if e not in cur and e not in entries[:i]]
    if new:
        set_plans(cur + new)
    return len(new)


def merge_overrides(first: tuple[str, ...] | list[str], then: list[str]) -> list[str]:
    """``first`` followed by ``then``, dropping the entries of ``first`` whose field ``then`` sets again."""
    keys = {o.split("=", 1)[0].strip() for o in then}
    return [o for o in first if o.split("=", 1)[0].strip() not in keys] + list(then)


def split_overrides(text: str) -> list[str]:
    """Space-separated ``section.field=value`` overrides as a list; spaces around ``=`` are allowed
    (``plan.ep = 32`` is ``plan.ep=32``, not three words)."""
    return re.sub(r"\s*=\s*", "=", text.strip()).split()


def _fmt(v: float) -> str:
    """Shortest exact-looking text of a number for an override."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:g}"


VPP_MAX = 16  # the VPP control's upper end
VPP_NOTE = "vpp_note"  # session-key suffix: (vpp, text) said under the VPP control after it was set for the user


def _schedule_changed(name: str, k: str) -> None:
    """``on_change`` of the Schedule control. Picking interleaved while VPP is 1 (a plan the simulator refuses)
    sets VPP to the smallest value from 2 up that makes the plan valid with the current PP and layers; leaving
    interleaved with VPP above 1 (refused too) sets it back to 1. A caption under VPP says what was done."""
    sched, vpp = st.session_state.get(k + "sched"), int(st.session_state.get(k + "vpp", 1))
    st.session_state.pop(k + VPP_NOTE, None)
    cur, ov = current()
    ov = list(ov) if cur == name else []
    if sched == "interleaved" and vpp == 1:
        plan = merge_overrides(ov, ["plan.schedule=interleaved"])
        first = None
        try:  # a preset that runs interleaved gets its own VPP back first (Llama 3 405B: 8, not 2)
            preset = api.load(name).plan
            own = [preset.vpp] if preset.schedule == "interleaved" else []
        except (GpuhoursError, ValueError):
            own = []
        for v in dict.fromkeys([*own, *range(2, VPP_MAX + 1)]):
            try:
                sc = api.load(name, merge_overrides(plan, [f"plan.vpp={v}"]))
            except (GpuhoursError, ValueError) as e:
                first = first or e
                continue
            st.session_state[k + "vpp"] = v
            why = ("the preset's own" if v in own else
                   f"the smallest valid with PP {sc.plan.pp} and {sc.model.layers} layers")
            st.session_state[k + VPP_NOTE] = (v, f"VPP set to {v}: interleaved needs 2 or more virtual stages, and "
                                                 f"{v} is {why}.")
            return
        st.session_state[k + "vpp"] = 2
        why = str(first).splitlines()[0] if first else "no plan"
        st.session_state[k + VPP_NOTE] = (2, f"VPP set to 2, but no VPP from 2 to {VPP_MAX} makes interleaved "
                                             f"valid here: {why}")
    elif sched != "interleaved" and vpp != 1:
        st.session_state[k + "vpp"] = 1
        st.session_state[k + VPP_NOTE] = (1, "VPP set back to 1: only interleaved uses virtual stages.")


def _w(fn, label: str, key: str, default, **kw):
    """A keyed widget whose value lives in session state and survives page switches.

    The value is set through session state (never ``value=``), and written back
    on every run so that switching pages does not drop it.
    """
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]
    else:
        st.session_state[key] = default
    return fn(label, key=key, **kw)


def plan_controls() -> tuple[str, tuple[str, ...]]:
    """The sidebar widgets; returns (scenario, overrides that differ from the preset).

    Widget keys carry the scenario name, so choosing another preset starts
    from that preset's values.
    """
    sb = st.sidebar
    names = api.list_scenarios()
    default = current()[0]
    name = _w(sb.selectbox, "Scenario preset", "scenario", default if default in names else names[0], options=names)
    try:
        base = scenario_dict(name)
    except GpuhoursError as e:
        sb.error(str(e))
        return name, ()
    p, c, t, cost = base["plan"], base["cluster"], base["training"], base["cost"]
    k = f"{name}:"
    ov: list[str] = []

    def add(field: str, value, preset) -> None:
        if isinstance(value, float) or isinstance(preset, float):
            if abs(float(value) - float(preset)) > 1e-9 * max(1.0, abs(float(preset))):
                ov.append(f"{field}={_fmt(value)}")
        elif value != preset:
            ov.append(f"{field}={value}")

    def choose(label: str, key: str, field: str, options, help: str) -> None:
        """A segmented control over one categorical plan field, and its override where it leaves the preset."""
        value = _w(st.segmented_control, label, k + key, p[field], options=options, required=True, help=help)
        add(f"plan.{field}", p[field] if value is None else value, p[field])

    sb.caption(f"Model **{base['model']}** on cluster **{c['name']}** ({c['gpu']['name']}, "
               f"{c['gpu']['hbm_gib']:.1f} GiB HBM)")
    with sb.expander("Cluster", expanded=True):
        gpu_slot = st.container()  # filled last: its step follows the plan's layout, set below
        col1, col2 = st.columns(2)
        nvl = _w(col1.number_input, "NVLink GB/s", k + "nvl", float(c["nvlink_gbps"]), min_value=1.0, max_value=2000.0,
                step=10.0, help="cluster.nvlink_gbps, per GPU, one direction")
        ib = _w(col2.number_input, "IB GB/s", k + "ib", float(c["ib_gbps"]), min_value=1.0, max_value=1000.0, step=5.0, help="cluster.ib_gbps, per GPU, one direction")
        add("cluster.nvlink_gbps", float(nvl), float(c["nvlink_gbps"]))
        add("cluster.ib_gbps", float(ib), float(c["ib_gbps"]))
        g = c["gpu"]
        if g.get("peak_clock_mhz"):  # only GPUs that give the clock behind their peaks
            held = float(g.get("sustained_clock_mhz") or g["peak_clock_mhz"])
            clk = _w(st.number_input, "Sustained SM clock (MHz)", k + "clk", held, min_value=100.0,
                     max_value=float(g["peak_clock_mhz"]), step=10.0, format="%.0f",
                     help=f"cluster.gpu.sustained_clock_mhz: the SM clock the GPUs hold under sustained load, "
                          f"of {g['peak_clock_mhz']:g} MHz behind the datasheet peaks (H800: ~1600 under a "
                          "continuously running kernel, DeepSeek's FlashMLA deep dive). It slows the compute-bound "
                          "rows of the profile's tables timed in bursts (DeepGEMM's FP8 GEMMs, XLA's BF16 table); rows "
                          "measured under load, or from other benchmarks, keep their rates, so where a step's GEMMs "
                          "take those (Llama 3 405B's largest on H100) it moves little. The peak clock means no "
                          "throttling")
            add("cluster.gpu.sustained_clock_mhz", float(clk), held)
    with sb.expander("Parallelism", expanded=True):
        cols = st.columns(2) * 2
        for col, fld, label in zip(cols, ("tp", "pp", "ep", "cp"), ("TP", "PP", "EP", "CP")):
            v = _w(col.number_input, label, k + fld, int(p[fld]), min_value=1, max_value=4096, step=1, help=f"plan.{fld}")
            add(f"plan.{fld}", int(v), int(p[fld]))
        sp = _w(st.toggle, "Sequence parallel (with TP)", k + "sp", bool(p["sp"]),
                help="plan.sp: Megatron sequence parallelism, norms and dropout split along the sequence "
                     "inside the TP group; no effect at TP = 1")
        if bool(sp) != bool(p["sp"]):
            ov.append(f"plan.sp={'true' if sp else 'false'}")
        sched = _w(st.selectbox, "Schedule", k + "sched", p["schedule"],
                   options=SCHEDULES + (("none",) if p["schedule"] == "none" else ()), help="plan.schedule",
                   on_change=_schedule_changed, args=(name, k))
        add("plan.schedule", sched, p["schedule"])
        col1, col2 = st.columns(2)
        mb = _w(col1.number_input, "Micro-batch", k + "mb", int(p["micro_batch"]), min_value=1, max_value=64,
                help="plan.micro_batch: sequences per micro-batch")
        add("plan.micro_batch", int(mb), int(p["micro_batch"]))
        vpp = _w(col2.number_input, "VPP", k + "vpp", int(p["vpp"]), min_value=1, max_value=VPP_MAX,
                 help="plan.vpp: virtual stages per rank (interleaved); picking interleaved sets it to the "
                      "smallest valid value")
        add("plan.vpp", int(vpp), int(p["vpp"]))
        note = st.session_state.get(k + VPP_NOTE)
        if note and note[0] == int(vpp):
            st.caption(plain(note[1]))
        choose("Recompute", "rc", "recompute", RECOMPUTE,
               "plan.recompute: activations recomputed in the backward pass instead of kept")
        choose("ZeRO stage", "zero", "zero", ZERO_STAGES,
               "plan.zero: what the data-parallel ranks shard. 0: nothing; 1: the optimizer states (DeepSeek-V3); "
               "2: also the gradients; 3: also the parameters, gathered layer by layer (FSDP)")
    with sb.expander("Kernels & routing", expanded=True):
        fp8 = _w(st.toggle, "FP8 training", k + "fp8", p["precision"] == "fp8",
                        help="plan.precision fp8 (on) or bf16 (off)")
        prec = "fp8" if fp8 else ("bf16" if p["precision"] == "fp8" else p["precision"])
        add("plan.precision", prec, p["precision"])
        choose("FP8 scaling", "f8r", "fp8_recipe", FP8_RECIPES,
               "plan.fp8_recipe: blockwise (DeepSeek-V3: 1x128 activation tiles, 128x128 weight blocks, the "
               "transposed copies re-quantized for the weight gradient), tensorwise (Transformer Engine's current "
               "scaling: an amax pass, then one cast writing both copies) or delayed (TE's delayed scaling: the one "
               "cast alone); FP8 training only")
        sms = _w(st.slider, "SMs for communication", k + "sms", int(p["comm_sms"]), min_value=0,
                 max_value=int(c["gpu"]["sms"]) // 2, help="plan.comm_sms: SMs given to all-to-all kernels")
        add("plan.comm_sms", int(sms), int(p["comm_sms"]))
        z0 = float(p["zipf_s"]) if p["routing"] == "zipf" else 0.0
        z = _w(st.slider, "Routing skew (Zipf s, 0 = balanced)", k + "zipf", z0, min_value=0.0, max_value=2.0, step=0.1,
                      help="plan.routing=zipf with plan.zipf_s; 0 keeps the preset's routing")
        if z > 0 and (p["routing"] != "zipf" or abs(z - z0) > 1e-9):
            ov += ["plan.routing=zipf", f"plan.zipf_s={_fmt(round(z, 3))}"]
        elif z == 0 and p["routing"] == "zipf":
            ov.append("plan.routing=balanced")
        choose("MoE dispatcher", "disp", "dispatcher", DISPATCHERS,
               "plan.dispatcher: deepep (DeepEP kernels, FP8 dispatch, a token sent once per remote node and GPU) "
               "or alltoall (Megatron-Core: one BF16 row per token-expert pair over one NCCL all-to-all, sorted by "
               "local expert); MoE with EP > 1 only")
        choose("All-to-all overlap", "epo", "ep_overlap", EP_OVERLAPS,
               "plan.ep_overlap: hide the MoE all-to-all of one micro-batch behind the compute of another. auto: "
               "under DualPipe/DualPipeV only; on: also Megatron-LM's forward-backward pairs of an interleaved "
               "schedule (one more warm-up micro-batch; the warm-up and drain chunks still expose theirs); off: "
               "always exposed")
        tpo = _w(st.toggle, "TP communication overlap", k + "tpo", bool(p["tp_comm_overlap"]),
                 help="plan.tp_comm_overlap: Transformer Engine's userbuffers hide the TP all-gathers and "
                      "reduce-scatters behind GEMMs that run in chunks or beside 16 SMs of communication "
                      "(needs sequence parallelism; TP > 1 only)")
        if bool(tpo) != bool(p["tp_comm_overlap"]):
            ov.append(f"plan.tp_comm_overlap={'true' if tpo else 'false'}")
        choose("Loss kernel", "loss", "loss_kernel", LOSS_KERNELS,
               "plan.loss_kernel: fused (Transformer Engine's cross-entropy: two reads of the BF16 logits and an "
               "in-place gradient) or unfused (Megatron's op-by-op FP32 loss); it runs on the stage with the "
               "output head, which often paces the pipeline")
        choose("Attention kernel", "attn", "attention_kernel", ATTENTION_KERNELS,
               "plan.attention_kernel: flash (the profile's default fused rows, FlashAttention-3 on Hopper), cudnn "
               "(cuDNN's fused attention, Transformer Engine's choice on Hopper), fa2 (FlashAttention-2's rates; "
               "the DeepSeek presets pick it: their runs' kernels were built on FA2) or unfused (the score matrix "
               "in HBM; not for MLA or NSA)")
        choose("CP K/V exchange", "cpc", "cp_comm", CP_COMMS,
               "plan.cp_comm: ring (each GPU passes its K/V chunk on while it attends to the one it holds: only "
               "what outlasts that attention shows) or allgather (K and V gathered before attention, their "
               "gradients reduce-scattered after, all of it exposed: Llama 3's choice, for document masks); "
               "CP > 1 only")
        choose("DualPipe P2P sends", "dps", "dualpipe_sends", DUALPIPE_SENDS,
               "plan.dualpipe_sends: in_pair (a pair's two P2P messages go out on the communication stream inside "
               "the pair, as DeepSeek-V3's Figure 4 draws it) or after_pair (once the pair's compute has ended, as "
               "the open-source deepseek-ai/DualPipe sends them: a hop can wait on the critical path every pair); "
               "DualPipe/DualPipeV with all-to-all overlap only")
    with sb.expander("Run & price", expanded=True):
        col1, col2 = st.columns(2)
        price = _w(col1.number_input, "$ / GPU-hour", k + "usd", float(cost["usd_per_gpu_hour"]), min_value=0.0,
                   max_value=100.0, step=0.25,
                                  help="cost.usd_per_gpu_hour")
        add("cost.usd_per_gpu_hour", float(price), float(cost["usd_per_gpu_hour"]))
        tok = _w(col2.number_input, "Tokens (T)", k + "tok", float(t["tokens"]) / 1e12, min_value=0.001,
                 max_value=1000.0, step=0.5, format="%.3f",
                                help="training.tokens, in trillions")
        tokens = round(float(tok), 6) * 1e12
        problem = _tokens_problem(name, tokens, t) if abs(tokens - float(t["tokens"])) > 1e-9 * float(t["tokens"]) \
            else None
        if problem:  # said under the field; the pages go on with the preset's tokens
            st.error(plain(problem))
        else:
            add("training.tokens", tokens, float(t["tokens"]))
    with gpu_slot:
        held = int(st.session_state.get(k + "gpus", int(c["num_gpus"])))
        counts = gpu_counts(name, tuple(ov), held)
        step = counts["step"] if counts else int(c["gpus_per_node"])
        gpus = _w(st.number_input, "GPUs", k + "gpus", int(c["num_gpus"]), min_value=1, max_value=1_000_000,
                  step=step, help=f"cluster.num_gpus; global batch stays fixed. Steps of {step:,}: whole "
                                  f"{c['gpus_per_node']}-GPU nodes holding whole TP x PP x CP replicas and EP groups")
        if counts and counts["counts"]:
            st.caption(f"Valid for this plan near {held:,}: " + " · ".join(f"{n:,}" for n in counts["counts"])
                       + " GPUs (DP must also divide the global batch)")
        if int(gpus) != int(c["num_gpus"]):
            ov.insert(0, f"cluster.num_gpus={int(gpus)}")
    st.session_state[CURRENT] = (name, tuple(ov))
    if ov:
        sb.code("\n".join(ov), language=None)
        sb.caption("Overrides vs. the preset (same syntax as `gpuhours predict --set`)")
    return name, tuple(ov)


def _tokens_problem(name: str, tokens: float, t: dict) -> str | None:
    """Why ``training.tokens=tokens`` is refused, as one line naming the sidebar field, or None."""
    try:
        scenario_dict(name, (f"training.tokens={_fmt(tokens)}",))
    except (GpuhoursError, ValueError) as e:
        ramp = float(t.get("batch_ramp_tokens") or 0.0)
        if ramp and tokens < ramp:
            return (f"Tokens (T): {tokens / 1e12:,.3f} is less than the {ramp / 1e12:,.3f} T of the preset's batch "
                    f"ramp (training.batch_ramp_tokens); allowed: {ramp / 1e12:,.3f} to 1,000 T. The pages use the "
                    f"preset's {float(t['tokens']) / 1e12:g} T until then.")
        return f"Tokens (T): {str(e).splitlines()[0]}"
    return None


_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~$])")  # inline Markdown (and Streamlit's $math$)


def plain(text: object) -> str:
    """``text`` with Markdown's special characters escaped, so a message such as
    "tp*pp*cp = 1*7*1" shows as written, not as emphasis."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def show_error(msg: object) -> None:
    """An error message from the simulator, first line only, shown verbatim."""
    st.error(plain(str(msg).splitlines()[0] if str(msg) else msg))


plan_text = api.plan_text  # a run phase's plan dict in the CLI's one-line form


def fmt_usd(a: float) -> str:
    """Dollars in a unit that keeps them readable: ``$1.23 M``, ``$50 K``, ``$420`` (a small run's cost read
    ``$0.00 M``)."""
    if a >= 999.5e3:
        return f"${a / 1e6:,.2f} M"
    if a >= 999.5:
        return f"${a / 1e3:,.0f} K"
    return f"${a:,.0f}"


def fmt_usd_delta(d: float) -> str:
    """A signed dollar difference with its sign first: ``+$1.23 M``, ``-$50 K``, ``+$420`` (not ``-0.05 M$``)."""
    return ("-" if d < 0 else "+") + fmt_usd(abs(d))


def fmt_big(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:,.2f} {unit}"
    return f"{x:,.2f}"
