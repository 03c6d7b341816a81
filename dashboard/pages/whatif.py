"""What-if: headline metrics of the current plan against the unmodified preset."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import streamlit as st

from dashboard import des_panel, state

state.plan_controls()

name, ov = state.current()
st.title("What-if")
st.caption(f"Scenario **{name}** — change the plan in the sidebar; deltas are against the unmodified preset.")

rep, cost, err = state.evaluate(name, ov)
base, base_cost, base_err = state.evaluate(name, ())
if err:
    state.show_error(err)
    st.stop()
if base_err:  # preset itself broken: show values without deltas
    base, base_cost = rep, cost


def delta(cur: float, ref: float, fmt: str, text=None) -> str | None:
    """The signed difference as ``fmt`` (or ``text(d)``) writes it; None where there is none."""
    d = cur - ref
    if abs(d) <= 1e-9 * max(1.0, abs(ref)):
        return None
    out = fmt.format(text(d) if text else d)
    return out if re.search(r"[1-9]", out) else None  # "-0.0 pp": no difference at the precision shown


c = st.columns(4)
gh, gh0 = rep["gpu_hours_per_trillion_tokens"], base["gpu_hours_per_trillion_tokens"]
# Values keep their unit in the label: four to a row at a 1280-px window, a unit in the value gets cut ("141,980 G…").
c[0].metric("GPU-hours per trillion tokens", f"{gh:,.0f}", delta(gh, gh0, "{:+,.0f} GPU·h"),
            delta_color="inverse", help="Steady-state step, analytic engine")
try:
    bands = state.prediction_bands(name, ov)
except (state.GpuhoursError, ValueError, OSError):
    bands = None
if bands:
    v, cal = bands["validation"], bands["calibration"]
    # Said on the card, not only in its help: where the runs took more than we predict for all of them, the
    # band lies wholly above the estimate it qualifies.
    text = (f"validation band {v['low']:,.0f} – {v['high']:,.0f} (published runs took {v['ratio_low']:.2f}x – "
            f"{v['ratio_high']:.2f}x our prediction of them)")
    if cal:
        text += f"; calibration band {cal['low']:,.0f} – {cal['high']:,.0f}"
    c[0].caption(text + " GPU·h: empirical error bands, not confidence intervals",
                 help=f"Validation band: published runs took {v['ratio_low']:.2f}x to {v['ratio_high']:.2f}x the "
                      f"GPU-hours we predicted for them (10th to 90th percentile of {v['rows']} runs of "
                      "`gpuhours validate`). Calibration band: every kernel table of the profile moved by its "
                      "median leave-one-out error. The Sensitivity page shows both in full.")
tokT = cost["tokens"] / 1e12
c[1].metric("Days on this cluster",
            f"{cost['days_on_cluster']:,.1f} days",
            delta(cost["days_on_cluster"], base_cost["days_on_cluster"], "{:+,.1f} days"), delta_color="inverse",
            help=f"{tokT:g} T tokens on {rep['num_gpus']:,} GPUs, batch ramp included")
c[2].metric("Run cost", state.fmt_usd(cost["total_usd"]),
            delta(cost["total_usd"], base_cost["total_usd"], "{}", state.fmt_usd_delta), delta_color="inverse",
            help=f"{cost['total_gpu_hours'] / 1e6:,.3f} M GPU-hours incl. batch ramp")
c[3].metric("Throughput, tokens/s per GPU", f"{rep['tokens_per_s_per_gpu']:,.0f}",
            delta(rep["tokens_per_s_per_gpu"], base["tokens_per_s_per_gpu"], "{:+,.0f} tok/s/GPU"))
c = st.columns(4)
c[0].metric("MFU", f"{rep['mfu'] * 100:.1f} %", delta(rep["mfu"] * 100, base["mfu"] * 100, "{:+.1f} pp"))
c[1].metric("Pipeline bubble, % of step", f"{rep['bubble_fraction'] * 100:.1f} %",
            delta(rep["bubble_fraction"] * 100, base["bubble_fraction"] * 100, "{:+.1f} pp"),
            delta_color="inverse")
c[2].metric("Exposed comm, % of step", f"{rep['exposed_comm_fraction'] * 100:.1f} %",
            delta(rep["exposed_comm_fraction"] * 100, base["exposed_comm_fraction"] * 100, "{:+.1f} pp"),
            delta_color="inverse", help="Communication not hidden behind compute (all-to-all, TP/CP, P2P, DP)")
c[3].metric("Peak memory / HBM, GiB", f"{rep['peak_memory_gib']:.1f} / {rep['hbm_gib']:.1f}",  # unit in the label: the value is not cut
            delta(rep["peak_memory_gib"], base["peak_memory_gib"], "{:+.1f} GiB"), delta_color="inverse")
if not rep["fits_in_memory"]:
    st.warning(f"Does not fit: peak {rep['peak_memory_gib']:.1f} GiB > {rep['hbm_gib']:.1f} GiB HBM per GPU.")
# Warnings that change what the figures above mean (a mechanism priced cheaper than measured) stand here, not
# among the modelling warnings at the foot of the page.
headline = state.headline_warnings(name, ov)
for w in headline:
    st.warning(state.plain(w), icon=":material/warning:")

left, right = st.columns([3, 2])
with left:
    bd = rep["step_breakdown_s"]
    # The parts add up to the step: kernel classes at full-GPU rates, skewed expert load, what compute loses
    # beside communication, the communication left on the critical path, the bubble, DP traffic, the optimizer.
    parts = rep["step_parts_s"]
    fig = go.Figure()
    for key, lbl, legend, col in state.step_part_styles():  # (not `name`: the page's scenario name)
        fig.add_bar(y=["step"], x=[parts[key]], name=legend, orientation="h", marker_color=col,
                    hovertemplate=f"{lbl}: %{{x:.3f}} s (%{{customdata:.1f}} % of the step)<extra></extra>",
                    customdata=[100 * parts[key] / rep["step_time_s"]])
    # Ten parts: the legend in two columns under the bar, clear of the axis title.
    fig.update_layout(barmode="stack", height=360, margin=dict(l=10, r=10, t=40, b=10),
                      title=f"Step time {rep['step_time_s']:.2f} s — where it goes (pacing rank)", xaxis_title="seconds",
                      legend=dict(orientation="h", y=-0.3, yanchor="top", traceorder="normal", entrywidth=0.5,
                                  entrywidthmode="fraction"))
    st.plotly_chart(fig, width="stretch", key="step_split")
    st.caption(f"Kernels at full-GPU rates; recomputed work inside them: {rep.get('recompute_s', 0.0):.3f} s. Communication "
               f"hidden behind compute: {bd['hidden_comm']:.3f} s.")
with right:
    p = rep["plan"]
    st.markdown(
        f"**Plan**: TP {p['tp']} · PP {p['pp']} · DP {rep.get('dp', p['dp'])} · EP {p['ep']} · CP {p['cp']} · "
        f"{p['schedule']} · micro-batch {p['micro_batch']} × {rep['microbatches']} · "
        f"{p['precision']} · recompute {p['recompute']}")
    st.markdown(f"**Step**: {rep['step_time_s']:.2f} s · overlap of comm {rep['overlap_ratio'] * 100:.0f} % · "
                f"${rep['usd_per_trillion_tokens'] / 1e3:,.0f} k per T tokens")
    st.markdown(f"**Params**: {state.fmt_big(rep['total_params'])} total, "
                f"{state.fmt_big(rep['activated_params'])} activated")

b1, b2 = st.columns(2)
if b1.button("Add to comparison", icon=":material/add:", width="stretch"):
    new = state.add_plans([{"scenario": name, "overrides": list(ov)}])
    st.toast(f"Added plan #{len(state.plans())} to the comparison" if new else "This plan is already in the comparison")
des = None
if b2.button(des_panel.BUTTON, icon=":material/play_arrow:", width="stretch",
             help="Simulate one step event by event (pipeline, all-to-all, links); takes a few seconds"):
    des = des_panel.run(name, ov)
des = des or des_panel.result(name, ov)
if des:
    st.subheader("Discrete-event simulation")
    des_panel.comparison(rep, des[0])
    st.page_link("pages/timeline.py", label="See the simulated step on the Timeline page (Gantt chart, Perfetto trace)",
                 icon=":material/view_timeline:")

others = [w for w in rep["warnings"] if w not in headline]
if others:
    with st.expander(f"{len(others)} {'more ' if headline else ''}modelling warnings"):
        for w in others:
            st.markdown(f"- {state.plain(w)}")
