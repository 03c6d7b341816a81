"""Sensitivity: which inputs move the GPU-hours most (a tornado chart).

Each input is moved down and up one at a time, the rest held at the sidebar's
values, and the steady-state GPU-hours per trillion tokens re-predicted with
the analytic engine: IB and NVLink bandwidth (x0.5, x2), kernel efficiency
(x0.8, x1.2), routing skew (Zipf s 0.2, 0.5), communication SMs and the
micro-batch. Bars start at the current prediction; the longest is the input
the answer depends on most. Beside it, the prediction's two error bands: how
published runs fared against our predictions of them, and how much the
calibration profile's own measurements disagree (simulator/uncertainty.py).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import state

state.plan_controls()

name, ov = state.current()
st.title("Sensitivity")
try:
    # a few seconds on a large model (a dozen re-predictions and the calibration band): say so, not a blank page
    with st.spinner("Moving each input down and up, one at a time…"):
        sens = state.sensitivity(name, ov)
        bands = state.prediction_bands(name, ov)
except (state.GpuhoursError, ValueError) as e:
    state.show_error(e)
    st.stop()
base = sens["base"]
c = st.columns([1, 2])
c[0].metric("GPU-hours per trillion tokens", f"{base:,.0f} GPU·h", help="Steady-state step, analytic engine")
v, cal = bands["validation"], bands["calibration"]
c[1].metric("Validation band", f"{v['low']:,.0f} – {v['high']:,.0f} GPU·h",
            help=v["method"])
c[1].caption(f"Published runs took {v['ratio_low']:.2f}x – {v['ratio_high']:.2f}x the GPU-hours we predicted "
             f"for them (10th–90th percentile of {v['rows']} runs): an empirical band, not a confidence interval.")
if cal:
    c[1].metric("Calibration band", f"{cal['low']:,.0f} – {cal['high']:,.0f} GPU·h", help=cal["method"])
    c[1].caption(f"Profile {cal['profile']}: each kernel table moved by its leave-one-out error ("
                 + ", ".join(f"{s['table']} {s['spread_pct']:.0f} %" for s in cal["spreads"][:3]) + ").")

# sidebar labels for the inputs (the field name stays in the table below)
NAMES = {"cluster.ib_gbps": "IB bandwidth", "cluster.nvlink_gbps": "NVLink bandwidth", "kernel efficiency":
         "Kernel efficiency", "routing skew": "Routing skew", "plan.comm_sms": "SMs for communication",
         "plan.micro_batch": "Micro-batch", "plan.attention_kernel": "Attention kernel"}


def move(label: str) -> str:
    """``x0.5 (25)`` -> ``×0.5 (25)``."""
    return "×" + label[1:] if label[:1] == "x" and label[1:2].isdigit() else label


def moved(r: dict, side: str) -> str:
    """A move's label, marked where the moved plan does not fit in memory (its GPU-hours price a plan that
    cannot run; the notes below give its peak)."""
    return move(r[f"{side}_label"]) + (", does not fit" if r.get(f"{side}_fits") is False else "")


rows = [r for r in sens["rows"] if r["low"] is not None or r["high"] is not None][::-1]  # largest swing on top
fig = go.Figure()
for side, colour, label in (("high", "#F58518", "up move"), ("low", "#4C78A8", "down move")):
    sel = [r for r in rows if r[side] is not None]
    fig.add_bar(
        y=[NAMES.get(r["input"], r["input"]) for r in sel], x=[r[side] - base for r in sel], base=[base] * len(sel),
        orientation="h", name=label, marker_color=colour, text=[moved(r, side) for r in sel],
        textposition="outside", cliponaxis=False,
        customdata=[[moved(r, side), r[side], 100 * (r[side] / base - 1)] for r in sel],
        hovertemplate="%{y}, %{customdata[0]}: %{customdata[1]:,.0f} GPU·h (%{customdata[2]:+.1f} %)<extra></extra>")
fig.add_vline(x=base, line_color="#333", line_width=1, annotation_text=f"now {base:,.0f}",
              annotation_position="top")
fig.update_layout(barmode="group", bargap=0.25, bargroupgap=0.05, height=max(300, 70 * len(rows) + 140),
                  title="How GPU-hours per trillion tokens move when one input moves",
                  xaxis=dict(title="GPU-hours per trillion tokens", tickformat=",.0f"), yaxis_title=None,
                  legend=dict(orientation="h", y=-0.2, traceorder="reversed"), margin=dict(t=60, b=10, l=10, r=60))
st.plotly_chart(fig, width="stretch", key="tornado")

table = [{"input": f"{NAMES.get(r['input'], r['input'])} ({r['input']})" if r["input"] in NAMES and "." in r["input"]
          else NAMES.get(r["input"], r["input"]), "down move": moved(r, "low"),
          "GPU·h after down": f"{r['low']:,.0f} ({100 * (r['low'] / base - 1):+.1f} %)" if r["low"] is not None else "skipped",
          "up move": moved(r, "high"),
          "GPU·h after up": f"{r['high']:,.0f} ({100 * (r['high'] / base - 1):+.1f} %)" if r["high"] is not None else "skipped"}
         for r in sens["rows"]]
st.dataframe(table, hide_index=True, width="stretch")
for n in sens["notes"]:
    st.caption(state.plain(n))
st.caption("One input at a time, the others at the sidebar's values; kernel efficiency scales every compute and "
           "memory-bound throughput of the calibration profile, not the collectives.")
