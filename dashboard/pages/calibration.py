"""Calibration: the kernel profile the simulator reads, against the roofline."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import state

state.plan_controls()

name, ov = state.current()
st.title("Calibration profile")
try:
    sd = state.scenario_dict(name, ov)
except state.GpuhoursError as e:
    state.show_error(e)
    sd = state.scenario_dict(name)
gpu = sd["cluster"]["gpu"]
peaks = {"bf16": gpu.get("bf16_tflops") or 0.0, "fp16": gpu.get("fp16_tflops") or gpu.get("bf16_tflops") or 0.0,
         "fp8": gpu.get("fp8_tflops") or 0.0}

up = st.file_uploader("Upload a profile JSON (schema gpuhours.profile v1) to inspect it", type=["json"])
prof = None
if up is not None:
    try:
        prof = state.api.parse_profile(json.loads(up.getvalue().decode("utf-8")), name=up.name)
        st.success(f"{up.name}: valid profile for {prof.device.get('name')}")
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError and schema errors are ValueErrors
        state.show_error(f"{up.name}: not a valid profile: {e}")
if prof is None:
    pname = sd["cluster"]["profile"]
    try:
        prof = state.api.load_profile(pname)
    except (state.GpuhoursError, ValueError, OSError) as e:
        state.show_error(e)
        st.stop()
    st.caption(f"Profile **{prof.name}** used by cluster **{sd['cluster']['name']}** of scenario **{name}**.")
# The rows are read against the peaks of the GPU they were measured on, which an uploaded profile names.
own = state.api.device_peaks(prof)
if own is not None and own["name"] != gpu["name"]:
    gpu, peaks = {"name": own["name"]}, {k: own[k] for k in ("bf16", "fp16", "fp8")}
elif own is None and up is not None:
    gpu, peaks = {"name": prof.device.get("name") or "an unnamed device"}, {}

c1, c2 = st.columns([1, 1])
with c1:
    st.subheader("Device")
    names = {"sms": "SMs", "clock_mhz": "clock (MHz)", "hbm_gib": "HBM (GiB)", "hbm_gbps": "HBM (GB/s)",
             "measured": "measured on this GPU"}
    dev = [{"field": names.get(k, k.replace("_", " ")),
            "value": ("yes" if v else "no") if isinstance(v, bool) else str(v)}
           for k, v in prof.device.items() if not isinstance(v, (dict, list))]
    st.dataframe(dev, hide_index=True, width="stretch")
with c2:
    st.subheader("Rows per table")
    st.dataframe(pd.DataFrame([{"table": k, "rows": len(v)} for k, v in prof.tables.items()]),
                 hide_index=True, width="stretch")
    if peaks:
        st.caption(f"Roofline peaks of {gpu['name']}: BF16 {peaks['bf16']:,.0f}, FP8 {peaks['fp8']:,.0f} TFLOP/s (dense).")
    else:
        st.caption(f"No roofline: no cluster preset describes {gpu['name']}, so its peaks are unknown.")

SHAPES = {
    "gemm": lambda r: f"{r['m']}×{r['n']}×{r['k']}",
    "grouped_gemm": lambda r: f"{r['groups']}g × {r['m_per_group']}×{r['n']}×{r['k']}",
    "attention": lambda r: f"{r['direction']} s{r['seq']} h{r['heads']} d{r['qk_dim']}{' causal' if r.get('causal') else ''}",
}
for table, shape in SHAPES.items():
    rows = prof.tables.get(table) or []
    if not rows:
        continue
    # One point per measurement: a shape measured several times (several sources, or attention kernels)
    # would stack as bars and read as one kernel above the roofline.
    df = pd.DataFrame([{"shape": shape(r), "dtype": r.get("dtype", "?"), "kernel": r.get("library") or "flash",
                        "TFLOP/s": r["tflops"],
                        "% of peak": 100 * r["tflops"] / peaks.get(r.get("dtype"), 0) if peaks.get(r.get("dtype")) else None}
                       for r in rows])
    by = "kernel" if table == "attention" else "dtype"
    fig = px.scatter(df, x="shape", y="TFLOP/s", color=by, hover_data={"dtype": True, "kernel": True, "% of peak": ":.0f"},
                     category_orders={"shape": list(dict.fromkeys(df["shape"]))},
                     title=f"{table}: measured TFLOP/s by shape ({len(rows)} rows, one point each)",
                     color_discrete_map={"bf16": "#4C78A8", "fp8": "#F58518", "fp16": "#72B7B2"})
    fig.update_traces(marker=dict(size=9, opacity=0.85))
    fig.update_yaxes(rangemode="tozero")
    for dt in sorted(set(df["dtype"])):
        if peaks.get(dt):
            fig.add_hline(y=peaks[dt], line_dash="dash", annotation_text=f"{dt} peak {peaks[dt]:,.0f}",
                          annotation_position="top left",
                          line_color={"bf16": "#4C78A8", "fp8": "#F58518"}.get(dt, "grey"))
    fig.update_layout(height=400, xaxis_title="shape (m×n×k)" if table != "attention" else "shape",
                      yaxis_title="TFLOP/s", margin=dict(t=50, b=10), xaxis_tickangle=-35)
    st.plotly_chart(fig, width="stretch", key=f"cal_{table}")

with st.expander("All rows"):
    for table, rows in prof.tables.items():
        st.markdown(f"**{table}**")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
