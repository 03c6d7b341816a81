"""Pipeline schedules as pure functions, and a zero-communication timeline.

A *pipeline schedule* splits the model's layers into consecutive *stages*, puts
the stages on pipeline ranks (GPUs), splits the global batch into
*micro-batches*, and fixes, for every rank, the order in which that rank runs
its pieces of work ("chunks"). A chunk can only start once its inputs exist:
the forward of micro-batch m on stage s needs that micro-batch's activations
from stage s-1, and its backward needs the output gradient from stage s+1. The
time a rank spends waiting for its inputs is the pipeline *bubble*.

Notation, as in DualPipe's README:

* **F**   the forward chunk of one micro-batch on one stage,
* **B**   the full backward chunk (input gradients and weight gradients),
* **W**   the "backward for weights" part of B,
* **F&B** (written ``FB`` here) a forward chunk of one micro-batch run
  overlapped with the backward chunk of another on the same rank.

Schedules that split the backward (``zb1p``, ``dualpipe``, ``dualpipev``) issue
some backward chunks as the input-gradient part alone (a task ``B`` with
``split_backward=True``, lasting B - W) and later a separate ``W`` task; the
others (``1f1b``, ``interleaved``) issue full backward chunks lasting B.

:func:`build_schedule` gives each rank its ordered task list;
:func:`simulate` runs those lists with a list scheduler (each rank strictly in
order, a task starts as soon as its rank is free and its inputs exist, plus an
optional point-to-point time per hop between ranks) and returns a
:class:`Timeline`; :func:`render_text` draws it like the figure in DualPipe's
README.

Times are per task: F, B, W are the durations of one chunk (for
``interleaved`` a chunk is 1/vpp of a rank's layers; for ``dualpipev`` a stage
is 1/(2*pp) of the model). What the tests (``tests/test_schedules.py``) find
against the closed forms of :mod:`simulator.bubble`, with F = B - W and no
communication:

* ``1f1b``: every rank idles exactly (PP-1)(F+B), for any micro-batch count
  and even when F != B - W.
* ``zb1p``: every rank idles exactly (PP-1)(F+B-2W) once microbatches >= PP;
  with fewer it is (PP-1)(F+B-W) - (microbatches-1)W (too few W's to fill).
* ``interleaved``: every rank idles exactly (PP-1)(f+b) in chunk times, i.e.
  the formula (PP-1)(F+B)/vpp with F = vpp*f, B = vpp*b the per-rank times.
* ``dualpipe``: the closed form (PP/2-1)(F&B+B-3W) is the idle time of the two
  middle ranks (PP/2-1 and PP/2), which idle the most; with F&B < F+B the
  other ranks idle less (they run fewer overlapped pairs, so they compute
  longer), with F&B = F+B all ranks idle the same. So the table's bubble is
  the maximum over ranks. With F != B - W it is no bound at all: the issue's
  PP=8, 24 micro-batches, F=2, B=2, W=1, F&B=4 idles 12 on every rank
  against the formula's 9.
* ``dualpipev`` (``pp`` = devices, 2*pp stages): each device runs exactly the
  order (and, without communication, the timeline) of rank r of ``dualpipe``
  on 2*pp ranks with 2*microbatches, so its bubble is the DualPipe closed form
  at PP = 2*pp, (pp-1)(F&B+B-3W), reached on the last device (pp-1).

:func:`closed_form` applies these conversions (per-chunk times for
``interleaved``, PP = 2*pp for ``dualpipev``).
"""

from __future__ import annotations

import math
import numbers
import textwrap
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import chain
from operator import mul

from simulator.bubble import closed_form_bubble
from simulator.errors import ConfigError
from simulator.layout import num_stages, rank_stages, route_rank

try:  # the list scheduler in C (simulator/_listsched.c), built by `pip install`; the Python pass (_one_pass) where
    # it is None, the reference tests compare it with
    from simulator._listsched import run as _run_in_c
except ImportError:  # pragma: no cover (a source tree run without installing)
    _run_in_c = None

SCHEDULE_NAMES = ("1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev")


@dataclass(frozen=True)
class Task:
    """One chunk of work issued by a rank.

    ``kind`` is ``"F"``, ``"B"``, ``"W"`` or ``"FB"``. ``chunk`` is the model
    chunk of this rank that runs it: the virtual stage for ``interleaved``,
    the direction (0 or 1) for ``dualpipe`` and the leg of the V (0 down, 1
    up) for ``dualpipev``; always 0 otherwise. For ``FB`` the forward part is
    ``(mb, chunk)`` and the backward part, always a full backward, is
    ``(mb2, chunk2)``. ``split_backward`` marks a ``B`` that excludes its
    weight gradients (they come later as a ``W`` task of the same mb/chunk).
    """

    kind: str
    mb: int
    chunk: int = 0
    mb2: int = -1
    chunk2: int = -1
    split_backward: bool = False

    def label(self) -> str:
        if self.kind == "FB":
            return f"{self.mb}&{self.mb2}"
        return f"{self.kind}{self.mb}"


