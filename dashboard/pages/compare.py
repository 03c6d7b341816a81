"""Compare plans: the plans collected from the What-if and Search pages, side by side.

The list lives in session state (``state.PLANS``); the table above the charts
edits it (change a scenario or its overrides, add or delete rows), and every
committed edit is written back to that list, so it survives reruns and page
switches. The metrics table exports as CSV (with each plan's scenario and
overrides, so a row can be reproduced with ``gpuhours predict``); the Pareto
chart shows which plans no other plan beats on both run cost and peak memory.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import state

state.plan_controls()

st.title("Compare plans")
name, ov = state.current()
if not state.plans():
    st.info("No plans yet: press **Add to comparison** on the What-if page or **Send to Compare** on the Search "
            "page. Showing the preset and the current plan; edit the table to start your own list.")
    shown = [{"scenario": name, "overrides": []}] + ([{"scenario": name, "overrides": list(ov)}] if ov else [])
else:
    shown = state.plans()


def records(df: pd.DataFrame) -> list[dict]:
    """Table rows as plans; a new row with no scenario gets the sidebar's."""
    out = []
    for _, r in df.iterrows():
        scen = r.get("scenario")
        scen = scen if isinstance(scen, str) and scen else name
        out.append({"scenario": scen, "overrides": state.split_overrides(str(r.get("overrides") or ""))})
    return out


editable = pd.DataFrame([{"scenario": p["scenario"], "overrides": " ".join(p["overrides"])} for p in shown],
                        columns=["scenario", "overrides"])
# The editor's key changes with every committed edit: the new table starts from the plans in session
# state, so edits survive reruns and page switches (a widget's own state does not).
edited = st.data_editor(
    editable, num_rows="dynamic", width="stretch", key=f"plans_editor_{st.session_state.get(state.PLANS_VERSION, 0)}",
    column_config={
        "scenario": st.column_config.SelectboxColumn("scenario", options=state.api.list_scenarios(), required=True),
        "overrides": st.column_config.TextColumn("overrides (space-separated section.field=value)", width="large"),
    },
)
if records(edited) != shown:
    state.set_plans(records(edited))
    st.rerun()
plans = shown


def pareto(d: pd.DataFrame) -> pd.DataFrame:
    """The plans no other plan beats on both peak memory and run cost, by increasing memory."""
    out, best = [], float("inf")
    for _, r in d.sort_values(["peak memory (GiB)", "run cost (M$)"]).iterrows():
        if r["run cost (M$)"] < best:
            best = r["run cost (M$)"]
            out.append(r)
    return pd.DataFrame(out)


def padded(col: pd.Series, frac: float = 0.15) -> list[float]:
    """An axis range around the values with room for the point labels."""
    lo, hi = float(col.min()), float(col.max())
    pad = (hi - lo) * frac or abs(hi) * 0.02 or 1.0
    return [lo - pad, hi + pad]
rows, errors = [], []
for i, pl in enumerate(plans):
    scen, ovs = pl["scenario"], tuple(pl["overrides"])
    rep, cost, err = state.evaluate(scen, ovs)
    label = f"#{i + 1} {scen}" + (f" ({' '.join(o.split('.', 1)[-1] for o in ovs)})" if ovs else " (preset)")
    if err:
        errors.append(f"{label}: {err}")
        continue
    bd = rep["step_breakdown_s"]
    rows.append({
        "plan": label, "scenario": scen, "overrides": " ".join(ovs), "GPU-hours / T tokens": rep["gpu_hours_per_trillion_tokens"],
        "run GPU-hours (M)": cost["total_gpu_hours"] / 1e6, "run cost (M$)": cost["total_usd"] / 1e6,
        "days": cost["days_on_cluster"], "tok/s/GPU": rep["tokens_per_s_per_gpu"], "MFU %": rep["mfu"] * 100,
        # The step's parts (api.STEP_PARTS) add up to it; the exposed communication column also counts DP's.
        "step (s)": rep["step_time_s"], **{f"{label} (s)": rep["step_parts_s"][key] for key, label in state.api.STEP_PARTS},
        "exposed comm, all (s)": bd["exposed_comm"],
        "peak memory (GiB)": rep["peak_memory_gib"], "HBM (GiB)": rep["hbm_gib"],
        "memory": "fits in HBM" if rep["fits_in_memory"] else "exceeds HBM",
    })
for e in errors:
    state.show_error(e)
if not rows:
    st.stop()
