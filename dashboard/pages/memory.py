"""Memory: per pipeline stage, what fills each GPU's HBM."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import des_panel, state

state.plan_controls()

name, ov = state.current()
st.title("Memory per pipeline stage")
rep, _c, err = state.evaluate(name, ov)
if err:
    state.show_error(err)
    st.stop()
parts = (("params", "#4C78A8"), ("grads", "#72B7B2"), ("optimizer", "#54A24B"), ("activations", "#F58518"),
         ("transient", "#B279A2"), ("comm_buffers", "#9D755D"))
stages = rep["stages"]
x = [f"rank {s['rank']}" for s in stages]
fig = go.Figure()
for part, colour in parts:
    label = part.replace("_", " ")
    fig.add_bar(x=x, y=[s["memory_gib"].get(part, 0.0) for s in stages], name=label, marker_color=colour,
                hovertemplate=f"{label}: %{{y:.1f}} GiB<extra></extra>")
fig.add_hline(y=rep["hbm_gib"], line_dash="dash", line_color="#E45756",
              annotation_text=f"HBM {rep['hbm_gib']:.1f} GiB", annotation_position="top right",
              annotation_bgcolor="rgba(255,255,255,0.85)", annotation_font_color="#E45756")
top = max(rep["hbm_gib"], max(s["memory_gib"]["total"] for s in stages)) * 1.1
fig.update_layout(barmode="stack", yaxis=dict(title="GiB per GPU", range=[0, top]), xaxis_title="pipeline rank",
                  height=460, legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0, traceorder="normal"),
                  margin=dict(t=40, b=10))
st.plotly_chart(fig, width="stretch", key="mem_bars")
if rep["fits_in_memory"]:
    st.success(f"Fits: peak {rep['peak_memory_gib']:.1f} GiB of {rep['hbm_gib']:.1f} GiB HBM "
               f"({rep['hbm_gib'] - rep['peak_memory_gib']:.1f} GiB headroom).")
else:
    st.error(f"Does not fit: peak {rep['peak_memory_gib']:.1f} GiB > {rep['hbm_gib']:.1f} GiB HBM per GPU. "
             "Try more PP/EP, recompute, or a smaller micro-batch.")


def layers_text(chunks: list[list[str]]) -> str:
    """A stage's layers as counts in order, e.g. ``embed + 3 dense + 1 moe``; chunks split by ``|``."""
    out = []
    for chunk in chunks:
        runs: list[list] = []
        for u in chunk:
            if runs and runs[-1][0] == u:
                runs[-1][1] += 1
            else:
                runs.append([u, 1])
        out.append(" + ".join(u if n == 1 else f"{n} {u}" for u, n in runs))
    return " | ".join(out)


df = pd.DataFrame([{"rank": s["rank"], **{f"{k.replace('_', ' ')} (GiB)": v for k, v in s["memory_gib"].items()},
                    "layers (per virtual stage)": layers_text(s["layers"])} for s in stages])
df = df.drop(columns=[c for c in df.columns if c.endswith("(GiB)") and not df[c].any()])  # e.g. no transient
# GiB with one decimal everywhere (6.1 beside 9.19 read as different precisions), narrow number columns so
# the layer list, the widest cell, is not cut at a 1280-px window
st.dataframe(df, hide_index=True, width="stretch", column_config={
    "rank": st.column_config.NumberColumn(width=50),
    **{c: st.column_config.NumberColumn(c.removesuffix(" (GiB)"), format="%.1f", width=80)
       for c in df.columns if c.endswith("(GiB)")},
    "layers (per virtual stage)": st.column_config.TextColumn(
        width=300, help="Layers held by the rank, in order; '|' separates its virtual stages (interleaved, DualPipe)"),
})
st.caption("Memory in GiB per GPU; a column that is zero on every rank is left out.")

# ---- memory over the step (DES): parameters and states are flat; activations rise with the micro-batches
# in flight and fall as their backward passes free them.
st.subheader("Memory over the step (discrete-event simulation)")
des = des_panel.result(name, ov)
if des is None and st.button(des_panel.BUTTON, key="mem_des", icon=":material/play_arrow:"):
    des = des_panel.run(name, ov)
if des is None:
    st.caption("Run the discrete-event simulation to see each rank's memory through one training step.")
else:
    drep = des[0]
    fig_t = go.Figure()
    for s in drep["stages"]:
        pts = s.get("memory_over_time") or []
        if pts:
            fig_t.add_scatter(x=[t for t, _ in pts], y=[g for _, g in pts], mode="lines", name=f"rank {s['rank']}",
                              line=dict(shape="hv", width=1.5),
                              hovertemplate=f"rank {s['rank']}: %{{y:.1f}} GiB at %{{x:.2f}} s<extra></extra>")
    fig_t.add_hline(y=drep["hbm_gib"] if "hbm_gib" in drep else rep["hbm_gib"], line_dash="dash",
                    line_color="#E45756", annotation_text="HBM", annotation_position="top right")
    fig_t.update_layout(xaxis_title="time in step (s)", yaxis_title="GiB per GPU", height=420,
                        margin=dict(t=30, b=10), legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    st.plotly_chart(fig_t, width="stretch", key="mem_over_time")
    st.caption(f"DES peak {drep['peak_memory_gib']:.1f} GiB per GPU (analytic {rep['peak_memory_gib']:.1f} GiB).")
