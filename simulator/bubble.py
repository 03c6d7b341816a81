"""Closed-form pipeline bubbles.

A pipeline schedule leaves each rank idle for part of the step: the *bubble*.
DualPipe's README tabulates the bubble of the common schedules in units of the
chunk times F (forward chunk), B (full backward chunk), W (its
backward-for-weights part) and F&B (a forward and a backward chunk overlapped):

=========  ==========================
1F1B       (PP-1)(F+B)
ZB1P       (PP-1)(F+B-2W)
DualPipe   (PP/2-1)(F&B+B-3W)
DualPipeV  (PP/2-1)(F&B+B-3W), PP = stages = 2 x devices
=========  ==========================

Interleaved 1F1B with V virtual stages per rank divides the 1F1B bubble by V
(Narayanan et al. 2021, Sec. 2.2.2). These formulas assume F = B - W; the
discrete-event engine shows where that assumption misleads.
"""

from __future__ import annotations

SCHEDULES = ("none", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev")


def closed_form_bubble(
    schedule: str, pp: int, f: float, b: float, w: float, fb: float, vpp: int = 1
) -> float:
    """Per-rank idle time of one step, in the units of f, b, w and fb (``pp`` = ranks).

    For DualPipe the formula is the bubble of the two middle ranks, the largest.
    """
    if schedule == "none" or pp == 1:
        return 0.0
    if schedule == "1f1b":
        return (pp - 1) * (f + b)
    if schedule == "interleaved":
        return (pp - 1) * (f + b) / max(vpp, 1)
    if schedule == "zb1p":
        return (pp - 1) * (f + b - 2 * w)
    if schedule == "dualpipe":
        return (pp / 2 - 1) * (fb + b - 3 * w)
    if schedule == "dualpipev":  # here pp counts devices; the V holds 2*pp stages
        return (pp - 1) * (fb + b - 3 * w)
    raise ValueError(f"schedule: unknown {schedule!r}; allowed: {', '.join(SCHEDULES)}")
