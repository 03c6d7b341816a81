"""Compare plans: the plans added from the What-if page, side by side."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import state

state.plan_controls()

st.title("Compare plans")
plans = state.plans()
name, ov = state.current()
if not plans:
    st.info("No plans yet: press **Add to comparison** on the What-if page. Showing the preset and the current plan.")
    plans = [{"scenario": name, "overrides": []}] + ([{"scenario": name, "overrides": list(ov)}] if ov else [])

editable = pd.DataFrame([{"scenario": p["scenario"], "overrides": " ".join(p["overrides"])} for p in plans])
edited = st.data_editor(
    editable, num_rows="dynamic", width="stretch", key="plans_editor",
    column_config={
        "scenario": st.column_config.SelectboxColumn("scenario", options=state.api.list_scenarios(), required=True),
        "overrides": st.column_config.TextColumn("overrides (space-separated section.field=value)"),
    },
)
rows, errors = [], []
for i, r in edited.iterrows():
    scen = r.get("scenario") or state.DEFAULT_SCENARIO
    ovs = tuple(str(r.get("overrides") or "").split())
    rep, cost, err = state.evaluate(scen, ovs)
    label = f"#{i + 1} {scen}" + (f" ({' '.join(o.split('.', 1)[-1] for o in ovs)})" if ovs else " (preset)")
    if err:
        errors.append(f"{label}: {err}")
        continue
    bd = rep["step_breakdown_s"]
    rows.append({
        "plan": label, "GPU-hours / T tokens": rep["gpu_hours_per_trillion_tokens"],
        "run GPU-hours (M)": cost["total_gpu_hours"] / 1e6, "run cost (M$)": cost["total_usd"] / 1e6,
        "days": cost["days_on_cluster"], "tok/s/GPU": rep["tokens_per_s_per_gpu"], "MFU %": rep["mfu"] * 100,
        "step (s)": rep["step_time_s"], "compute (s)": bd["busy"], "exposed comm (s)": bd["exposed_comm"] + bd["dp_exposed"],
        "bubble (s)": bd["bubble"], "other (s)": bd["optimizer"],
        "peak memory (GiB)": rep["peak_memory_gib"], "HBM (GiB)": rep["hbm_gib"], "fits": rep["fits_in_memory"],
    })
for e in errors:
    st.error(e)
if not rows:
    st.stop()
df = pd.DataFrame(rows)
st.subheader("Key metrics")
st.dataframe(df, hide_index=True, width="stretch", column_config={
    c: st.column_config.NumberColumn(format="%.2f") for c in df.columns if df[c].dtype.kind == "f"
} | {"GPU-hours / T tokens": st.column_config.NumberColumn(format="%,.0f"),
     "tok/s/GPU": st.column_config.NumberColumn(format="%,.0f")})
st.download_button("Download CSV", df.to_csv(index=False).encode(), "gpuhours_plans.csv", "text/csv")

c1, c2 = st.columns(2)
fig = px.bar(df, x="plan", y="run GPU-hours (M)", title="Whole-run GPU-hours (millions)", text_auto=".2f")
fig.update_layout(xaxis_title=None, height=360, margin=dict(t=50, b=10))
c1.plotly_chart(fig, width="stretch", key="cmp_gh")
fig = px.bar(df, x="plan", y="run cost (M$)", title="Whole-run cost (million USD)", text_auto=".2f",
             color_discrete_sequence=["#54A24B"])
fig.update_layout(xaxis_title=None, height=360, margin=dict(t=50, b=10))
c2.plotly_chart(fig, width="stretch", key="cmp_usd")

c1, c2 = st.columns(2)
fig = go.Figure()
for col, colour in (("compute (s)", "#4C78A8"), ("exposed comm (s)", "#F58518"), ("bubble (s)", "#E45756"),
                    ("other (s)", "#72B7B2")):
    fig.add_bar(x=df["plan"], y=df[col], name=col.replace(" (s)", ""), marker_color=colour)
fig.update_layout(barmode="stack", title="Step-time split (s)", yaxis_title="seconds per step", height=380,
                  margin=dict(t=50, b=10))
c1.plotly_chart(fig, width="stretch", key="cmp_split")
fig = px.bar(df, x="plan", y="peak memory (GiB)", title="Peak memory per GPU (GiB)", text_auto=".1f",
             color="fits", color_discrete_map={True: "#4C78A8", False: "#E45756"})
fig.add_hline(y=float(df["HBM (GiB)"].max()), line_dash="dash", annotation_text="HBM")
fig.update_layout(xaxis_title=None, height=380, margin=dict(t=50, b=10))
c2.plotly_chart(fig, width="stretch", key="cmp_mem")

fig = px.scatter(df, x="peak memory (GiB)", y="run cost (M$)", text="plan", color="fits",
                 color_discrete_map={True: "#4C78A8", False: "#E45756"},
                 title="Cost vs peak memory (lower-left is better)")
ok = df[df["fits"]].sort_values("peak memory (GiB)")
front, best = [], float("inf")
for _, r in ok.iterrows():
    if r["run cost (M$)"] < best:
        best = r["run cost (M$)"]
        front.append(r)
if front:
    fr = pd.DataFrame(front)
    fig.add_trace(go.Scatter(x=fr["peak memory (GiB)"], y=fr["run cost (M$)"], mode="lines", name="Pareto front",
                             line=dict(dash="dot", color="grey")))
fig.update_traces(textposition="top center", selector=dict(mode="markers+text"))
fig.update_layout(height=420, margin=dict(t=50, b=10))
st.plotly_chart(fig, width="stretch", key="cmp_pareto")
if st.button("Clear comparison"):
    st.session_state[state.PLANS] = []
    st.rerun()
