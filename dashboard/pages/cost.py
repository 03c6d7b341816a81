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
for ph in cost["phases"]:
    pub = ph.get("published_gpu_hours")
    rows.append({"Training costs": ph["name"], "Tokens (T)": (ph.get("tokens") or 0) / 1e12,
                 "GPU-hours (K)": ph["gpu_hours"] / 1e3, "USD (M)": ph["usd"] / 1e6,
                 "Published GPU-hours (K)": pub / 1e3 if pub else None,
                 "vs published": f"{(ph['gpu_hours'] / pub - 1) * 100:+.1f} %" if pub else "—",
                 "Modelled": "yes" if ph.get("modelled", True) else "given"})
pub_total = sum(ph["published_gpu_hours"] or 0 for ph in cost["phases"])
rows.append({"Training costs": "Total", "Tokens (T)": cost["tokens"] / 1e12,
             "GPU-hours (K)": cost["total_gpu_hours"] / 1e3, "USD (M)": cost["total_usd"] / 1e6,
             "Published GPU-hours (K)": pub_total / 1e3 if pub_total else None,
             "vs published": f"{(cost['total_gpu_hours'] / pub_total - 1) * 100:+.1f} %" if pub_total else "—",
             "Modelled": ""})
df = pd.DataFrame(rows)
st.dataframe(df, hide_index=True, width="stretch", placeholder="—", column_config={
    "Tokens (T)": st.column_config.NumberColumn(format="%.3f"),
    "GPU-hours (K)": st.column_config.NumberColumn(format="%,.1f"),
    "USD (M)": st.column_config.NumberColumn(format="$%.3f"),
    "Published GPU-hours (K)": st.column_config.NumberColumn(format="%,.1f"),
})
c = st.columns(3)
c[0].metric("Total GPU-hours", f"{cost['total_gpu_hours'] / 1e6:,.3f} M GPU·h")
c[1].metric("Total cost", f"${cost['total_usd'] / 1e6:,.2f} M", help=f"at ${price:g} per GPU-hour")
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
st.caption(f"Assumes ${price:g} per GPU-hour (cost.usd_per_gpu_hour) and the batch-size ramp of the scenario; "
           f"run average {cost['gpu_hours_per_trillion_tokens_run']:,.0f} GPU-hours per trillion tokens. "
           "Published figures appear where the scenario records them (DeepSeek-V3 Table 1: 2,664K + 119K + 5K "
           "= 2,788K H800 GPU-hours).")
