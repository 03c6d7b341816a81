"""Timeline: one training step as a Gantt chart, one row per pipeline rank (and stream).

Two sources: the analytic schedule (each rank's task order with the analytic
chunk times, communication folded in) draws instantly; the discrete-event
simulation (DES), run on a button, draws what it simulated on each rank's
compute, communication and data-parallel streams, and offers the same step as
a Perfetto trace to download.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import des_panel, state

state.plan_controls()

name, ov = state.current()
st.title("Pipeline timeline")
rep, _cost, err = state.evaluate(name, ov)
if err:
    state.show_error(err)
    st.stop()

p = rep["plan"]
pp, vpp, sched, m = int(p["pp"]), int(p["vpp"]), p["schedule"], int(rep["microbatches"])
LABELS = {"F": "Forward (F)", "B": "Backward (B)", "W": "Weight grad (W)", "FB": "Overlapped F&B",
          "comm": "Communication (all-to-all, TP/CP)", "dp": "Data-parallel reduce/gather"}
COLOURS = dict(state.KIND_COLOURS, dp="#EECA3B")


@st.cache_data(show_spinner=False, max_entries=64)
def analytic_tasks(sched: str, pp: int, mbs: int, vpp: int, f: float, b: float, w: float, fb: float) -> tuple[list, float]:
    out = state.api.pipeline_schedule(sched, pp, mbs, vpp, f, b, w, fb)
    rows = [{"rank": t["rank"], "kind": t["kind"], "name": t["name"], "start_s": t["start"] / 1e3,
             "end_s": t["end"] / 1e3} for t in out["tasks"]]
    return rows, out["makespan"] / 1e3


def valid_count(n: int) -> int:
    """The smallest micro-batch count >= n that the schedule accepts (or the step's own count)."""
    for k in range(max(1, n), n + 4 * pp + 2):
        if state.api.schedule_accepts(sched, pp, k, vpp):
            return k
    return m


top = st.columns([3, 2])
if top[1].button(des_panel.BUTTON, icon=":material/play_arrow:", width="stretch",
                 help="Simulate one step event by event; the chart then shows what the DES simulated"):
    with top[1]:
        des_panel.run(name, ov)
des = des_panel.result(name, ov)
source = "DES"
if des and des[1]:
    source = top[0].radio("Source", ("Discrete-event simulation", "Analytic schedule"), horizontal=True,
                          label_visibility="collapsed")
if des and des[1] and source.startswith("Discrete"):
    rows = [dict(r, kind="comm" if r["stream"] == "comm" else r["kind"]) for r in des[1]]
    makespan = max(r["end_s"] for r in rows)
    st.caption(f"Discrete-event simulation of **{name}**: {len(rows):,} intervals on {pp} pipeline "
               f"rank{'s' if pp > 1 else ''}, step {des[0]['step_time_s']:.3f} s "
               f"({des[0]['gpu_hours_per_trillion_tokens']:,.0f} GPU·h per trillion tokens).")
    st.download_button("Download Perfetto trace (JSON)", des[2], f"gpuhours_{name}_des_trace.json",
                       "application/json", icon=":material/download:",
                       help="Open it in ui.perfetto.dev or chrome://tracing: one process per rank, tracks for "
                            "compute, comm, dp and nic (P2P sends, with arrows), and a memory counter.")
    row_px = 22
else:
    if pp < 2 or sched == "none":
        st.info("This plan has no pipeline parallelism (PP = 1): every GPU runs the whole model, so there is no "
                "pipeline schedule to draw. Run the discrete-event simulation to see one step's compute and "
                "communication streams.")
        st.stop()
    default_n = valid_count(min(m, max(2 * pp, 24)))
    c1, c2 = st.columns([2, 3])
    # from the fewest the schedule accepts (one per stage at least, so warm-up and cool-down show) to the step's count
    lo = min(valid_count(pp), default_n, m)
    n = c1.slider("Micro-batches drawn", min_value=lo, max_value=max(lo + 1, m), value=min(default_n, m), disabled=lo >= m,
                  help=f"The step has {m} micro-batches; fewer draw faster and keep warm-up and cool-down visible.")
    n = min(valid_count(int(n)), m)
    ct = rep["chunk_times_ms"] or rep["stages"][0]["chunk_times_ms"]
    f, b, w, fb = (float(ct.get(k, 0.0)) for k in ("F", "B", "W", "FB"))
    try:
        rows, makespan = analytic_tasks(sched, pp, n, vpp, f, b, w, fb or (f + b))
    except ValueError as e:
        state.show_error(e)
        st.stop()
    c2.markdown(f"Analytic **{sched}** schedule, PP = {pp}" + (f", VPP = {vpp}" if vpp > 1 else "")
                + f", {n} of {m} micro-batches. Chunk times: F {f:.1f} ms · B {b:.1f} ms · W {w:.1f} ms"
                + (f" · F&B {fb:.1f} ms" if sched.startswith("dualpipe") else "") + ".")
    row_px = 28

fig = go.Figure()
for kind, label in LABELS.items():
    sel = [r for r in rows if r["kind"] == kind]
    if not sel:
        continue
    fig.add_trace(go.Bar(
        base=[r["start_s"] * 1e3 for r in sel], x=[(r["end_s"] - r["start_s"]) * 1e3 for r in sel],
        y=[f"rank {r['rank']}" + (f" · {r['stream']}" if r.get("stream") else "") for r in sel],
        orientation="h", name=label, marker_color=COLOURS[kind],
        marker_line_width=0.5 if len(rows) <= 2000 else 0, marker_line_color="white",
        customdata=[[r["name"], r["start_s"] * 1e3, r["end_s"] * 1e3] for r in sel],
        text=[r["name"] for r in sel] if len(rows) <= 600 else None, textposition="inside",
        insidetextanchor="middle", textfont_size=9,
        hovertemplate="%{y}<br>%{customdata[0]}: %{customdata[1]:,.1f}–%{customdata[2]:,.1f} ms<extra></extra>",
    ))
STREAM_ORDER = {"": 0, "compute": 0, "comm": 1, "dp": 2}
ranks = sorted({(r["rank"], r.get("stream") or "") for r in rows}, key=lambda x: (x[0], STREAM_ORDER.get(x[1], 3)))
order = [f"rank {r}" + (f" · {s}" if s else "") for r, s in ranks]
fig.update_layout(
    barmode="overlay", height=max(320, row_px * len(order) + 140), bargap=0.15,
    xaxis=dict(title="time in step (ms)", rangeslider=dict(visible=False), showgrid=True, tickformat=",.0f"),
    yaxis=dict(title="pipeline rank · stream" if any(s for _, s in ranks) else "pipeline rank",
               categoryorder="array", categoryarray=order[::-1]),
    legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
    margin=dict(l=10, r=10, t=40, b=10), uniformtext_minsize=7, uniformtext_mode="hide",
)
st.plotly_chart(fig, width="stretch", key="gantt")
st.caption(f"Makespan of what is drawn: {makespan * 1e3:,.1f} ms. Drag to zoom, double-click to reset."
           + ("" if des else " Run the discrete-event simulation for the simulated streams and a Perfetto trace."))
