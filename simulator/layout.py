"""Pipeline layout: which layers form each stage, and which stages each rank holds.

A pipeline cuts the model's ordered layer units (embedding, blocks, head, MTP)
into contiguous *stages*. Schedules differ in how many stages there are and
how they map to ranks:

- 1F1B / ZB1P: PP stages, rank r holds stage r.
- Interleaved: PP*V stages, rank r holds stages r, r+PP, r+2PP, ...
- DualPipe: PP stages, rank r holds stage r and stage PP-1-r (two parameter
  copies: both pipeline directions run through every rank).
- DualPipeV: 2*PP stages on PP ranks, rank r holds stages r and 2PP-1-r.

``uniform`` splitting gives every stage the same number of transformer blocks
(Megatron's default, embedding and head riding on the end stages);
``balanced`` cuts where the cost per stage (measured by a cost function, e.g.
the op timer) is most even, the way careful practitioners place the heavy
embedding, head and MTP layers.
"""

from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate
from typing import Callable, Sequence, TypeVar

try:  # the balanced split's bisection in C (simulator/_partition.c), built by `pip install`; the Python reference
    # (_bisect_cuts) where it is None, which tests compare it with
    from simulator._partition import cuts as _cuts_in_c
except ImportError:  # pragma: no cover (a source tree run without installing)
    _cuts_in_c = None

T = TypeVar("T")


def num_stages(schedule: str, pp: int, vpp: int) -> int:
    if schedule == "interleaved":
        return pp * vpp
    if schedule == "dualpipev":
        return 2 * pp
    return pp


def rank_stages(schedule: str, pp: int, vpp: int, rank: int) -> list[int]:
    """The stage indices held by one pipeline rank, in chunk order."""
    if schedule == "interleaved":
        return [rank + v * pp for v in range(vpp)]
    if schedule == "dualpipe":
        return [rank, pp - 1 - rank]
    if schedule == "dualpipev":
        return [rank, 2 * pp - 1 - rank]
    return [rank]


@lru_cache(maxsize=256)
def _stage_ranks(schedule: str, pp: int, vpp: int) -> tuple[int, ...]:
    out = [0] * num_stages(schedule, pp, vpp)
    for r in range(pp):
        for s in rank_stages(schedule, pp, vpp, r):
            out[s] = r
    return tuple(out)


def route_rank(schedule: str, pp: int, vpp: int, rank: int, stage: int, other: int) -> int:
    """The rank that runs stage ``other`` for the micro-batches that ``rank`` runs at ``stage``.

    Every schedule but DualPipe holds each stage on one rank. DualPipe holds each on two, one per
    direction: a micro-batch that enters at rank 0 runs stage s on rank s, one that enters at rank
    PP-1 runs it on rank PP-1-s, and which one a rank runs at ``stage`` tells the direction (its
    first chunk, stage == rank, is the one entering at rank 0). So the two middle ranks, which hold
    stages PP/2-1 and PP/2 both, still pass every micro-batch between them."""
    if schedule == "dualpipe":
        return other if stage == rank else pp - 1 - other
    return _stage_ranks(schedule, pp, vpp)[other]


def stages_per_rank(schedule: str, vpp: int) -> int:
    """How many stages (chunks) one rank holds: DualPipe and DualPipeV two, interleaved ``vpp``, else one."""
    return 2 if schedule in ("dualpipe", "dualpipev") else (vpp if schedule == "interleaved" else 1)


def visits_per_stage(schedule: str) -> float:
    """The share of a step's micro-batches that each stage a rank holds runs. DualPipe's two stages on
    a rank are the same model's, one per direction, and half the micro-batches go each way, so each
    sees half; every other schedule runs every micro-batch through every stage (DualPipeV's V passes
    through both of a rank's stages, interleaving through all its virtual stages)."""
    return 0.5 if schedule == "dualpipe" else 1.0


