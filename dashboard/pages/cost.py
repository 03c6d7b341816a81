"""Cost: whole-run GPU-hours and dollars by phase (layout of DeepSeek-V3 Table 1)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import state

state.plan_controls()

name, ov = state.current()
st.title("Training cost of the whole run")
rep, cost, err = state.evaluate(name, ov)
if err:
    state.show_error(err)
    st.stop()
price = state.scenario_dict(name, ov)["cost"]["usd_per_gpu_hour"]
rows = []
by_name = {ph["name"]: ph for ph in cost["phases"]}
for col in cost["table"]:  # one row per column of the published table, its phases under it
    pub = col["published_gpu_hours"]
    members = [by_name[n] for n in col["phases"]]
    rows.append({"Training costs": col["column"], "Tokens (T)": sum(ph.get("tokens") or 0 for ph in members) / 1e12,
                 "GPU-hours (K)": col["gpu_hours"] / 1e3, "USD (M)": col["usd"] / 1e6,
                 "Published GPU-hours (K)": pub / 1e3 if pub else None,
                 "vs published": f"{col['error'] * 100:+.1f} %" if col["error"] is not None else "—",
                 "Modelled": "yes" if col["modelled"] else "given"})
    if len(members) > 1:
        for ph in members:
            rows.append({"Training costs": f"   └ {ph['name']}", "Tokens (T)": (ph.get("tokens") or 0) / 1e12,
                         "GPU-hours (K)": ph["gpu_hours"] / 1e3, "USD (M)": ph["usd"] / 1e6,
                         "Published GPU-hours (K)": None, "vs published": "",
                         "Modelled": "yes" if ph.get("modelled", True) else "given"})
pub_total = cost.get("published_total_gpu_hours")
rows.append({"Training costs": "Total", "Tokens (T)": cost["tokens"] / 1e12,
             "GPU-hours (K)": cost["total_gpu_hours"] / 1e3, "USD (M)": cost["total_usd"] / 1e6,
             "Published GPU-hours (K)": pub_total / 1e3 if pub_total else None,
             "vs published": f"{cost['total_error'] * 100:+.1f} %" if cost.get("total_error") is not None else "—",
             "Modelled": ""})
df = pd.DataFrame(rows)
published = df["Published GPU-hours (K)"].notna().any()
if not published:  # two columns of dashes say nothing: the caption below says there is nothing to compare with
    df = df.drop(columns=["Published GPU-hours (K)", "vs published"])
st.dataframe(df, hide_index=True, width="stretch", placeholder="—", column_config={
    "Tokens (T)": st.column_config.NumberColumn(format="%.3f"),
    "GPU-hours (K)": st.column_config.NumberColumn(format="%,.1f"),
    "USD (M)": st.column_config.NumberColumn(format="$%.3f"),
    "Published GPU-hours (K)": st.column_config.NumberColumn(format="%,.1f"),
})
c = st.columns(3)
c[0].metric("Total GPU-hours", f"{cost['total_gpu_hours'] / 1e6:,.3f} M GPU·h")
c[1].metric("Total cost", state.fmt_usd(cost["total_usd"]), help=f"at ${price:g} per GPU-hour")
c[2].metric(f"Wall-clock on {rep['num_gpus']:,} GPUs", f"{cost['days_on_cluster']:,.1f} days")
try:
    run_bands = state.prediction_bands(name, ov).get("run")
except (state.GpuhoursError, ValueError, OSError):
    run_bands = None
if run_bands:
    text = (f"Total GPU-hours: validation band {run_bands['validation']['low'] / 1e6:,.3f} – "
            f"{run_bands['validation']['high'] / 1e6:,.3f} M")
    if "calibration" in run_bands:
        text += (f"; calibration band {run_bands['calibration']['low'] / 1e6:,.3f} – "
                 f"{run_bands['calibration']['high'] / 1e6:,.3f} M")
    c[0].caption(text + " GPU·h: empirical error bands, not confidence intervals",
                 help="Validation band: the modelled phases times how much more (or less) published runs took than "
                      "we predicted for them (10th to 90th percentile). Calibration band: every kernel table of the "
                      "profile moved by its median leave-one-out error. Phases given as GPU-hours do not move.")
run_avg = cost["gpu_hours_per_trillion_tokens_run"]
st.caption(f"Assumes ${price:g} per GPU-hour (cost.usd_per_gpu_hour) and the scenario's phases and batch-size ramp"
           + (f"; run average {run_avg:,.0f} GPU-hours per trillion tokens over the modelled phases" if run_avg else "")
           + (". Published figures appear where the scenario records them, one per column of the published table "
              "(a column may hold several phases: they are compared with it together)." if published else
              f". Scenario **{name}** records no published GPU-hours to compare with."))
phased = [ph for ph in cost["phases"] if ph.get("modelled") and "plan" in ph]
if len(phased) > 1:
    st.subheader("Plan of each modelled phase")
    st.dataframe(pd.DataFrame([{
        "Phase": ph["name"], "Seq": ph["seq_len"], "Batch": ph["global_batch"],
        "Plan": state.plan_text(ph["plan"]), "Step (s)": ph["step_time_s"], "MFU %": 100 * ph["mfu"],
        "Peak memory (GiB)": ph["peak_memory_gib"], "Fits": "yes" if ph["fits_in_memory"] else "NO"}
        for ph in phased]), hide_index=True, width="stretch", column_config={
        # one precision per column (a rounded 70.0 beside 64.3 printed as "70")
        "Step (s)": st.column_config.NumberColumn(format="%.3f"),
        "MFU %": st.column_config.NumberColumn(format="%.1f"),
        "Peak memory (GiB)": st.column_config.NumberColumn(format="%.1f")})
    warned = [f"{ph['name']}: {w}" for ph in phased for w in ph.get("warnings", [])]
    if warned:
        with st.expander(f"{len(warned)} warnings from the phases' predictions"):
            st.markdown("\n".join(f"- {state.plain(w)}" for w in warned))
