"""Where a step's time goes: the pacing rank's step cut into parts that add up to it.

A step is the pacing rank's work plus the time it waits. Its work is compute and the
communication compute does not hide; what it waits is the pipeline bubble, the data-parallel
traffic left after the backward and the optimizer step. The compute is cut further by kernel
class, each at the rate it runs on a full GPU:

- dense GEMMs (projections, dense FFN, shared experts, output head), expert GEMMs (the routed
  experts' grouped GEMMs), core attention, memory-bound kernels (norms, activations, quantize,
  permute, residual adds, the loss);
- expert-load imbalance (routing not balanced): the compute the most loaded expert rank adds over
  balanced load (the DES: the pacing rank's compute against the same step simulated balanced); the
  skewed all-to-all's extra time shows under exposed communication;
- compute slowdown: what the compute loses beside communication, i.e. the SMs the all-to-all
  kernels hold while a forward-backward pair overlaps them.

Recomputed forward work is inside the classes (``recompute_s`` in the report says how much).
The parts are the pacing rank's; other ranks split their step differently (``stages``). The bubble
is the rank's idle time: in the DES also its wait for the first parameter all-gather."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .analytic import PassTimes

# (key in the report's ``step_parts_s``, label), in the order the parts are shown.
PARTS = (
    ("dense_gemm", "dense GEMMs"),
    ("expert_gemm", "expert GEMMs"),
    ("attention", "core attention"),
    ("memory_bound", "memory-bound kernels"),
    ("expert_imbalance", "expert-load imbalance (compute)"),
    ("compute_slowdown", "compute slowdown beside communication"),
    ("exposed_comm", "exposed communication (all-to-all, TP/CP, P2P)"),
    ("bubble", "pipeline bubble"),
    ("dp_exposed", "data-parallel traffic exposed"),
    ("optimizer", "optimizer step"),
)


def step_parts(work: PassTimes, compute_s: float, busy_s: float, bubble_s: float, dp_exposed_s: float,
               optimizer_s: float, balanced_compute_s: float | None = None) -> dict[str, float]:
    """The step's parts in seconds (they add up to busy + bubble + DP exposed + optimizer, the step).

    ``work``: the pacing rank's kernel time over the step at full SMs and balanced expert load, by
    class (PassTimes' class fields, summed over every chunk it runs); ``compute_s``: its compute as
    run, at the SMs it had; ``balanced_compute_s``: the same at balanced expert load (None: the load
    was balanced); ``busy_s``: compute plus the communication on its critical path."""
    classes = {"dense_gemm": work.gemm, "expert_gemm": work.grouped_gemm, "attention": work.attention,
               "memory_bound": work.memory_bound}
    balanced = compute_s if balanced_compute_s is None else balanced_compute_s
    parts = {**classes, "expert_imbalance": compute_s - balanced, "compute_slowdown": balanced - sum(classes.values()),
             "exposed_comm": busy_s - compute_s, "bubble": bubble_s, "dp_exposed": dp_exposed_s,
             "optimizer": optimizer_s}
    # A difference of equal sums comes out as +-1e-16 rather than 0, and the DES rounds each chunk to whole
    # nanoseconds (+-1e-7 s over a step): under a microsecond is 0.
    return {k: 0.0 if abs(v) < 1e-6 else v for k, v in parts.items()}


def parts_lines(parts: dict[str, float], step_s: float, recompute_s: float | None = None) -> list[tuple[str, str]]:
    """(label, 'seconds  share') rows of the non-zero parts, for a printed table, then the recomputed
    work inside the kernel classes as a note (seconds only: it is not a further part)."""
    rows = []
    for key, label in PARTS:
        v = parts.get(key, 0.0)
        if v and step_s > 0:
            rows.append((label, f"{v:8.3f} s  {100 * v / step_s:5.1f} %"))
    if recompute_s:
        rows.append(("(of the kernels, recompute)", f"{recompute_s:8.3f} s"))
    return rows
