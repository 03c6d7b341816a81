"""Validation: predictions against published measurements."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import state  # noqa: F401  (puts the repo on sys.path)

state.plan_controls()


@st.cache_data(show_spinner=False)
def results() -> dict:
    return state.api.validation_rows()


st.title("Validation against published runs")
st.caption("Each published run is re-predicted with its own model, GPUs and plan: the sidebar does not apply on this "
           "page. error % = predicted / measured − 1; MAPE is the mean of its absolute values.")
try:
    out = results()
    rows, mape = out["rows"], out["mape_pct"]
except (state.GpuhoursError, ValueError, OSError) as e:
    state.show_error(e)
    st.stop()
df = pd.DataFrame(rows)
if "note" in df and not df["note"].fillna("").astype(str).str.strip().any():
    df = df.drop(columns="note")  # no run needed a note
scored = df.dropna(subset=["predicted", "measured", "error %"])
c = st.columns(3)
c[0].metric("MAPE", f"{mape:.1f} %" if mape is not None else "—")
c[1].metric("Runs scored", f"{len(scored)} of {len(df)}")
c[2].metric("Within ±10 %", f"{(scored['error %'].abs() <= 10).sum()} runs")
# Fixed widths: the grid sizes a column on its first rows only (it cut 'MFU % (palm 6N+attn)' further down),
# and the six (815 px) fit the 818-px page of a 1280-px window with the sidebar open.
st.dataframe(df, hide_index=True, width="stretch", column_config={
    "run": st.column_config.TextColumn(width=188, help="The run's id in the validation CSV"),
    "description": st.column_config.TextColumn(
        width=260, help="What the run was: the model (dense, or MoE with its active / routed experts per token), "
                        "the GPUs and the source in a few words, from the CSV's own columns"),
    "metric": st.column_config.TextColumn(
        width=148, help="What was measured: throughput, or MFU under the source's own FLOP count"),
    "predicted": st.column_config.NumberColumn(format="%,.1f", width=72),
    "measured": st.column_config.NumberColumn(format="%,.1f", width=75),
    "error %": st.column_config.NumberColumn(format="%+.1f %%", width=72),
    # Only when a run could not be modelled (the public set has none today); wider than the page, it scrolls.
    "note": st.column_config.TextColumn(width=320, help="Why this run could not be modelled, as `gpuhours validate` says"),
})
if not scored.empty:
    lo = float(min(scored["predicted"].min(), scored["measured"].min())) * 0.8
    hi = float(max(scored["predicted"].max(), scored["measured"].max())) * 1.25
    fig = px.scatter(scored, x="measured", y="predicted", color="metric", hover_name="run",
                     hover_data={"description": True, "error %": ":+.1f"}, log_x=True, log_y=True,
                     title="Predicted vs measured (dashed: perfect, dotted: ±20 %)")
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dash", color="grey"))
    for f in (0.8, 1.2):
        fig.add_shape(type="line", x0=lo, y0=lo * f, x1=hi, y1=hi * f, line=dict(dash="dot", color="lightgrey"))
    fig.update_layout(height=480, xaxis_title="measured (tokens/s/GPU or MFU %, log scale)",
                      yaxis_title="predicted (same units, log scale)", margin=dict(t=50, b=10))
    fig.update_xaxes(dtick=1, tickformat=",")
    fig.update_yaxes(dtick=1, tickformat=",")
    st.plotly_chart(fig, width="stretch", key="val_scatter")
if out.get("step_parts_s"):
    # Where each run's predicted step goes, in shares of its step: what the prediction rests on, run by run
    # (a run whose error is large and whose step is mostly one part points at that part's model).
    runs = [r for r in scored["run"] if r in out["step_parts_s"]]
    fig = go.Figure()
    for key, label, legend, colour in state.step_part_styles():
        share = [100 * out["step_parts_s"][r][key] / sum(out["step_parts_s"][r].values()) for r in runs]
        fig.add_bar(y=runs, x=share, name=legend, orientation="h", marker_color=colour,
                    hovertemplate="%{y}<br>" + label + ": %{x:.1f} % of the predicted step<extra></extra>")
    fig.update_layout(barmode="stack", height=120 + 22 * len(runs), margin=dict(t=50, b=10),
                      title="Where each run's predicted step goes (pacing rank, % of the step)",
                      xaxis_title="% of the predicted step", yaxis=dict(autorange="reversed"),
                      legend=dict(orientation="h", y=-0.1, yanchor="top", entrywidth=0.33, entrywidthmode="fraction",
                                  traceorder="normal"))
    st.plotly_chart(fig, width="stretch", key="val_parts")
src = Path(out["source"])
st.caption(f"Source: {src.relative_to(state.ROOT) if src.is_relative_to(state.ROOT) else src}; analytic engine.")
