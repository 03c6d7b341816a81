"""Search: rank the parallelism plans of the sidebar's scenario and send the best to Compare.

The search enumerates plans (TP, PP, EP, CP, schedule, micro-batch, recompute,
ZeRO, communication SMs) for the model on the sidebar's GPU count, drops those
that cannot be valid or cannot fit, times the rest with the analytic engine and
ranks them; the best few can be re-simulated with the discrete-event engine.
Everything else (cluster, precision, routing, tokens, price) comes from the
sidebar; the sidebar's own TP, PP, EP, CP, schedule, VPP, micro-batch and
recompute are what the search replaces.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state

state.plan_controls()

RESULT = "search_result"  # session key: {"key", "res", "base"} of the last search
SEARCHED = {f"plan.{k}" for k in state.api.SEARCHED_PLAN_KEYS}
OBJECTIVES = {"GPU-hours per trillion tokens": "gpu_hours", "Dollars per trillion tokens": "usd",
              "Step time": "step_time"}

name, ov = state.current()
base_ov = tuple(o for o in ov if o.split("=", 1)[0].strip() not in SEARCHED)
st.title("Plan search")
try:  # the sidebar's TP, PP, EP, ... need not fit its GPU count: the search replaces them
    sd = state.scenario_dict(name, base_ov, for_search=True)
except state.GpuhoursError as e:
    state.show_error(e)
    st.stop()
gpus, hbm = int(sd["cluster"]["num_gpus"]), float(sd["cluster"]["gpu"]["hbm_gib"])
st.caption(f"Ranks plans for **{sd['model']}** on **{gpus:,} × {sd['cluster']['gpu']['name']}** "
           f"({hbm:.1f} GiB HBM). Cluster, precision, routing, tokens and price come from the sidebar; the "
           "dimensions below replace the sidebar's TP, PP, EP, CP, schedule, micro-batch and recompute.")

# --------------------------------------------------------------------------- search space
space0 = state.api.search_space()
try:
    preset = state.scenario_dict(name, ov, for_search=True)["plan"]  # the sidebar's plan, searched dimensions included
except state.GpuhoursError:
    preset = state.scenario_dict(name)["plan"]
k = f"search:{name}:"
SCHED_LABEL = {("1f1b", 1): "1F1B", ("zb1p", 1): "ZB1P", ("dualpipe", 1): "DualPipe", ("dualpipev", 1): "DualPipeV"}


def sched_label(s) -> str:
    """A (schedule, virtual stages) choice as the page names it."""
    s = tuple(s)
    return SCHED_LABEL.get(s, f"{s[0]} ×{s[1]}")


# The sidebar's own schedule is a choice too (Llama 3 405B's interleaved ×8 is not a default one).
own_sched = (preset["schedule"], int(preset.get("vpp") or 1))
sched_choices = list(space0["schedule"]) + ([own_sched] if own_sched not in space0["schedule"]
                                            and own_sched != ("none", 1) else [])
with st.expander("Search space", expanded=False):
    c = st.columns(4)
    # The defaults always hold the sidebar plan's own values, so the search can find the plan it starts from.
    def dim(field: str, default) -> tuple[list, list]:
        own = int(preset.get(field) or 1)
        return sorted(set(default) | {own}), sorted(set(space0[field]) | {own})

    picked = {}
    for col, (field, label, default) in zip(c, (("tp", "TP", space0["tp"]), ("pp", "PP", space0["pp"]),
                                                ("cp", "CP", [1]), ("micro_batch", "Micro-batch (sequences)", [1, 2]))):
        value, options = dim(field, default)
        picked[field] = state._w(col.multiselect, label, k + ("mb" if field == "micro_batch" else field), value,
                                 options=options)
    tp, pp, cp, mb = (picked[f] for f in ("tp", "pp", "cp", "micro_batch"))
    c = st.columns([2, 1, 1])
    sched = state._w(c[0].multiselect, "Schedules", k + "sched", sched_choices, options=sched_choices,
                     format_func=sched_label)
    rc = state._w(c[1].multiselect, "Recompute", k + "rc", list(space0["recompute"]), options=list(space0["recompute"]))
    zero = state._w(c[2].multiselect, "ZeRO stage", k + "zero", [int(preset["zero"])], options=[0, 1, 2, 3])
    st.caption("EP: every divisor of the expert count that divides DP × TP. Wider choices search longer. "
               f"Communication SMs stay the plan's own ({int(preset['comm_sms'])}): the all-to-all is priced at "
               "DeepEP's rates measured with 20 SMs, so other counts would move only the compute side and fewer "
               "SMs could only look faster.")


def listing(vals) -> str:
    return "/".join(str(v) for v in vals) or "—"


st.caption(f"Searching TP {listing(tp)} · PP {listing(pp)} · CP {listing(cp)} · EP auto · micro-batch {listing(mb)} · "
           f"{len(sched)} schedules · recompute {listing(rc)} · ZeRO {listing(zero)} · comm SMs {int(preset['comm_sms'])}")
c = st.columns([3, 1, 2, 1])
objective = state._w(c[0].selectbox, "Rank by", k + "obj", "GPU-hours per trillion tokens", options=list(OBJECTIVES))
top = state._w(c[1].number_input, "Plans shown", k + "top", 10, min_value=1, max_value=50, step=1)
with c[2]:
    st.write("")
    use_des = state._w(st.checkbox, "Re-simulate with the DES", k + "des", False,
                       help="Runs the discrete-event engine on the best plans (about a second each on a large "
                            "model); its GPU-hours get a column of their own")
des_k = state._w(c[3].number_input, "How many", k + "desk", 3, min_value=1, max_value=50, step=1,
                 disabled=not use_des)

space = {"tp": tuple(tp), "pp": tuple(pp), "cp": tuple(cp), "micro_batch": tuple(mb),
         "schedule": tuple(tuple(s) for s in sched), "recompute": tuple(rc), "zero": tuple(zero)}
empty = [dim for dim, vals in space.items() if not vals]
key = (name, base_ov, tuple(sorted(space.items())), objective, int(top), int(des_k) if use_des else 0)

if st.button("Search plans", type="primary", icon=":material/search:", disabled=bool(empty)):
    bar = st.progress(0.0, text="Enumerating plans…")
    try:
        res = state.api.search_plans(state.api.load_for_search(name, list(base_ov)), objective=OBJECTIVES[objective],
                                     top=int(top), space=space, des_top=key[-1],
                                     progress=lambda f, text: bar.progress(f, text=text))
    except (state.GpuhoursError, ValueError) as e:
        bar.empty()
        state.show_error(e)
        st.stop()
    bar.empty()
    st.session_state[RESULT] = {"key": key, "res": res, "base": list(base_ov)}
if empty:
    st.error("Pick at least one value for: " + ", ".join(empty).replace("_", "-") + " (under Search space).")

saved = st.session_state.get(RESULT)
if not saved:
    st.info("Press **Search plans** to rank the plans (a few seconds with the default space).")
    st.stop()
if saved["key"] != key:
    st.warning("The sidebar or the search settings changed since these results: press **Search plans** to update.")
res = saved["res"]
if res.get("failed"):
    st.warning(f"{res['failed']:,} plans could not be timed and are left out of the ranking, e.g.: "
               + res["errors"][0])
if not res["plans"]:
    st.error(f"No plan fits in {hbm:.1f} GiB of HBM among the {res['evaluated']:,} timed: widen the search space "
             "(more PP, recompute, ZeRO stages) or add GPUs.")
    st.stop()

# --------------------------------------------------------------------------- ranked table
best = res["plans"][0]
cur, _cost, cur_err = state.evaluate(name, ov)
c = st.columns(4)
c[0].metric("Best plan, GPU·h / 1T tokens", f"{best['gpu_hours_per_trillion_tokens']:,.0f}",
            help="GPU-hours per trillion tokens, analytic")
if cur and not cur_err:
    d = best["gpu_hours_per_trillion_tokens"] / cur["gpu_hours_per_trillion_tokens"] - 1
    fits = cur["fits_in_memory"]
    # The delta's sign is the best plan's against the sidebar's: green where the best costs less.
    c[1].metric("Your sidebar plan, GPU·h / 1T", f"{cur['gpu_hours_per_trillion_tokens']:,.0f}",
                f"{d * 100:+.1f} %: the best plan against it" if fits
                else f"does not fit ({cur['peak_memory_gib']:.1f} GiB)",
                delta_color="inverse" if fits else "off", delta_arrow="off",
                help="GPU-hours per trillion tokens, analytic")
elif cur_err:
    c[1].metric("Your sidebar plan, GPU·h / 1T", "invalid", help=cur_err)
c[2].metric("Plans timed", f"{res['evaluated']:,}", help=f"{res['enumerated']:,} enumerated, {res['pruned']:,} pruned "
            "as invalid or too big before timing")
c[3].metric("Fit in memory", f"{res['valid']:,}", help=f"search took {res['seconds']:.1f} s")


def sched_text(p: dict) -> str:
    return sched_label((p["schedule"], p["vpp"]))


# The table fits the page: the plan is two short text columns, a setting shared by every row (ZeRO stage,
# communication SMs) is said once above the table, and dollars replace GPU-hours when they are the ranking.
shown = [r["plan"] for r in res["plans"]]
varies = {f for f in ("zero", "comm_sms") if len({p[f] for p in shown}) > 1}
show_usd = OBJECTIVES[objective] == "usd"
with_des = bool(key[-1] or saved["key"][-1])


def parallelism_text(p: dict) -> str:
    return (f"TP{p['tp']} PP{p['pp']} EP{p['ep']} DP{p['dp']}" + (f" CP{p['cp']}" if p["cp"] > 1 else "")
            + (" +SP" if p.get("sp") else ""))


def schedule_text(p: dict) -> str:
    return " · ".join([sched_text(p), f"mb {p['micro_batch']}", p["recompute"]]
                      + ([f"ZeRO {p['zero']}"] if "zero" in varies else [])
                      + ([f"{p['comm_sms']} SMs"] if "comm_sms" in varies else []))


rows = []
for r in res["plans"]:
    p, des = r["plan"], r["des"]
    row = {"#": r["rank"], "parallelism": parallelism_text(p), "schedule": schedule_text(p)}
    if show_usd:
        row["$ / 1T tokens"] = r["usd_per_trillion_tokens"]
    else:
        row["GPU·h / 1T tokens"] = r["gpu_hours_per_trillion_tokens"]
    if with_des:  # the DES's figure of what the table ranks by, and its own order of the plans it re-ran
        ok = bool(des) and "error" not in des
        if show_usd:
            row["DES $ / 1T"] = des.get("usd_per_trillion_tokens") if ok else None
        else:
            row["DES GPU·h / 1T"] = des["gpu_hours_per_trillion_tokens"] if ok else None
        row["DES #"] = r.get("des_rank")
    else:  # at a fixed GPU count and batch, MFU and step time follow the GPU-hours: room for the DES column
        row["MFU (%)"] = 100 * r["mfu"]
    row.update({"bubble (%)": 100 * r["bubble_fraction"], "exposed comm (%)": 100 * r["exposed_comm_fraction"],
                "peak memory": r["peak_memory_gib"]})
    rows.append(row)
df = pd.DataFrame(rows)
same = ([f"ZeRO {shown[0]['zero']}"] if "zero" not in varies else []) \
    + ([f"{shown[0]['comm_sms']} communication SMs"] if "comm_sms" not in varies else [])
if same:
    st.caption("Every plan below runs " + " and ".join(same) + ". Hover a column header for what it holds.")
NUM = st.column_config.NumberColumn
event = st.dataframe(
    df, hide_index=True, width="stretch", placeholder="—", key="search_table", on_select="rerun", selection_mode="multi-row",
    column_config={
        "#": NUM(format="%d", width=36, help="Rank by the objective chosen above"),
        "parallelism": st.column_config.TextColumn(
            width=165, help="Tensor, pipeline, expert and data parallel degrees (CP: context parallel; "
                            "+SP: sequence parallel)"),
        "schedule": st.column_config.TextColumn(
            width=185, help="Pipeline schedule · micro-batch (sequences) · activation recompute"),
        "GPU·h / 1T tokens": NUM("GPU·h / 1T", format="%,.0f", width=85,
                                 help="GPU-hours per trillion tokens, analytic"),
        "$ / 1T tokens": NUM("$ / 1T", format="$%,.0f", width=85, help="Dollars per trillion tokens at the sidebar's price"),
        "DES GPU·h / 1T": NUM("DES GPU·h", format="%,.0f", width=85,
                              help="GPU-hours per trillion tokens, discrete-event simulation (— : not re-simulated)"),
        "DES $ / 1T": NUM("DES $", format="$%,.0f", width=85,
                          help="Dollars per trillion tokens, discrete-event simulation (— : not re-simulated)"),
        "DES #": NUM("DES #", format="%d", width=52,
                     help="Rank among the re-simulated plans by the discrete-event simulation's figure"),
        "MFU (%)": NUM("MFU %", format="%.1f", width=60, help="Model FLOPs utilisation, %"),
        "bubble (%)": NUM("bubble %", format="%.1f", width=70, help="Pipeline bubble, % of the step"),
        "exposed comm (%)": NUM("comm %", format="%.1f", width=65,
                                help="Communication not hidden behind compute, % of the step"),
        "peak memory": NUM("peak GiB", format="%.1f", width=75,
                           help=f"Peak memory per GPU, GiB (of {hbm:.1f} GiB HBM; every plan shown fits)"),
    })
if res.get("des_disagree"):
    d = res["des_disagree"]
    st.info(f"The discrete-event simulation ranks plan #{d['des_best']} first: by its figures "
            f"{d['gain_pct']:.1f} % under #{d['analytic_best']}, the analytic engine's best. The DES shares each "
            "link per flow and times each chunk on its own; where they disagree, act on its order.")
errs = [f"#{r['rank']}: {r['des']['error']}" for r in res["plans"] if r["des"] and "error" in r["des"]]
if errs:
    st.caption("DES could not simulate " + "; ".join(errs))
picked = sorted(event.selection.rows) if event is not None else []
c = st.columns([2, 5])
if c[0].button(f"Send {len(picked) or ''} to Compare".replace("  ", " "), icon=":material/compare_arrows:",
               disabled=not picked, width="stretch",
               help="Adds the ticked plans to the Compare page" if picked
               else "Select rows (tick boxes on the left of the table) first"):
    new = state.add_plans([{"scenario": name, "overrides": state.merge_overrides(saved["base"], res["plans"][i]["overrides"])}
                           for i in picked])
    dup = len(picked) - new
    st.toast(f"{new} plan{'s' if new != 1 else ''} added to Compare" + (f" ({dup} already there)" if dup else ""))
c[1].caption("Tick rows on the left of the table, then send them to the Compare page; each plan keeps the "
             "sidebar's other settings.")
if state.plans():
    st.page_link("pages/compare.py", label=f"Open Compare ({len(state.plans())} plans)", icon=":material/compare_arrows:")

# --------------------------------------------------------------------------- every fitting plan
allp = pd.DataFrame(res["all"])
if not allp.empty:
    allp["schedule"] = [sched_label((s, v)) for s, v in zip(allp["schedule"], allp["vpp"])]
    fig = px.scatter(allp, x="peak_memory_gib", y="gpu_hours_per_trillion_tokens", color="schedule",
                     color_discrete_sequence=px.colors.qualitative.Bold,
                     category_orders={"schedule": [v for v in map(sched_label, sched_choices)
                                                   if v in set(allp["schedule"])]},
                     hover_data={"tp": True, "pp": True, "ep": True, "micro_batch": True, "recompute": True},
                     labels={"peak_memory_gib": "peak memory per GPU (GiB)",
                             "gpu_hours_per_trillion_tokens": "GPU-hours per trillion tokens", "tp": "TP", "pp": "PP",
                             "ep": "EP", "micro_batch": "micro-batch"},
                     title=f"All {len(allp):,} plans that fit: GPU-hours against peak memory (lower is better"
                           + (", axis cut at twice the best)" if allp["gpu_hours_per_trillion_tokens"].max() >
                              2 * allp["gpu_hours_per_trillion_tokens"].min() else ")"))
    fig.update_traces(marker=dict(size=5, opacity=0.6))
    fig.add_scatter(x=[r["peak_memory_gib"] for r in res["plans"]], y=[r["gpu_hours_per_trillion_tokens"] for r in res["plans"]],
                    mode="markers", name=f"top {len(res['plans'])} (table)", hoverinfo="skip",
                    marker=dict(symbol="circle-open", size=11, color="#222", line=dict(width=1.5)))
    fig.add_vline(x=hbm, line_dash="dash", line_color="#E45756", annotation_text=f"HBM {hbm:.1f} GiB")
    lo, hi = float(allp["gpu_hours_per_trillion_tokens"].min()), float(allp["gpu_hours_per_trillion_tokens"].max())
    top_y = min(hi, 2 * lo)  # plans above twice the best are not contenders: keep the axis on the ones that are
    fig.update_layout(height=420, margin=dict(t=50, b=10), legend_title_text="schedule",
                      yaxis=dict(tickformat=",.0f", range=[lo - 0.03 * (top_y - lo), top_y + 0.03 * (top_y - lo)]))
    st.plotly_chart(fig, width="stretch", key="search_scatter")
