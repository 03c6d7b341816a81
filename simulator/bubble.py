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
(Narayanan et al. 2021, Sec. 2.2.2). These formulas assume F = B - W and that
every rank takes the same times; the discrete-event engine shows where that
misleads. For strict 1F1B on ranks whose times differ,
:func:`one_f_one_b_makespan` gives the step itself.
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


def one_f_one_b_makespan(f: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...],
                         microbatches: int, p2p: float = 0.0) -> float:
    """The step of strict 1F1B when the ranks' chunk times differ (``f[r]``, ``b[r]``: rank r's forward and
    full backward of one micro-batch; ``p2p``: one hop between neighbours), for ``microbatches >= len(f)``.

    The table above assumes every rank takes the same F and B. A real pipeline does not: the first rank
    holds the embedding, the last the output head and loss, a MoE model's first stage its dense layers.
    Then ``(M + PP - 1) max_r(F_r + B_r)`` overstates the step, because the fill and the drain run through
    the other, faster ranks. The step is the longest path through the schedule's dependencies, and two
    kinds of path dominate it:

    * **Through one rank s** that runs its own M forwards and backwards back to back: the first
      micro-batch's forward reaches it through the ranks before it, and the last backward drains back
      through them (``sum_{r<s}(F_r + B_r) + 2 s p2p``). On rank s the first backward waits for the
      round trip below it, ``D_s = sum_{r>s}(F_r + B_r) + 2(PP-1-s) p2p``, less the ``w = PP-1-s`` warm-up
      forwards it runs meanwhile; symmetrically the last backward waits ``D_s`` less the ``w`` cool-down
      backwards: ``M (F_s + B_s) + max(0, D_s - w F_s) + max(0, D_s - w B_s)``.
    * **Round a loop from rank s down to a rank e and back.** In the steady state a forward goes down from
      s to e, rank e then runs the backward it owes next (its own order: the loop need not reach the last
      rank), and that gradient climbs back to s, whose next forward waits for it; e - s + 1 micro-batches
      advance per loop, so a micro-batch takes at least
      ``L_s = max_e (sum_{s<=r<=e}(F_r + B_r) + 2(e-s) p2p) / (e - s + 1)``; past the fill and the drain (the
      first kind's waits hold PP + 1 micro-batches' worth) each of the other M - PP - 1 pays
      ``L_s - (F_s + B_s)`` more where that is positive. With equal ranks this is the steady state's two
      hops a micro-batch of :func:`simulator.schedules.p2p_hops`. Loops that end before the last rank
      matter where it is lighter than the ranks before it (it holds fewer layers and the head): its loop
      has slack, theirs does not. O(PP^2) additions: PP is at most a few dozen.

    Against the list scheduler given per-rank times (:func:`simulator.schedules.simulate`,
    ``tests/test_schedules.py``): exact without P2P when one rank, or the first and the last, differs
    from the rest; with P2P at most 2 hops over its count. With every rank different it can be a few
    percent short (paths that wait on two slow ranks, not taken here)."""
    pp = len(f)
    if len(b) != pp or microbatches < pp:
        raise ValueError(f"one_f_one_b_makespan: needs len(b) == len(f) and microbatches >= {pp}, "
                         f"got {len(b)} and {microbatches}")
    fb = [x + y for x, y in zip(f, b)]
    step = up = 0.0  # up: the fill and drain through the ranks before s
    below = sum(fb)  # sum over r >= s
    for s in range(pp):
        w = pp - 1 - s
        below -= fb[s]
        d = below + 2 * w * p2p
        # The loops from s down to rank e and back, e <= PP - 1: a micro-batch's forward goes down, rank e
        # turns to the backward it owes (its resource order, not only the last rank's), and the gradient
        # climbs back; e - s + 1 micro-batches advance per loop. A light last rank leaves the loop through it
        # slack, while a loop through the heavy ranks before it still pays its hops.
        loop, run = 0.0, 0.0
        for e in range(s, pp):
            run += fb[e]
            loop = max(loop, (run + 2 * (e - s) * p2p) / (e - s + 1))
        step = max(step, up + microbatches * fb[s] + max(0.0, d - w * f[s]) + max(0.0, d - w * b[s])
                   + max(0, microbatches - pp - 1) * max(0.0, loop - fb[s]))
        up += fb[s] + 2 * p2p
    return step
