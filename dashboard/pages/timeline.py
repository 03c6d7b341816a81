"""Timeline: Gantt chart of one training step's pipeline schedule."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import state

state.plan_controls()
from simulator import schedules  # noqa: E402

name, ov = state.current()
st.title("Pipeline timeline")
rep, _cost, err = state.evaluate(name, ov)
if err:
    st.error(err)
    st.stop()

p = rep["plan"]
pp, vpp, sched, m = int(p["pp"]), int(p["vpp"]), p["schedule"], int(rep["microbatches"])
if pp < 2 or sched == "none":
    st.info("This plan has no pipeline parallelism (PP = 1): every GPU runs the whole model; no pipeline to draw.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def analytic_tasks(sched: str, pp: int, mbs: int, vpp: int, f: float, b: float, w: float, fb: float) -> tuple[list, float]:
    tl = schedules.simulate(sched, pp, mbs, schedules.TaskTimes(f, b, min(w, b), fb), vpp)
    rows = []
    for r, tasks in enumerate(tl.ranks):
        for task, s, e in tasks:
            rows.append({"rank": r, "kind": task.kind, "name": task.label(), "start_s": s / 1e3, "end_s": e / 1e3})
    return rows, tl.makespan / 1e3


def valid_count(n: int) -> int:
    """The smallest micro-batch count >= n that the schedule accepts."""
    for k in range(max(1, n), n + 4 * pp + 2):
        try:
            schedules.validate_schedule_args(sched, pp, k, vpp)
            return k
        except ValueError:
            continue
    return m


des_tl = None
des_key = st.session_state.get("des_done")
if des_key == (name, ov):
    try:
        des_tl = state.des_prediction(name, ov)[1]
    except Exception:  # noqa: BLE001 - no DES timeline: fall back to the analytic schedule
        des_tl = None

if des_tl:
    rows = [dict(r, start_s=r["start_s"], end_s=r["end_s"]) for r in des_tl]
    st.caption(f"Discrete-event simulation of **{name}**, {len(rows):,} events.")
    makespan = max(r["end_s"] for r in rows)
else:
    default_n = valid_count(min(m, max(2 * pp, 24)))
    c1, c2 = st.columns([2, 3])
    n = c1.slider("Micro-batches drawn", min_value=min(default_n, m), max_value=m,
                  value=min(default_n, m), help=f"The step has {m} micro-batches; fewer draw faster and "
                                                 "keep warm-up and cool-down visible.")
    n = min(valid_count(n), m) if valid_count(n) <= m else m
    ct = rep["chunk_times_ms"] or rep["stages"][0]["chunk_times_ms"]
    f, b, w, fb = (float(ct.get(k, 0.0)) for k in ("F", "B", "W", "FB"))
    try:
        rows, makespan = analytic_tasks(sched, pp, n, vpp, f, b, w, fb or (f + b))
    except ValueError as e:
        st.error(str(e))
        st.stop()
    c2.markdown(f"Analytic **{sched}** schedule, PP = {pp}" + (f", VPP = {vpp}" if vpp > 1 else "")
                + f", {n} of {m} micro-batches. Chunk times: F {f:.1f} ms · B {b:.1f} ms · W {w:.1f} ms"
                + (f" · F&B {fb:.1f} ms" if sched.startswith("dualpipe") else "")
                + ". Run the discrete-event simulation on the What-if page for a measured-style trace.")

fig = go.Figure()
labels = {"F": "Forward (F)", "B": "Backward (B)", "W": "Weight grad (W)", "FB": "Overlapped F&B", "comm": "Communication"}
for kind in ("F", "B", "W", "FB", "comm"):
    sel = [r for r in rows if r["kind"] == kind]
    if not sel:
        continue
    fig.add_trace(go.Bar(
        base=[r["start_s"] * 1e3 for r in sel], x=[(r["end_s"] - r["start_s"]) * 1e3 for r in sel],
        y=[f"rank {r['rank']}" + (f" · {r['stream']}" if r.get("stream") else "") for r in sel],
        orientation="h", name=labels[kind], marker_color=state.KIND_COLOURS[kind],
        marker_line_width=0.5, marker_line_color="white",
        customdata=[[r["name"], r["start_s"] * 1e3, r["end_s"] * 1e3] for r in sel],
        text=[r["name"] for r in sel] if len(rows) <= 600 else None, textposition="inside",
        insidetextanchor="middle", textfont_size=9,
        hovertemplate="%{y}<br>%{customdata[0]}: %{customdata[1]:.1f}–%{customdata[2]:.1f} ms<extra></extra>",
    ))
ranks = sorted({(r["rank"], r.get("stream") or "") for r in rows})
order = [f"rank {r}" + (f" · {s}" if s else "") for r, s in ranks]
fig.update_layout(
    barmode="overlay", height=max(320, 28 * len(order) + 140), bargap=0.15,
    xaxis=dict(title="time in step (ms)", rangeslider=dict(visible=False), showgrid=True),
    yaxis=dict(title="pipeline rank", categoryorder="array", categoryarray=order[::-1]),
    legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
    margin=dict(l=10, r=10, t=40, b=10), uniformtext_minsize=7, uniformtext_mode="hide",
)
st.plotly_chart(fig, width="stretch", key="gantt")
st.caption(f"Makespan of the drawn micro-batches: {makespan * 1e3:,.1f} ms. Drag to zoom, double-click to reset.")
