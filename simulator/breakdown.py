"""Where a step's time goes: the pacing rank's step cut into parts that add up to it.

A step is the pacing rank's work plus the time it waits. Its work is compute and the
communication compute does not hide; what it waits is the pipeline bubble, the data-parallel
traffic left after the backward and the optimizer step. The compute is cut further by kernel
class, each at the rate it runs on a full GPU:

- dense GEMMs (projections, dense FFN, shared experts, output head), expert GEMMs (the routed
  experts' grouped GEMMs), core attention, memory-bound kernels (norms, activations, quantize,
  permute, residual adds, the loss);
- expert-load imbalance (DES, routing not balanced): the compute the pacing rank's skewed
  micro-batches add over the same schedule simulated at balanced load;
- compute slowdown: what the compute loses beside communication, i.e. the SMs the all-to-all
  kernels hold while a forward-backward pair overlaps them.

Recomputed forward work is inside the classes (``recompute_s`` in the report says how much).
The parts are the pacing rank's; other ranks split their step differently (``stages``)."""

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
    ("expert_imbalance", "expert-load imbalance"),
    ("compute_slowdown", "compute slowdown beside communication"),
    ("exposed_comm", "exposed communication"),
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
    # A difference of equal sums comes out as +-1e-16 rather than 0: shown as 0.
    return {k: 0.0 if abs(v) < 1e-12 else v for k, v in parts.items()}


def chunks_per_stage(schedule: str) -> float:
    """Micro-batches each stage a rank holds runs, as a fraction of the step's micro-batches:
    DualPipe sends half of them down each of its two directions, so each of a rank's two stages
    sees half; every other schedule runs every micro-batch through every stage."""
    return 0.5 if schedule == "dualpipe" else 1.0


def parts_lines(parts: dict[str, float], step_s: float, recompute_s: float | None = None) -> list[tuple[str, str]]:
    """(label, 'seconds  share') rows of the parts, for a printed table; parts under 0.05 % of the
    step are left out, and the recomputed work inside the classes follows as a note."""
    rows = []
    for key, label in PARTS:
        v = parts.get(key, 0.0)
        if step_s > 0 and abs(v) / step_s >= 5e-4:
            rows.append((label, f"{v:8.3f} s  {100 * v / step_s:5.1f} %"))
    if recompute_s and step_s > 0:
        rows.append(("(recompute, inside the above)", f"{recompute_s:8.3f} s  {100 * recompute_s / step_s:5.1f} %"))
    return rows