@dataclass(frozen=True)
class TaskTimes:
    """Chunk durations F, B (full backward), W (its weight part), F&B."""

    f: float
    b: float
    w: float
    fb: float | None = None

    def __post_init__(self) -> None:
        for name in ("f", "b", "w"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"times.{name}", f"must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.w > self.b:
            raise ConfigError("times.w", f"must be <= times.b (W is part of B), got w={self.w} b={self.b}")
        if self.fb is not None and not 0 <= self.fb < math.inf:
            raise ConfigError("times.fb", f"must be a finite number >= 0, got {self.fb!r}")

    @property
    def f_and_b(self) -> float:
        return self.f + self.b if self.fb is None else self.fb


# --------------------------------------------------------------------------
# Validation and stage layout
# --------------------------------------------------------------------------


def validate_schedule_args(name: str, pp: int, microbatches: int, vpp: int = 1) -> None:
    """Raise :class:`~simulator.errors.ConfigError` (a ``ValueError``: one line naming the field) for an
    invalid plan. Fields are named as in a scenario (``plan.pp``, ``plan.microbatches``); the
    ``schedule`` command renames them to its flags.

    Rules: ``pp >= 1`` and ``microbatches >= 1`` always. ``1f1b`` and
    ``zb1p`` accept any number of micro-batches (we chose not to require
    ``microbatches >= pp``: fewer is legal and leaves more bubble; ZB-H1 then
    misses its closed form) and need ``vpp == 1``. ``interleaved`` needs
    ``vpp >= 2`` and ``microbatches`` a multiple of ``pp`` (Megatron's rule).
    ``dualpipe`` mirrors the reference asserts: even ``pp``, even
    ``microbatches`` and ``microbatches >= 2*pp``. ``dualpipev`` (``pp`` =
    devices) mirrors its reference: ``microbatches >= 2*pp``. Both DualPipe
    variants hold two chunks per rank by construction and need ``vpp == 1``.
    """
    if name not in SCHEDULE_NAMES:
        raise ConfigError("plan.schedule", f"unknown {name!r}", ", ".join(SCHEDULE_NAMES))
    if not isinstance(pp, int) or pp < 1:
        raise ConfigError("plan.pp", f"must be an integer >= 1, got {pp!r}")
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ConfigError("plan.microbatches", f"must be an integer >= 1, got {microbatches!r}")
    if not isinstance(vpp, int) or vpp < 1:
        raise ConfigError("plan.vpp", f"must be an integer >= 1, got {vpp!r}")
    if name == "interleaved":
        if vpp < 2:
            raise ConfigError("plan.vpp", f"interleaved needs vpp >= 2, got {vpp}")
        if microbatches % pp:
            raise ConfigError("plan.microbatches", f"interleaved needs a multiple of pp={pp}, got {microbatches}")
        return
    if vpp != 1:
        raise ConfigError("plan.vpp", f"only interleaved uses vpp; {name} needs vpp=1, got {vpp}")
    if name == "dualpipe":
        if pp % 2:
            raise ConfigError("plan.pp", f"dualpipe needs an even pp, got {pp}")
        if microbatches % 2 or microbatches < 2 * pp:
            raise ConfigError("plan.microbatches", f"dualpipe needs an even number >= 2*pp={2 * pp}, got {microbatches}")
    elif name == "dualpipev" and microbatches < 2 * pp:
        raise ConfigError("plan.microbatches", f"dualpipev needs >= 2*pp={2 * pp} (pp = devices), got {microbatches}")


def runnable(name: str) -> str:
    """The schedule a plan runs: ``none`` (a plan without pipelining, PP 1) is one stage's 1F1B, its
    micro-batches one after another (with Megatron's pairs, its ``combined_1f1b_schedule_for_no_pipelining``)."""
    return "1f1b" if name == "none" else name


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------


def _steady(fs: list[Task], bs: list[Task], warm: int, pairs: bool) -> list[Task]:
    """One rank's 1F1B order over its forward list ``fs`` and backward list ``bs``:
    ``warm`` warm-up forwards, then one forward and one backward at a time, then
    the drain. With ``pairs`` each steady-state forward and the backward issued
    beside it become one ``FB`` task (see :func:`build_schedule`)."""
    total = len(fs)
    seq = fs[:warm]
    for i in range(total - warm):
        f, b = fs[warm + i], bs[i]
        if pairs:
            seq.append(Task("FB", f.mb, f.chunk, b.mb, b.chunk))
        else:
            seq += [f, b]
    seq += bs[total - warm :]
    return seq


def _one_f_one_b(pp: int, m: int, pairs: bool = False) -> list[list[Task]]:
    """1F1B (PipeDream-Flush): rank r runs min(pp-1-r, m) warm-up forwards,
    then alternates one forward and one full backward, then drains the
    remaining backwards. Micro-batches go in order. ``pairs``: one more
    warm-up forward, and the steady state as forward-backward pairs."""
    fs = [Task("F", i) for i in range(m)]
    bs = [Task("B", i) for i in range(m)]
    return [_steady(fs, bs, min(pp - 1 - r + pairs, m), pairs) for r in range(pp)]


def _zb1p(pp: int, m: int) -> list[list[Task]]:
    """ZB-H1 (Qi et al. 2024): the 1F1B order with every backward split into
    B (input gradients, on the critical path) and W (weight gradients). Rank
    r defers its W's so that up to r of them are pending, and runs the
    deferred ones in the tail, where 1F1B leaves rank r idle for r backwards.
    Same peak activation memory as 1F1B. Any micro-batch count works; the
    closed form (PP-1)(F+B-2W) needs microbatches >= pp."""
    fs = [Task("F", i) for i in range(m)]
    bs = [Task("B", i, split_backward=True) for i in range(m)]
    ws = [Task("W", i, split_backward=True) for i in range(m)]
    out = []
    for r in range(pp):
        warm = min(pp - 1 - r, m)
        pending: deque[int] = deque()
        seq = fs[:warm]
        for i in range(m):
            if i < m - warm:  # steady state: one forward per backward
                seq.append(fs[warm + i])
            seq.append(bs[i])
            pending.append(i)
            if len(pending) > r:
                seq.append(ws[pending.popleft()])
        seq += [ws[i] for i in pending]
        out.append(seq)
    return out


def _interleaved(pp: int, m: int, vpp: int, pairs: bool = False) -> list[list[Task]]:
    """Interleaved 1F1B (Megatron-LM): rank r holds vpp chunks (stages
    c*pp + r). Forwards go in groups of pp micro-batches per chunk, chunk 0
    first; backwards likewise from the last chunk. Warm-up has
    2*(pp-1-r) + (vpp-1)*pp forwards (all of them when m == pp), then
    one-forward-one-backward, then the drain. ``pairs``: one more warm-up
    forward, and the steady state as forward-backward pairs."""
    total = m * vpp
    group = pp * vpp

    def mb(k: int) -> int:
        return (k // group) * pp + k % pp

    fwd = [Task("F", mb(k), (k // pp) % vpp) for k in range(total)]
    bwd = [Task("B", mb(k), vpp - 1 - (k // pp) % vpp) for k in range(total)]
    return [_steady(fwd, bwd, interleaved_warmup(pp, m, vpp, r, pairs), pairs) for r in range(pp)]


def interleaved_warmup(pp: int, m: int, vpp: int, rank: int, pairs: bool = False) -> int:
    """Warm-up forward chunks of ``rank`` in interleaved 1F1B (Megatron-LM's
    ``get_pp_rank_microbatches``): 2*(pp-1-rank) + (vpp-1)*pp, all of them when
    m == pp, one more when forward-backward pairs overlap the MoE all-to-all."""
    total = m * vpp
    if m == pp:
        return total
    return min(2 * (pp - 1 - rank) + (vpp - 1) * pp + pairs, total)


class _DualEmitter:
    """Per-rank bookkeeping shared by DualPipe and DualPipeV: counts forwards
    and backwards per chunk (micro-batches run in order within a chunk) and
    keeps the FIFO of deferred weight gradients, like the reference's
    WeightGradStore."""

    def __init__(self, mb_of, memo: dict) -> None:
        self.seq: list[Task] = []
        self.memo = memo  # Task objects shared between ranks
        self.nf = [0, 0]
        self.nb = [0, 0]
        self.wq: deque[tuple[int, int]] = deque()
        self.mb_of = mb_of  # (chunk, k-th in that chunk) -> micro-batch id

    def _next(self, counts: list[int], c: int) -> int:
        k = counts[c]
        counts[c] += 1
        return self.mb_of(c, k)

    def _emit(self, *key) -> None:
        task = self.memo.get(key)
        if task is None:
            task = self.memo[key] = Task(*key)
        self.seq.append(task)

    def f(self, c: int) -> None:
        self._emit("F", self._next(self.nf, c), c)

    def b(self, c: int, zb: bool = False) -> None:
        mb = self._next(self.nb, c)
        self._emit("B", mb, c, -1, -1, zb)
        if zb:
            self.wq.append((mb, c))

    def w(self) -> None:
        mb, c = self.wq.popleft()
        self._emit("W", mb, c, -1, -1, True)

    def fb(self, cf: int, cb: int) -> None:
        mf = self._next(self.nf, cf)
        self._emit("FB", mf, cf, self._next(self.nb, cb), cb)


def _dual_steps(
    e: _DualEmitter, half_ranks: int, h: int, n: int, ph, middle: bool
) -> None:
    """The eight steps of DualPipe's reference ``step()`` for one rank.

    ``half_ranks`` = P (ranks per half), ``h`` = position in the half, ``n``
    = micro-batches per direction, ``ph(phase)`` maps the reference's phase
    (0: the direction this rank meets first) to a chunk, ``middle``: the
    rank where the two directions turn around.
    """
    lead = half_ranks - h - 1
    for _ in range(2 * lead):  # 1: nF0
        e.f(ph(0))
    for _ in range(h + 1):  # 2: nF0F1
        e.f(ph(0))
        e.f(ph(1))
    for _ in range(lead):  # 3: nB1W1F1 (zero bubble)
        e.b(ph(1), zb=True)
        e.w()
        e.f(ph(1))
    for i in range(n - 2 * half_ranks + h + 1):  # 4: nF0B1F1B0 (main)
        if i == 0 and middle:  # not overlapped: smaller bubble
            e.f(ph(0))
            e.b(ph(1))
        else:
            e.fb(ph(0), ph(1))
        e.fb(ph(1), ph(0))
    for _ in range(lead):  # 5: nB1F1B0
        e.b(ph(1))
        e.fb(ph(1), ph(0))
    zb = False  # 6: nB1B0, 2nd half zero-bubble
    for i in range(h + 1):
        if i == (h + 1) // 2 and h % 2 == 1:
            zb = True
        e.b(ph(1), zb)
        if i == (h + 1) // 2 and h % 2 == 0:
            zb = True
        e.b(ph(0), zb)
    for _ in range(lead):  # 7: nWB0 (zero bubble)
        e.w()
        e.b(ph(0), zb=True)
    for _ in range(h + 1):  # 8: nW
        e.w()
    assert not e.wq


def _dualpipe(pp: int, m: int) -> list[list[Task]]:
    """DualPipe (DeepSeek-V3): micro-batches 0..m/2-1 enter at rank 0
    (chunk 0, stages 0..pp-1 on ranks 0..pp-1), micro-batches m/2..m-1 enter
    at rank pp-1 (chunk 1, stage s on rank pp-1-s). Each rank follows the
    reference's eight steps: (1) forwards of its near direction to fill the
    pipe, (2) alternating forwards of both directions, (3) B/W/F of the far
    direction, (4) the steady state of overlapped F&B pairs, (5) B then F&B,
    (6) backwards of both directions (second half with W deferred), (7) W/B,
    (8) the remaining W's. The two middle ranks run their first pair
    un-overlapped."""
    half, n = pp // 2, m // 2
    out, memo = [], {}
    for r in range(pp):
        second = int(r >= half)
        e = _DualEmitter(lambda c, k: k + c * n, memo)
        _dual_steps(
            e,
            half,
            min(r, pp - 1 - r),
            n,
            lambda p, s=second: p ^ s,
            middle=r in (half - 1, half),
        )
        out.append(e.seq)
    return out


def _dualpipev(pp: int, m: int) -> list[list[Task]]:
    """DualPipeV ("cut-in-half" DualPipe): ``pp`` devices, 2*pp stages in a V
    (device r holds stage r as chunk 0 and stage 2*pp-1-r as chunk 1; the
    last device turns the micro-batch around). All m micro-batches enter at
    device 0. The step order is DualPipe's for the first half of 2*pp ranks,
    with m micro-batches per direction: it equals the first half of DualPipe
    on 2*pp ranks and 2*m micro-batches, step for step."""
    out, memo = [], {}
    for r in range(pp):
        e = _DualEmitter(lambda c, k: k, memo)
        _dual_steps(e, pp, r, m, lambda p: p, middle=r == pp - 1)
        out.append(e.seq)
    return out


PAIRABLE = ("1f1b", "interleaved")  # schedules that can pair their steady state (``pairs``)
# Schedules that run a backward's weight gradients apart from it, as a later W task (``split_backward``);
# every rank's last task is a W.
SPLIT_BACKWARD = ("zb1p", "dualpipe", "dualpipev")


def idle_at_ends(name: str, pp: int, rank: int, times: TaskTimes, p2p: float = 0.0) -> tuple[float, float]:
    """How long ``rank`` idles before its first task and after its last, on equal ranks (``times`` per chunk).

    The gathers of a rank's weights can hide in the first, the reductions of its last gradients in the
    second. Rank 0 starts first and ends last, idle at neither end; under DualPipe, which feeds micro-batches
    from both ends, so does rank PP-1, and a rank counts its hops from the nearer end. Each hop starts a
    chunk forward and a P2P later, and ends a chunk backward and a P2P earlier; where the backward is split
    (:data:`SPLIT_BACKWARD`) a W fills the drain, so the hop ends its input part (B - W) less a W and a P2P
    earlier (no less than nothing). Exact against :func:`simulate` for every schedule, Megatron's pairs
    included, when W <= F (ZB1P's drain differs when W > F), except that DualPipe's ranks nearer its last
    end up to one P2P earlier than this says (the two directions are not quite mirror images)."""
    hops = min(rank, pp - 1 - rank) if name == "dualpipe" else rank
    if name in SPLIT_BACKWARD:
        end = hops * max(0.0, times.b - 2 * times.w + p2p)
    else:
        end = hops * (times.b + p2p)
    return hops * (times.f + p2p), end


def build_schedule(
    name: str, pp: int, microbatches: int, vpp: int = 1, pairs: bool = False
) -> list[list[Task]]:
    """Each rank's tasks, in issue order (validates the arguments first).

    ``pairs`` (``1f1b`` and ``interleaved`` only) is Megatron-LM's batch-level
    overlap of the MoE all-to-all (``--overlap-moe-expert-parallel-comm``,
    ``combined_1f1b.py``): every steady-state forward runs as one ``FB`` task
    with the backward of another micro-batch, sub-module by sub-module, so the
    all-to-all of each hides behind the other's compute. Megatron adds one
    warm-up forward so that the pair's two micro-batches are independent (on
    the last stage a backward needs its own forward); the warm-up forwards and
    the drain's backwards run alone. DualPipe and DualPipeV pair by
    construction and ignore the flag.
    """
    _validate(name, pp, microbatches, vpp, pairs)
    return [list(s) for s in _build(name, pp, microbatches, vpp, pairs and name in PAIRABLE)]


def _validate(name: str, pp: int, microbatches: int, vpp: int, pairs: bool) -> None:
    """:func:`validate_schedule_args`, and pairs refused where the schedule has none to make."""
    validate_schedule_args(name, pp, microbatches, vpp)
    if pairs and name == "zb1p":
        raise ConfigError("plan.ep_overlap",
                          "forward-backward pairs need 1f1b, interleaved, dualpipe or dualpipev; zb1p has none")


# 256: one worker of the whole V3 search (35,820 plans) builds 121 schedules and packs 137 shapes; at 128 it
# packed 24 of them twice (161 misses).
@lru_cache(maxsize=256)
def _build(name: str, pp: int, m: int, vpp: int, pairs: bool = False) -> tuple[tuple[Task, ...], ...]:
    if name == "1f1b":
        sched = _one_f_one_b(pp, m, pairs)
    elif name == "zb1p":
        sched = _zb1p(pp, m)
    elif name == "interleaved":
        sched = _interleaved(pp, m, vpp, pairs)
    elif name == "dualpipe":
        sched = _dualpipe(pp, m)
    else:
        sched = _dualpipev(pp, m)
    return tuple(tuple(s) for s in sched)


# --------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------

_F, _B_FULL, _B_SPLIT, _W, _FB = range(5)


@lru_cache(maxsize=256)  # see _build
def _compile(name: str, pp: int, m: int, vpp: int, pairs: bool = False, by_chunk: bool = False):
    """Flatten a schedule for :func:`simulate`.

    Event ``2*(stage*m + mb)`` is "F done", ``+1`` is "B's input gradient
    done"; there are ``nev`` of them. A dependency index ``e`` reads the
    event's end time, ``e + nev`` the end time plus the p2p time (an input
    made on another rank). Returns per rank the duration code of each task and
    the count of tasks per code; ``nev``; the tasks packed into int32s for the
    list scheduler in C (simulator/_listsched.c: rank after rank, per task its
    duration index among all ranks' codes, rank x codes + code, the counts of
    dependencies and events, then both); and each rank's first task's index
    among all ranks' tasks (and their count). ``by_chunk``: the codes also
    name the rank's chunk (kind + 5 x chunk), for chunks that take different
    times (F&B pairs, which span two, excluded).

    Hot path (a search compiles ~120 shapes of ~2,800 tasks in six chunks of DeepSeek-V3's space): each
    task's fields are packed in one step, and the dependencies are not kept a second time as tuples
    (:func:`_order`, the Python reference's, reads them back from the packing).
    """
    sched = _build(name, pp, m, vpp, pairs)
    ns = num_stages(name, pp, vpp)
    nev = 2 * ns * m
    codes = 5 * len(rank_stages(name, pp, vpp, 0)) if by_chunk else 5  # the same on every rank
    ranks, counts, flat, first = [], [], [], [0]
    for r, tasks in enumerate(sched):
        # Per chunk of the rank: its F events' base, its forward input's (None on the first stage) and its
        # backward input's (None on the last), each + nev where another rank makes it.
        bases = []
        for s in rank_stages(name, pp, vpp, r):
            prev = 2 * (s - 1) * m + (nev if route_rank(name, pp, vpp, r, s, s - 1) != r else 0) if s > 0 else None
            nxt = (2 * (s + 1) * m + 1 + (nev if route_rank(name, pp, vpp, r, s, s + 1) != r else 0)
                   if s < ns - 1 else None)
            bases.append((2 * s * m, prev, nxt))
        row, at = [], r * codes  # the rank's codes; its codes' offset among all ranks'
        for t in tasks:
            kind = t.kind
            if kind == "W":
                code = _W + 5 * t.chunk if by_chunk else _W
                flat += (at + code, 1, 0, bases[t.chunk][0] + 2 * t.mb + 1)
            elif kind == "F":
                own, prev, _ = bases[t.chunk]
                code = 5 * t.chunk if by_chunk else _F
                if prev is None:
                    flat += (at + code, 0, 1, own + 2 * t.mb)
                else:
                    flat += (at + code, 1, 1, prev + 2 * t.mb, own + 2 * t.mb)
            elif kind == "B":
                own, _, nxt = bases[t.chunk]
                code = _B_SPLIT if t.split_backward else _B_FULL
                if by_chunk:
                    code += 5 * t.chunk
                e = own + 2 * t.mb
                if nxt is None:
                    flat += (at + code, 1, 1, e, e + 1)
                else:
                    flat += (at + code, 2, 1, e, nxt + 2 * t.mb, e + 1)
            else:  # FB: the forward's input, then the backward's (its own forward, the next stage's gradient)
                own, prev, _ = bases[t.chunk]
                bown, _, nxt = bases[t.chunk2]
                code = _FB + 5 * t.chunk if by_chunk else _FB
                e, mb = bown + 2 * t.mb2, t.mb2
                deps = () if prev is None else (prev + 2 * t.mb,)
                deps += (e,) if nxt is None else (e, nxt + 2 * mb)
                flat += (at + code, len(deps), 2, *deps, own + 2 * t.mb, e + 1)
            row.append(code)
        count = [0] * codes
        for code in row:
            count[code] += 1
        ranks.append(tuple(row))
        counts.append(tuple(count))
        first.append(first[-1] + len(row))
    return tuple(ranks), tuple(counts), nev, array("i", flat), tuple(first)


def _unpack(packed, first: tuple[int, ...]) -> list[list[tuple[int, tuple[int, ...], tuple[int, ...]]]]:
    """The packing of :func:`_compile` read back: per rank, per task (duration index, dependencies, events)."""
    out, pos = [], 0
    for r in range(len(first) - 1):
        tasks = []
        for _ in range(first[r + 1] - first[r]):
            i, nd, npr = packed[pos], packed[pos + 1], packed[pos + 2]
            pos += 3
            tasks.append((i, tuple(packed[pos:pos + nd]), tuple(packed[pos + nd:pos + nd + npr])))
            pos += nd + npr
        out.append(tasks)
    return out


@lru_cache(maxsize=256)
def _order(name: str, pp: int, m: int, vpp: int, pairs: bool = False, by_chunk: bool = False):
    """The compiled tasks of :func:`_compile` as one sequence of (rank, index of its duration code among all
    ranks' codes (rank x codes a rank + code), dependency indices, produced events, slot of its start among
    all ranks' tasks in rank order) in which every task comes after the tasks it waits on: its rank's earlier tasks and those
    making its inputs. Which task can run next depends only on which inputs exist, never on how long anything
    takes, so one order serves every set of durations: :func:`simulate` then times a step in one pass, with
    no waiting lists (2-3x faster than the event-driven list scheduler it was, the same floating-point
    operations in the same order, so the same times to the last bit). Found here once per schedule shape
    by that list scheduler, run on "exists" alone. (Where the list scheduler in C was built,
    simulator/_listsched.c, :func:`simulate` runs that instead, and this order is the Python reference's.)"""
    _, _, nev, packed, first = _compile(name, pp, m, vpp, pairs, by_chunk)
    comp = _unpack(packed, first)
    made = [False] * nev
    waiters: list[list[int] | None] = [None] * nev
    ptr = [0] * pp
    ready = list(range(pp - 1, -1, -1))
    order = []
    while ready:
        r = ready.pop()
        tasks, i = comp[r], ptr[r]
        n = len(tasks)
        while i < n:
            index, deps, prods = tasks[i]
            for e in deps:
                e %= nev
                if not made[e]:
                    w = waiters[e]
                    if w is None:
                        waiters[e] = [r]
                    else:
                        w.append(r)
                    break
            else:
                order.append((r, index, deps, prods, first[r] + i))
                for e in prods:
                    made[e] = True
                    w = waiters[e]
                    if w is not None:
                        ready.extend(w)
                        waiters[e] = None
                i += 1
                continue
            break
        ptr[r] = i
    if any(ptr[r] != len(comp[r]) for r in range(pp)):  # pragma: no cover
        raise RuntimeError(f"{name}: schedule deadlocks (pp={pp}, microbatches={m})")
    return tuple(order)


@dataclass
class Timeline:
    """Simulated step of one schedule.

    ``ranks[r]`` lists ``(task, start, end)`` of rank r in issue order
    (built on first access). ``makespan`` is when the last task ends;
    ``busy(r)`` the time rank r computes; ``bubble(r)`` = makespan - busy(r).
    """

    schedule: str
    pp: int
    microbatches: int
    vpp: int
    times: TaskTimes
    p2p: float
    makespan: float
    busy_per_rank: list[float]
    starts: list[list[float]] = field(repr=False)
    pairs: bool = False
    rank_times: tuple[TaskTimes, ...] | None = None  # per-rank times where they differ (``times`` then rank 0's)
    chunk_times: tuple[tuple[TaskTimes, ...], ...] | None = None  # per rank and chunk, where chunks differ

    @cached_property
    def codes(self) -> tuple[tuple[int, ...], ...]:
        """Each rank's tasks' duration codes, from the packing the run used (:func:`_compile`, under simulate's key)."""
        return _compile(self.schedule, self.pp, self.microbatches, self.vpp, self.pairs, self.chunk_times is not None)[0]

    @cached_property
    def durations(self) -> list[tuple[float, ...]]:
        """Each rank's durations by code: a task of rank r ends at its start + ``durations[r][codes[r][i]]``."""
        return _rank_durations(self.pp, self.times, self.rank_times, self.chunk_times)

    @cached_property
    def ranks(self) -> list[list[tuple[Task, float, float]]]:
        sched = _build(self.schedule, self.pp, self.microbatches, self.vpp, self.pairs)
        durs = self.durations
        return [
            [
                (task, s, s + durs[r][c])
                for task, s, c in zip(sched[r], self.starts[r], self.codes[r])
            ]
            for r in range(self.pp)
        ]

    def busy(self, rank: int) -> float:
        return self.busy_per_rank[rank]

    def bubbles(self) -> list[float]:
        return [self.bubble(r) for r in range(self.pp)]

    def bubble(self, rank: int) -> float:
        # A rank never idles less than nothing: a busy rank's sum of durations can come out a few ulps past the
        # makespan it spans (-9.09e-13 for DualPipe PP2 at F 270.69).
        idle = self.makespan - self.busy_per_rank[rank]
        return idle if idle > 1e-9 * max(1.0, self.makespan) else 0.0

    @property
    def max_bubble(self) -> float:
        return max(self.bubbles())


def _durations(t: TaskTimes) -> tuple[float, ...]:
    return (t.f, t.b, t.b - t.w, t.w, t.f_and_b)


def _rank_durations(pp: int, times: TaskTimes, rank_times, chunk_times) -> list[tuple[float, ...]]:
    """Each rank's durations by code (see :func:`_compile`): per chunk where ``chunk_times`` are given."""
    if chunk_times is not None:
        return [tuple(chain.from_iterable(map(_durations, chunks))) for chunks in chunk_times]
    return [_durations(t) for t in (rank_times or (times,) * pp)]


def simulate(
    name: str,
    pp: int,
    microbatches: int,
    times: TaskTimes,
    vpp: int = 1,
    p2p: float = 0.0,
    pairs: bool = False,
    rank_times: Sequence[TaskTimes] | None = None,
    chunk_times: Sequence[Sequence[TaskTimes]] | None = None,
    pair_p2p: float | Sequence[Sequence[float]] | None = None,
) -> Timeline:
    """Run the schedule's task lists with a dependency-respecting list
    scheduler: each rank runs its tasks strictly in order; a task starts when
    its rank is free and every input exists (plus ``p2p`` for an input made
    on another rank). F needs F of the same micro-batch on the previous
    stage; B needs its own F and B of the next stage; W needs its B; FB needs
    both its forward's and its backward's inputs. Durations: F, B (full) or
    B - W (split), W, F&B, the same on every rank unless ``rank_times`` gives
    each rank its own (a pipeline whose first or last rank also holds the
    embedding or the head), or ``chunk_times`` each chunk of each rank its
    own (``chunk_times[r][c]``: virtual stages of unequal layer counts; not
    with ``pairs``, whose F&B spans two chunks). ``pair_p2p`` (default
    ``p2p``) is what an F&B pair's outputs take to reach the next ranks: a
    pair that sends both once it has ended, over the one link they share,
    takes 2 x p2p for them; per rank and per chunk of the pair's forward
    (``pair_p2p[r][c]``) where the pairs of one rank differ (a pair that
    sends inside itself, before its backward stage's last attention weight
    gradients, waits for what of the sends outlasts them). The cost is linear in the number of tasks: the
    list scheduler in C (simulator/_listsched.c) where `pip install` built it, else one pass in Python over
    an order that puts every task after its inputs (:func:`_order`, found once per schedule shape)."""
    _validate(name, pp, microbatches, vpp, pairs)
    if pair_p2p is None:
        pair_p2p = p2p
    per_chunk = not isinstance(pair_p2p, numbers.Real)
    try:
        lags = tuple(tuple(float(x) for x in r) for r in pair_p2p) if per_chunk else ((pair_p2p,),)
    except (TypeError, ValueError):
        raise ConfigError("pair_p2p", f"must be a number >= 0 or one per rank and chunk, got {pair_p2p!r}") from None
    for what, x in (("p2p", p2p),) + tuple(("pair_p2p", x) for r in lags for x in r):
        if not 0 <= x < math.inf:
            raise ConfigError(what, f"must be a finite number >= 0, got {x!r}")
    if rank_times is not None:
        if len(rank_times) != pp:
            raise ConfigError("rank_times", f"needs one entry per rank ({pp}), got {len(rank_times)}")
        rank_times = tuple(rank_times)
        times = rank_times[0]
    if chunk_times is not None:
        chunk_times = tuple(tuple(c) for c in chunk_times)
        want = len(rank_stages(name, pp, vpp, 0))
        if rank_times is not None or len(chunk_times) != pp or any(len(c) != want for c in chunk_times):
            raise ConfigError("chunk_times", f"needs {pp} ranks x {want} chunks, and no rank_times")
        if pairs and name in PAIRABLE:
            raise ConfigError("chunk_times", "an F&B pair spans two chunks", "pairs off")
        times = chunk_times[0][0]
    if per_chunk:
        if pairs and name in PAIRABLE:
            raise ConfigError("pair_p2p", "per chunk: a Megatron F&B pair spans two chunks", "one number")
        want = len(rank_stages(name, pp, vpp, 0))
        if len(lags) != pp or any(len(r) != want for r in lags):
            raise ConfigError("pair_p2p", f"per chunk: needs {pp} ranks x {want} chunks")
        if chunk_times is None:  # the codes name the chunk (of the pair's forward), each chunk at its rank's times
            chunk_times = tuple((t,) * want for t in (rank_times or (times,) * pp))
            rank_times = None
    shape = (name, pp, microbatches, vpp, pairs and name in PAIRABLE, chunk_times is not None)
    _, counts, nev, packed, first = _compile(*shape)
    durs = _rank_durations(pp, times, rank_times, chunk_times)
    # Every rank's durations, and what its outputs take to reach the next rank, in one list each, indexed by
    # rank x codes + code (the packing's and _order's index): one lookup a task. A pair's outputs take
    # pair_p2p (per rank and chunk of its forward), every other task's p2p.
    dur = list(chain.from_iterable(durs))
    lag = [p2p] * len(dur)
    codes = len(durs[0])
    if per_chunk:
        for r, row in enumerate(lags):
            lag[r * codes + _FB:(r + 1) * codes:5] = row
    else:
        lag[_FB::5] = [pair_p2p] * (len(dur) // 5)
    if _run_in_c is not None:
        free, starts = _run_in_c(packed, dur, lag, nev, first)
    else:
        free, starts = _one_pass(_order(*shape), dur, lag, nev, pp, first)
    busy = [sum(map(mul, cnt, dur)) for cnt, dur in zip(counts, durs)]
    if not math.isfinite(max(free) + sum(busy)):  # each time finite, their sum not: no bubble to take
        raise ConfigError("times", f"the step overflows (makespan {max(free)!r})",
                          "F, B, W, F&B and p2p small enough that the whole step is a finite number")
    return Timeline(name, pp, microbatches, vpp, times, p2p, max(free), busy, starts, pairs and name in PAIRABLE,
                    rank_times, chunk_times)


def _one_pass(order, dur: list[float], lag: list[float], nev: int, pp: int,
              first: tuple[int, ...]) -> tuple[list[float], list[list[float]]]:
    """One pass over the tasks of :func:`_order` at these durations (and lags, what a task's outputs take to
    reach another rank), by duration index: each rank's end, and its tasks' starts. Each task starts when its
    rank is free and its inputs exist. The reference for simulator/_listsched.c, which runs the same operations
    per task as an event-driven list scheduler (a task's times do not depend on the order ranks are taken in)."""
    end = [0.0] * (2 * nev)
    free = [0.0] * pp
    start = [0.0] * first[-1]  # every task's start, rank by rank
    # Hot loop: one pass over the tasks in an order where every input is made before it is needed.
    for r, i, deps, prods, k in order:
        t = free[r]
        for e in deps:
            d = end[e]
            if d > t:  # noqa: PLR1730 (hot loop; faster than max())
                t = d
        start[k] = t
        t += dur[i]
        free[r] = t
        sent = t + lag[i]
        for e in prods:
            end[e] = t
            end[e + nev] = sent
    return free, [start[first[r]:first[r + 1]] for r in range(pp)]


def p2p_hops(name: str, pp: int, microbatches: int, vpp: int = 1, pairs: bool = False,
             times: TaskTimes | None = None) -> int:
    """How many P2P transfers lie on the step's critical path: the list scheduler's makespan grows by this
    many times a per-hop time small enough to hide behind no slack it did not already have.

    Every hop of the fill counts (2(PP*vpp - 1) under ``interleaved``, once through every stage and back),
    and so does every hop of a steady state whose ranks wait on one another: under strict 1F1B each rank's
    next forward needs an activation its neighbour made just before, so a micro-batch pays about two hops
    (2(PP-1)(M/PP + 1) - 2 for M a multiple of PP), as do Megatron's forward-backward ``pairs``. The count
    of ``1f1b`` and ``interleaved`` (paired or not) does not depend on the chunk times (tested over random
    F, B, W, F&B); ``zb1p``'s, ``dualpipe``'s and ``dualpipev``'s do (their W's fill slack or not), so
    there ``times`` is used, its ratios rounded to a tenth so that a plan search looks each shape up once.
    (The analytic engine runs DualPipe's whole step, sends included, through :func:`dualpipe_makespan`.)
    A per-hop time beyond the slack adds more (the count is the linear regime's)."""
    if pp <= 1:
        return 0
    key: tuple[float, ...] = ()
    if name in TIME_DEPENDENT_HOPS and times is not None and times.f > 0:
        key = tuple(round(x / times.f, 1) for x in (times.b, times.w, times.f_and_b))
    pairs = pairs and name in PAIRABLE
    # Every round past the first two adds the same hops (tests check it against whole simulations).
    return by_rounds(lambda m: _p2p_hops(name, pp, m, vpp, pairs, key), pp, microbatches)


def by_rounds(f: Callable[[int], float], pp: int, microbatches: int, settle: int = 2) -> float:
    """``f(microbatches)`` for a figure of a step that grows by the same amount every round of PP micro-batches
    past the first ``settle`` (the steady state repeats with period PP): from the two shortest steps of the
    same count modulo PP (:func:`first_rounds`), so that a long step costs two short list-scheduler runs and a
    plan search asks for few distinct shapes, none of them long."""
    m0 = first_rounds(pp, microbatches, settle)
    if m0 == microbatches:
        return f(microbatches)
    a = f(m0)
    return a + (microbatches - m0) // pp * (f(m0 + pp) - a)


def first_rounds(pp: int, microbatches: int, settle: int = 2) -> int:
    """The shortest step :func:`by_rounds` runs: the count in [settle x PP, (settle + 1) x PP) that leaves a
    whole number of rounds of PP micro-batches (all of them when there are fewer than settle + 1 rounds).
    Under DualPipe, whose PP is even, it keeps the count's parity."""
    if microbatches < (settle + 1) * pp:
        return microbatches
    return microbatches - (microbatches - settle * pp) // pp * pp


def dualpipe_makespan(name: str, pp: int, microbatches: int, rank_times: Sequence[TaskTimes], p2p: float,
                      pair_p2p: float | Sequence[Sequence[float]]) -> float:
    """The step of a DualPipe or DualPipeV pipeline whose ranks take their own chunk times: the list
    scheduler's makespan, a long step from two short ones (:func:`by_rounds`, from the fourth round of PP
    micro-batches on: the fill alone takes two rounds, and where the ranks take different times the third still
    grows the step by more than a steady round; DeepSeekMoE 16B at PP4, 72 micro-batches, came out 0.5 % long
    from the third). ``p2p`` is what a lone chunk's
    output takes to the next rank and ``pair_p2p`` an F&B pair's past its end (where the pair sends inside
    itself, what of its two sends outlasts its backward stage's last attention weight gradients, per rank and
    chunk; 2 x p2p where it sends both once it has ended, over the one link to their neighbour; see
    :func:`simulate`).

    The closed form (PP/2 - 1)(F&B + B - 3W) prices a pipeline of alike ranks whose F&B takes F + B; where
    the pairs hide their all-to-all (F&B < F + B) and the end ranks, holding the embedding and the head
    beside fewer layers, run shorter chunks, the schedule waits less: V3's PP16 DualPipe, 0.93 s against the
    closed form's 1.26 s on its pacing rank (the DES: 1.03 s)."""
    return dualpipe_step(name, pp, microbatches, rank_times, p2p, pair_p2p)[0]


def dualpipe_step(name: str, pp: int, microbatches: int, rank_times: Sequence[TaskTimes], p2p: float,
                  pair_p2p: float | Sequence[Sequence[float]]) -> tuple[float, tuple[tuple[float, float, float, float], ...]]:
    """:func:`dualpipe_makespan`, and per rank what its data-parallel traffic can hide in: (idle before its first
    task, idle after its last, how long before its last task its other stage's last weight gradients are
    done, when its first task making weight gradients starts: the first a sharded-gradient reduction can
    follow). Read off the shortest run, whose ends are the long step's: the fill does not depend on how many
    micro-batches follow, nor the drain on how many came before."""
    rt = tuple(rank_times)
    runs: dict[int, Timeline] = {}

    def run(m: int) -> float:
        tl = runs[m] = simulate(name, pp, m, rt[0], p2p=p2p, pair_p2p=pair_p2p, rank_times=rt)
        return tl.makespan

    step = by_rounds(run, pp, microbatches, settle=3)
    m0 = first_rounds(pp, microbatches, settle=3)
    tl = runs[m0]
    codes = tl.codes  # the run's own packing (a second one of the same shape took a third of a search's packing)
    ends = []
    for r, (last, grads, first_grads) in enumerate(_dual_marks(name, pp, m0)):
        starts, dur = tl.starts[r], tl.durations[r]

        def end(i: int) -> float:
            return starts[i] + dur[codes[r][i]]

        t_last = end(last)
        lead = t_last - min(end(i) for i in grads) if len(grads) > 1 else 0.0
        ends.append((starts[0], tl.makespan - t_last, lead, starts[first_grads]))
    return step, tuple(ends)


@lru_cache(maxsize=256)
def _dual_marks(name: str, pp: int, m: int) -> tuple[tuple[int, tuple[int, ...], int], ...]:
    """Per rank of a DualPipe(V) schedule: its last task's index, the index of each of its stages' (chunks')
    last task making weight gradients (a W, a backward not split, the backward half of a pair), and of its
    first such task, found once a shape so that :func:`dualpipe_step` reads a plan's ends off the run's start
    times."""
    out = []
    for tasks in _build(name, pp, m, 1, False):  # the key _compile builds it under
        done: dict[int, int] = {}
        for i, task in enumerate(tasks):
            if task.kind == "W" or (task.kind == "B" and not task.split_backward):
                done[task.chunk] = i
            elif task.kind == "FB":
                done[task.chunk2] = i
        first = min(i for i, t in enumerate(tasks)
                    if t.kind in ("W", "FB") or (t.kind == "B" and not t.split_backward))
        out.append((len(tasks) - 1, tuple(done.values()), first))
    return tuple(out)


# Schedules whose critical-path hops depend on the chunk times (their W's fill slack or not).
TIME_DEPENDENT_HOPS = frozenset({"zb1p", "dualpipe", "dualpipev"})


@lru_cache(maxsize=4096)
def _p2p_hops(name: str, pp: int, m: int, vpp: int, pairs: bool, ratios: tuple[float, ...]) -> int:
    """The hops of one step of ``m`` micro-batches at the chunk times ``ratios`` give: what the makespan grows
    by with an infinitesimal per-hop time ``eps``, over it. One run with ``p2p`` = eps: every task time is a
    multiple of a tenth of F, and so is the step without P2P, the multiple nearest the step with it: the
    hops x eps above it (under half a tenth of F for any count below 50,000) are the hops. That is the
    difference of two runs, eps and 0, which tests compare it with over random shapes."""
    b, w, fb = ratios or (2.0, 0.8, 3.0)  # F : B : W : F&B, the usual 1 : 2 : 0.8 : 3
    w = min(w, b)
    times = TaskTimes(1.0 / vpp, b / vpp, w / vpp, max(fb, 1.0, b) / vpp)
    eps, grid = 1e-6 / vpp, 0.1 / vpp
    makespan = simulate(name, pp, m, times, vpp, eps, pairs).makespan
    return round((makespan - round(makespan / grid) * grid) / eps)


def closed_form(name: str, pp: int, times: TaskTimes, vpp: int = 1) -> float:
    """The published closed-form bubble for this schedule, in the per-task
    times of ``times``, from :func:`simulator.bubble.closed_form_bubble`.

    ``interleaved``: the formula (PP-1)(F+B)/vpp takes a rank's whole share
    of layers per micro-batch, vpp chunks, so it gets vpp*f and vpp*b.
    ``dualpipev``: ``pp`` is the number of devices; bubble.py evaluates the
    DualPipe formula at PP = 2*pp (the DualPipe it was cut from): (pp-1)(F&B+B-3W).
    """
    k = vpp if name == "interleaved" else 1
    return closed_form_bubble(
        name, pp, k * times.f, k * times.b, k * times.w, k * times.f_and_b, vpp
    )


def closed_form_caveat(name: str, times: TaskTimes, p2p: float = 0.0, pairs: bool = False) -> str:
    """Why the closed form is not the simulated bubble for these inputs ("" where it is): F != B - W under a
    split-backward schedule (:func:`closed_form_applies`), P2P time (every hop on the fill adds to the bubble,
    :func:`p2p_hops`), or Megatron's forward-backward pairs (the steady state runs F&B tasks that 1F1B's form
    does not count)."""
    if not closed_form_applies(name, times):
        return f"assumes F = B - W (here F={times.f:g}, B-W={times.b - times.w:g})"
    if p2p > 0:
        return f"counts no P2P time (here {p2p:g} a hop)"
    if pairs and name in PAIRABLE:
        return "counts no forward-backward pairs"
    return ""


def closed_form_applies(name: str, times: TaskTimes) -> bool:
    """Whether ``times`` meet the assumption F = B - W that this schedule's
    closed form rests on (always true where it rests on none).

    The closed forms of the split-backward schedules (:data:`SPLIT_BACKWARD`:
    their formulas count W's against F's in the bubble) are derived for F = B - W; with other times the simulated
    bubble can be larger or smaller (the issue's DualPipe PP=8, F=2, B=2,
    W=1, F&B=4 idles 12, the formula says 9). 1F1B's and interleaved's
    closed forms hold for any F and B, and W plays no part in them. Other
    departures (p2p time, F&B pairs, fewer micro-batches than ranks) are not
    judged here."""
    if name not in SPLIT_BACKWARD:
        return True
    return math.isclose(times.f, times.b - times.w, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------
# Text rendering
# --------------------------------------------------------------------------
#
# Each rank is one row of columns; column k stands for the time span
# [k, k+1) * makespan / cols. A task from s to e owns the columns
# round(s * cols / makespan) .. round(e * cols / makespan) - 1: its *cell*.
# A cell shows the task's fill character, with the task's label written over
# its left end only when the whole label and one fill character after it fit
# inside the cell: a label is never cut, never runs into the next cell, and
# two labels never touch. An unlabelled cell of three columns or more opens
# with ``[``, so that neighbouring cells of one kind stay countable (as the
# borders of DualPipe's figure do). A task too short to own a column is not
# dropped: the column it falls in is marked ``*``.

DEFAULT_WIDTH = 100  # columns of every line when the caller gives none
MIN_WIDTH = 40  # narrowest line: rank name, at least a few timeline columns, bubble
_MIN_COLUMNS = 10  # narrowest timeline worth drawing
_SEVERAL = "*"  # a column holding a task too short for a column of its own
_IDLE = "."
_START = "["  # first column of a cell too narrow for its label, so that runs of one kind stay countable
_MIN_MARKED = 3  # narrowest unlabelled cell that gets _START (narrower ones keep their fill)
# Fill per kind of cell; "b" is a backward for inputs only (split_backward).
_FILL = {"F": "-", "B": "=", "b": "~", "W": ":", "FB": "#"}
_KIND_LEGEND = {
    "F": "F<n> (-) forward of micro-batch n",
    "B": "B<n> (=) full backward",
    "b": "b<n> (~) backward for inputs only",
    "W": "W<n> (:) backward for weights",
    "FB": "f&b (#) F&B pair: forward of f overlapped with backward of b",
}
_PRIME_LEGEND = {
    "interleaved": "' one per chunk after the rank's first (F3' = micro-batch 3 on the rank's second chunk)",
    "dualpipe": "' micro-batch of the reverse direction (fed from the last rank)",
    "dualpipev": "' on the V's upward leg (the rank's second stage)",
}
def _kind(task: Task) -> str:
    """The cell kind: the task's kind, ``b`` for a backward for inputs only."""
    return "b" if task.kind == "B" and task.split_backward else task.kind


def _cell_label(task: Task) -> str:
    """What a cell says about its task: kind letter, micro-batch, one prime
    per chunk after the first (``F3'``); an F&B pair is ``f&b``."""
    if task.kind == "FB":
        return task.label()
    return f"{_kind(task)}{task.mb}" + "'" * task.chunk


def _draw_rank(row, cols: int, scale: float, seen: set[str]) -> str:
    """One rank's timeline, ``cols`` characters.

    Cells are filled first, then every task too short for a column marks the
    column it falls in with ``*``, then labels go in where they fit whole
    with a fill character to spare; an unlabelled cell of three columns or
    more starts with ``[``.
    ``seen`` collects what was drawn (cell kinds, ``'``) for the legend."""
    cells = [_IDLE] * cols
    spans, short = [], []
    for task, s, e in row:  # hot for big drawings: no calls for short tasks
        a, b = min(cols, round(s * scale)), min(cols, round(e * scale))
        if a < b:
            spans.append((task, a, b))
        else:
            short.append(min(a, cols - 1))
    for task, a, b in spans:
        cells[a:b] = _FILL[_kind(task)] * (b - a)
    for k in short:
        cells[k] = _SEVERAL
    for task, a, b in spans:
        # A short task's ``*`` can only land on the first column of the next
        # cell (or the last column of the row), so trimming the ends suffices.
        while a < b and cells[a] == _SEVERAL:
            a += 1
        while b > a and cells[b - 1] == _SEVERAL:
            b -= 1
        if a < b:
            _label_cell(cells, task, a, b, seen)
    return "".join(cells)


def _label_cell(cells: list[str], task: Task, a: int, b: int, seen: set[str]) -> None:
    """Write ``task``'s label over its cell's columns [a, b) if it fits with
    a fill character to spare, else mark a wide enough cell's start."""
    seen.add(_kind(task))
    label = _cell_label(task)
    if len(label) < b - a:
        cells[a:a + len(label)] = label
        if "'" in label:
            seen.add("'")
    elif b - a >= _MIN_MARKED:
        cells[a] = _START


def _legend(schedule: str, seen: set[str], glyphs: set[str]) -> list[str]:
    """The legend's entries, each a symbol and its meaning, listing only what
    the drawing shows."""
    entries = [text for kind, text in _KIND_LEGEND.items() if kind in seen]
    if "'" in seen and schedule in _PRIME_LEGEND:
        entries.append(_PRIME_LEGEND[schedule])
    if _START in glyphs:
        entries.append(f"{_START} start of a cell too narrow for its label")
    if _SEVERAL in glyphs:
        entries.append(f"{_SEVERAL} task(s) too short for a column of their own (widen with --width)")
    if _IDLE in glyphs:
        entries.append(f"{_IDLE} idle")
    return entries


_INDENT = "    "  # continuation lines of the header, summary and legend


def _wrap(text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` columns."""
    return textwrap.wrap(text, width, subsequent_indent=_INDENT, break_on_hyphens=False)


def _pack(head: str, entries: list[str], width: int) -> list[str]:
    """``head`` then ``entries`` joined by "; " into lines of at most
    ``width`` columns, a line breaking between entries where it can (so a
    symbol stays next to its meaning) and inside one only if it is too long
    for a line of its own."""
    lines = [head.rstrip()]
    for i, entry in enumerate(entries):
        entry += ";" if i < len(entries) - 1 else ""
        if len(lines[-1]) + 1 + len(entry) <= width:
            lines[-1] += " " + entry
        else:
            lines += _wrap(_INDENT + entry, width)
    return lines


def _summary(tl: Timeline) -> str:
    """Bubble per rank against the closed form, with a note where the closed
    form's assumption F = B - W does not hold for the times given."""
    t = tl.times
    bubbles = tl.bubbles()
    text = (
        f"bubble per rank: min {min(bubbles):g}  max {max(bubbles):g}"
        f"  closed form {closed_form(tl.schedule, tl.pp, t, tl.vpp):g}"
    )
    caveat = closed_form_caveat(tl.schedule, t, tl.p2p, tl.pairs)
    if caveat:
        text += f", which {caveat} and so does not apply: the simulated bubble is the figure"
    return text


def render_text(tl: Timeline, width: int | None = None) -> str:
    """Draw the timeline like the figure in DualPipe's README: one row per
    rank, time running left to right, each task a cell as wide as its
    duration (see the comment above for the rules of cells and labels).

    ``width`` is the number of columns of every line, rank name and bubble
    included (default :data:`DEFAULT_WIDTH`, at least :data:`MIN_WIDTH`);
    header, summary and legend wrap to it. Pure: the caller picks the width."""
    width = DEFAULT_WIDTH if width is None else width
    if width < MIN_WIDTH:
        raise ConfigError("width", f"{width} columns is too narrow", f"{MIN_WIDTH} or more")
    t = tl.times
    header = (
        f"{tl.schedule}: pp={tl.pp} microbatches={tl.microbatches}"
        + (f" vpp={tl.vpp}" if tl.schedule == "interleaved" else "")
        + (" (steady state in F&B pairs)" if tl.pairs else "")
        + f"  F={t.f:g} B={t.b:g} W={t.w:g} F&B={t.f_and_b:g} p2p={tl.p2p:g}"
        f"  makespan={tl.makespan:g}"
    )
    digits = max(2, len(str(tl.pp - 1)))
    names = [f"rank {r:>{digits}} |" for r in range(tl.pp)]
    tails = [f"| bubble {b:g}" for b in tl.bubbles()]
    cols = width - max(map(len, names)) - max(map(len, tails))
    if cols < _MIN_COLUMNS:
        raise ConfigError("width", f"{width} columns leave {cols} for the timeline", f"{width + _MIN_COLUMNS - cols} or more")
    scale = cols / tl.makespan if tl.makespan > 0 else 0.0
    seen: set[str] = set()
    rows = [_draw_rank(row, cols, scale, seen) for row in tl.ranks]
    glyphs = set().union(*map(set, rows))
    lines = _wrap(header, width)
    lines += [f"{name}{row}{tail}" for name, row, tail in zip(names, rows, tails)]
    lines += _wrap(_summary(tl), width)
    lines += _pack("legend:", _legend(tl.schedule, seen, glyphs), width)
    return "\n".join(lines)