def chunks_per_microbatch(schedule: str, vpp: int) -> float:
    """How many of a rank's chunks one micro-batch runs through in one pass: its stages held x the
    share each sees (interleaved: vpp; DualPipeV: 2; DualPipe, 1F1B, ZB1P: 1)."""
    return stages_per_rank(schedule, vpp) * visits_per_stage(schedule)


def split_uniform(units: Sequence[str], stages: int) -> list[list[str]]:
    """Equal numbers of blocks per stage; embedding on the first, head/MTP on the last."""
    blocks = [u for u in units if u in ("dense", "moe")]
    head = [u for u in units if u not in ("dense", "moe", "embed")]
    base, extra = divmod(len(blocks), stages)
    out: list[list[str]] = []
    i = 0
    for s in range(stages):
        n = base + (1 if s < extra else 0)
        out.append(blocks[i : i + n])
        i += n
    out[0] = ["embed"] + out[0]
    out[-1] = out[-1] + head
    return out


def split_balanced(units: Sequence[T], stages: int, cost: Callable[[T], float]) -> list[list[T]]:
    """Contiguous partition minimizing the most expensive stage (exact, by binary search
    over the bottleneck with a greedy feasibility check). Every stage gets at least one unit
    (units are whatever ``cost`` prices: names, or positions where a unit's place matters).
    Where several splits are equally balanced, which one comes back follows the bisection's last
    limit and the prefix sums' rounding (session 30's bracket changed it for some synthetic lists,
    e.g. 58 equal units over 16 stages; for none of 25,512 preset model splits)."""
    costs = [cost(u) for u in units]
    n = len(units)
    if stages >= n:
        return [[u] for u in units] + [[] for _ in range(stages - n)]

    # Hot path (a plan search splits ~1,400 shapes a worker): the bisection runs in C where `pip install` built it.
    pre = list(accumulate(costs, initial=0.0))
    best = (_cuts_in_c or _bisect_cuts)(pre, stages, max(costs))
    assert best is not None
    bounds = [0] + best + [n]
    parts = [list(units[a:b]) for a, b in zip(bounds, bounds[1:])]
    while len(parts) < stages:  # pad (only when costs allow fewer stages): split the largest
        j = max(range(len(parts)), key=lambda k: len(parts[k]))
        parts[j : j + 1] = [parts[j][: len(parts[j]) // 2], parts[j][len(parts[j]) // 2 :]]
    return parts


def _bisect_cuts(pre: list[float], stages: int, top: float) -> list[int] | None:
    """The cut indices of :func:`split_balanced` over units of prefix sums ``pre`` (their largest ``top``), fewer
    than ``stages`` of them where fewer stages hold the units; None where no limit fits. The reference for
    simulator/_partition.c, which runs the same limits and comparisons (tests run both on random lists).

    The bottleneck is bisected between at least the largest unit and the mean stage, and the mean stage plus
    the largest unit, within which the greedy fits (each stage it closes then holds more than the mean, so it
    closes fewer than ``stages``): a bracket ~60 times narrower than [largest unit, everything] for
    DeepSeek-V3 over 16 stages. A stage's end is found by bisecting the prefix sums, not by walking its units."""
    n = len(pre) - 1

    def fits(limit: float) -> list[int] | None:
        """The greedy cuts: each stage takes units while their sum stays within ``limit``, leaving one unit for
        each stage after it; None where that takes more than ``stages`` stages."""
        cuts, i = [], 0
        for used in range(1, stages + 1):
            j = min(bisect_right(pre, pre[i] + limit) - 1, n - (stages - used))
            if j <= i:  # a unit over the limit
                return None
            if j >= n:
                return cuts
            cuts.append(j)
            i = j
        return None

    total = pre[-1]
    lo, hi = max(top, total / stages), min(total, total / stages + top)
    best = fits(hi)
    if best is None:  # rounding at the bracket's edge: the whole model in one stage always fits
        hi = total
        best = fits(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        cuts = fits(mid)
        if cuts is not None:
            best, hi = cuts, mid
        else:
            lo = mid
        if hi - lo <= 1e-9 * hi:
            break
    return best


def inflight_by_chunk(schedule: str, pp: int, vpp: int, microbatches: int, rank: int,
                      pairs: bool = False) -> tuple[tuple[int, ...], ...]:
    """Micro-batches a rank holds activations for, per chunk, at the moments it could peak.

    A rank's chunks may hold unequal activations: under DualPipe rank 0 runs the first stage
    of one direction (many micro-batches in flight) and the last stage of the other, which
    carries the output head and MTP (few in flight). Counting stage units (PP+1) would charge
    the heavy last stage as often as the first. Walking the
    rank's task order instead (activations taken when a forward starts, freed when its full
    backward or its weight part ends, as the DES does), the in-flight count per chunk after
    every forward is one candidate; the peak is the largest of ``counts . bytes_per_chunk``
    over the candidates that no other candidate dominates (the list returned). ``pairs``:
    Megatron's forward-backward pairs (``schedules.build_schedule``), one warm-up forward more.

    Past the warm-up a schedule's steady phase repeats itself, so the peaks of M micro-batches are
    those of a shorter schedule of the same kind (:func:`steady_microbatches`; checked over a grid
    in tests/test_analytic.py): the walk costs the same for 120 micro-batches as for 100,000. One chunk
    per rank has a closed form, the walk's answer on every rank (tests/test_analytic.py): 1F1B holds
    PP - rank micro-batches (one more with pairs), ZB1P holds PP on every rank (a backward's weight
    part keeps its inputs), never more than there are."""
    if schedule == "1f1b":
        return ((min(pp - rank + int(pairs), microbatches),),)
    if schedule == "zb1p":
        return ((min(pp, microbatches),),)
    return _inflight_all(schedule, pp, vpp, steady_microbatches(schedule, pp, vpp, microbatches), bool(pairs))[rank]


def steady_microbatches(schedule: str, pp: int, vpp: int, microbatches: int) -> int:
    """The micro-batch count, capped where more would only repeat the steady phase: four pipeline
    fills (4 PP; interleaved PP x (V + 3)), a valid count of the schedule's own kind."""
    cap = pp * (vpp + 3) if schedule == "interleaved" else 4 * pp
    return min(microbatches, cap)


@lru_cache(maxsize=512)
def _inflight_all(schedule: str, pp: int, vpp: int, microbatches: int, pairs: bool) -> tuple:
    """inflight_by_chunk for every rank at once: one schedule built per (schedule, pp, vpp, M, pairs)."""
    from .schedules import build_schedule

    out = []
    for tasks in build_schedule(schedule, pp, microbatches, vpp, pairs):
        held = [0] * stages_per_rank(schedule, vpp)
        seen: set[tuple[int, ...]] = set()
        for tk in tasks:
            if tk.kind in ("F", "FB"):
                held[tk.chunk] += 1
                seen.add(tuple(held))
            if tk.kind == "FB" or (tk.kind == "B" and not tk.split_backward):
                held[tk.chunk2 if tk.kind == "FB" else tk.chunk] -= 1
            elif tk.kind == "W":
                held[tk.chunk] -= 1
        # The candidates no other dominates (holds at least as many in every chunk). One that dominates another
        # holds more in all, so taken by that total, largest first, each is checked against those kept so far
        # only (what dominates a dropped one dominates all it dominated): DualPipe PP32 keeps ~100 of ~1,000.
        front: list[tuple[int, ...]] = []
        for v in sorted(seen, key=sum, reverse=True):
            if not any(all(a >= b for a, b in zip(o, v)) for o in front):
                front.append(v)
        kept = set(front)
        out.append(tuple(v for v in seen if v in kept))
    return tuple(out)