df = pd.DataFrame(rows)
st.subheader("Key metrics")
# The table keeps to the page width: the step split and whole-run GPU-hours are charted below, and every
# column (with each plan's scenario and overrides) is in the CSV.
NUM = st.column_config.NumberColumn
st.dataframe(df, hide_index=True, width="stretch", column_order=[
    "plan", "GPU-hours / T tokens", "run cost (M$)", "days", "tok/s/GPU", "MFU %", "step (s)", "exposed comm, all (s)",
    "peak memory (GiB)"], column_config={
    "plan": st.column_config.TextColumn(width=240, help="Scenario and its overrides; the charts below call it by "
                                                        "its number"),
    "GPU-hours / T tokens": NUM("GPU·h / 1T", format="%,.0f", help="GPU-hours per trillion tokens, steady state"),
    "run cost (M$)": NUM("run M$", format="%.2f", help="Whole-run cost, million USD (batch ramp and phases included)"),
    "days": NUM("days", format="%.1f", help="Wall-clock days of the whole run on the plan's cluster"),
    "tok/s/GPU": NUM("tok/s/GPU", format="%,.0f", help="Training tokens per second per GPU"),
    "MFU %": NUM("MFU %", format="%.1f", help="Model FLOPs utilisation"),
    "step (s)": NUM("step s", format="%.2f", help="Steady-state step time, seconds"),
    "exposed comm, all (s)": NUM("exp. comm s", format="%.2f",
                                 help="Communication on the critical path (all-to-all, TP/CP, P2P, DP), seconds "
                                      "per step; it lies inside the step split's segments"),
    "peak memory (GiB)": NUM("peak GiB", format="%.1f", help="Peak memory per GPU, GiB (HBM on the chart below)"),
})
st.download_button("Download CSV", df.to_csv(index=False).encode(), "gpuhours_plans.csv", "text/csv",
                   icon=":material/download:", help="The columns above, the step split, and each plan's scenario and overrides")

c1, c2 = st.columns(2)
# charts name plans by their number (#1, #2, ...): the full labels are in the table above and on hover
df["#"] = [lbl.split()[0] for lbl in df["plan"]]
fig = px.bar(df, x="#", y="run GPU-hours (M)", title="Whole-run GPU-hours (millions)", text_auto=".2f", hover_name="plan")
fig.update_layout(xaxis_title=None, xaxis_type="category", height=360, margin=dict(t=50, b=10))
c1.plotly_chart(fig, width="stretch", key="cmp_gh")
fig = px.bar(df, x="#", y="run cost (M$)", title="Whole-run cost (million USD)", text_auto=".2f", hover_name="plan",
             color_discrete_sequence=["#54A24B"])
fig.update_layout(xaxis_title=None, xaxis_type="category", height=360, margin=dict(t=50, b=10))
c2.plotly_chart(fig, width="stretch", key="cmp_usd")

c1, c2 = st.columns(2)
fig = go.Figure()
for _, label, legend, colour in state.step_part_styles():
    fig.add_bar(x=df["#"], y=df[f"{label} (s)"], name=legend, marker_color=colour,
                customdata=df["plan"], hovertemplate="%{customdata}<br>" + label + ": %{y:.2f} s<extra></extra>")
fig.update_layout(barmode="stack", title="Where the step goes (s, pacing rank)", yaxis_title="seconds per step", xaxis_title=None,
                  xaxis_type="category", height=380,
                  margin=dict(t=50, b=10))
c1.plotly_chart(fig, width="stretch", key="cmp_split")
MEM_COLOURS = {"fits in HBM": "#4C78A8", "exceeds HBM": "#E45756"}
fig = px.bar(df, x="#", y="peak memory (GiB)", title="Peak memory per GPU (GiB)", text_auto=".1f", hover_name="plan",
             color="memory", color_discrete_map=MEM_COLOURS)
fig.add_hline(y=float(df["HBM (GiB)"].max()), line_dash="dash",
              annotation_text=f"HBM {float(df['HBM (GiB)'].max()):.1f} GiB", annotation_position="top left")
fig.update_layout(xaxis_title=None, xaxis_type="category", height=380, margin=dict(t=50, b=10))
c2.plotly_chart(fig, width="stretch", key="cmp_mem")

# cost in millions, to the $1k when the plans differ by less than $100k ("$4.055 M", not "4,055.0 thousand")
spread = float(df["run cost (M$)"].max() - df["run cost (M$)"].min())
df["cost"] = df["run cost (M$)"]
fig = px.scatter(df, x="peak memory (GiB)", y="cost", text="#", color="memory", hover_name="plan",
                 color_discrete_map=MEM_COLOURS, title="Run cost against peak memory (lower-left is better)")
front = pareto(df[df["memory"] == "fits in HBM"])
if len(front) > 1:
    fig.add_trace(go.Scatter(x=front["peak memory (GiB)"], y=front["run cost (M$)"], mode="lines",
                             name="Pareto front", line=dict(dash="dot", color="grey", shape="hv"), hoverinfo="skip"))
fig.update_traces(textposition="bottom center", marker=dict(size=11), selector=dict(mode="markers+text"))
fig.update_xaxes(range=padded(pd.concat([df["peak memory (GiB)"], df["HBM (GiB)"]])), title="peak memory per GPU (GiB)")
fig.update_yaxes(range=padded(df["cost"]), title="whole-run cost (USD)", tickprefix="$", ticksuffix=" M",
                 tickformat=",.3f" if 0 < spread < 0.1 else ",.2f")
fig.add_vline(x=float(df["HBM (GiB)"].max()), line_dash="dash", line_color="#E45756", annotation_text="HBM")
fig.update_layout(height=420, margin=dict(t=50, b=10), legend_title_text="")
st.plotly_chart(fig, width="stretch", key="cmp_pareto")
if state.plans() and st.button("Clear comparison", icon=":material/delete:"):  # nothing stored: nothing to clear
    state.set_plans([])
    st.rerun()
