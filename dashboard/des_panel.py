"""The discrete-event simulation (DES) as the dashboard runs it: on a button, with progress.

The analytic engine answers every rerun; the DES simulates one step event by
event (every chunk of every micro-batch on every pipeline rank, all-to-all and
P2P flows sharing the links), so it runs only when asked. Its result is cached
per plan and remembered in session state (``state.DES_DONE``), so the What-if
and Timeline pages both show it until the plan changes.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import state

BUTTON = "Run discrete-event simulation"

# (report key, label, scale, format) of the analytic-vs-DES table
ROWS = (
    ("step_time_s", "Step time", 1.0, "{:,.3f} s"),
    ("gpu_hours_per_trillion_tokens", "GPU-hours per trillion tokens", 1.0, "{:,.0f} GPU·h"),
    ("tokens_per_s_per_gpu", "Throughput", 1.0, "{:,.0f} tok/s/GPU"),
    ("mfu", "MFU", 100.0, "{:.1f} %"),
    ("bubble_fraction", "Pipeline bubble", 100.0, "{:.1f} % of step"),
    ("exposed_comm_fraction", "Exposed communication", 100.0, "{:.1f} % of step"),
    ("peak_memory_gib", "Peak memory", 1.0, "{:.1f} GiB"),
)


def result(name: str, ov: tuple[str, ...]) -> tuple[dict, list | None, bytes] | None:
    """The DES (report, timeline, trace) of this plan if it was run, else None."""
    if st.session_state.get(state.DES_DONE) != (name, ov):
        return None
    try:
        return state.des_prediction(name, ov)
    except Exception:  # noqa: BLE001 - a failed run was reported when it ran; nothing to show now
        return None


def run(name: str, ov: tuple[str, ...]) -> tuple[dict, list | None, bytes] | None:
    """Run the DES for this plan under a progress bar; a failure is one ``st.error`` line."""
    bar = st.progress(0.05, text="Discrete-event simulation: building the workload and the schedule…")
    try:
        bar.progress(0.25, text="Discrete-event simulation: simulating one training step…")
        out = state.des_prediction(name, ov)
    except (ImportError, ModuleNotFoundError):
        bar.empty()
        st.info("The discrete-event engine is not available in this build; the numbers come from the analytic engine.")
        return None
    except (state.GpuhoursError, ValueError, RuntimeError) as e:
        bar.empty()
        state.show_error(f"Discrete-event simulation failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return None
    bar.progress(1.0, text="Discrete-event simulation done.")
    bar.empty()
    st.session_state[state.DES_DONE] = (name, ov)
    return out


def comparison(rep: dict, des: dict) -> None:
    """Analytic and DES figures side by side, with units and the relative difference."""
    rows = []
    for key, label, k, fmt in ROWS:
        a, d = rep.get(key), des.get(key)
        if a is None or d is None:
            continue
        diff = f"{(d / a - 1) * 100:+.1f} %" if a else "—"
        rows.append({"metric": label, "analytic": fmt.format(a * k), "DES": fmt.format(d * k), "DES vs analytic": diff})
    # Where each engine's step goes (the pacing rank's parts): which part the two engines disagree on.
    ap, dp = rep.get("step_parts_s", {}), des.get("step_parts_s", {})
    for key, label in state.api.STEP_PARTS:
        if key in ap and key in dp:
            a, d = ap[key], dp[key]
            diff = f"{(d - a) * 1e3:+,.0f} ms" if abs(d - a) >= 5e-4 else "same"
            rows.append({"metric": f"  step part: {label}", "analytic": f"{a:,.3f} s", "DES": f"{d:,.3f} s",
                         "DES vs analytic": diff})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if des.get("peak_memory_gib", 0) > des.get("hbm_gib", float("inf")):
        st.warning(f"The DES peak memory {des['peak_memory_gib']:.1f} GiB exceeds the {des['hbm_gib']:.1f} GiB of HBM.")
