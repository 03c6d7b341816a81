"""Bandwidth-shared links with flow-level max-min fair sharing.

Packet-level network simulation is far too slow for a training step with
millions of messages, so the engine models communication at the *flow* level:
a transfer of ``n`` bytes over a path of links is one flow, and at every
instant each active flow progresses at a rate given by a fair-sharing rule.
The rates only change when a flow arrives or departs, so the simulation jumps
from one such event to the next.

Sharing rule
------------
A flow crossing a single link gets ``bandwidth / active flows`` of it. A flow
crossing several links (e.g. the sender's IB NIC and the receiver's IB NIC)
gets the *max-min fair* rate, computed by progressive filling (water-filling):
raise all rates together until some link saturates; the flows crossing that
bottleneck are frozen at its fair share; repeat with the remaining capacity
and the remaining flows. Every flow ends up with a saturated bottleneck link on
which no other flow gets a higher rate, which is the textbook characterisation
of max-min fairness.

Max-min fairness is *not* monotone in capacity: giving one link more bandwidth
can let a flow grab more of a second link and so slow a third flow that only
crosses that second link. Uniform scaling of all links, or a network where
every flow crosses a single link, is monotone.

Time and units
--------------
The clock is SimPy's ``env.now`` in integer nanoseconds (see ``clock.py``).
Bandwidths are in GB/s (1e9 bytes/s), which is conveniently exactly one byte
per nanosecond per GB/s. Remaining bytes are floats; completion times are
rounded *up* to whole nanoseconds so that a flow never finishes early, and the
flow that the network scheduled to finish is always removed at that tick, even
if a float remainder of a fraction of a byte is left, so nothing livelocks.

Path classes and virtual time
-----------------------------
Flows with the same path get the same max-min rate, so the network groups
active flows into *path classes* and runs the water-filling over classes
(weighted by their flow counts), not over flows. Inside a class every flow
progresses at the same rate, so the class keeps one "virtual time" ``vt``
(bytes served to each of its flows so far) and a min-heap of the flows'
finish marks ``vt at arrival + bytes``: advancing a class is one addition and
finding its next completion is a heap peek. A link crowded with thousands of
flows of one path costs O(log n) per event instead of O(n).

Event structure
---------------
The network keeps a single pending "next completion" timeout. Each arrival or
departure bumps a version counter and schedules a fresh timeout; a timeout
whose version is stale does nothing when it fires. Arrivals at one instant are
batched: they mark the network dirty and one zero-delay event recomputes the
rates once for all of them (an all-to-all launching 64 flows costs one
water-filling, not 64).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import simpy

from simulator.des.clock import to_ns, to_s

# A flow whose float remainder is below this many bytes counts as finished.
_EPS_BYTES = 1e-3
# Slack when rounding a finish time up, so that float noise such as
# 1000.0000000001 ns does not cost a spurious extra nanosecond: relative
# (division error grows with the value) plus a tiny absolute part.
_CEIL_REL = 1e-12
_CEIL_ABS = 1e-9


class Link:
    """One shared link (an NVLink port, an IB NIC, a PCIe lane...).

    ``gbps`` is in GB/s (1e9 bytes/s). The statistics are filled in by the
    owning :class:`Network`.
    """

    __slots__ = ("env", "name", "gbps", "index", "bytes", "busy_ns", "flows",
                 "n_active", "busy_since", "peak_active")

    def __init__(self, env: simpy.Environment, name: str, gbps: float) -> None:
        if not gbps > 0:
            raise ValueError(f"link {name!r}: gbps must be > 0, got {gbps!r}")
        self.env = env
        self.name = name
        self.gbps = float(gbps)
        self.index = -1
        self.bytes = 0.0          # bytes of completed flows that crossed it
        self.busy_ns = 0          # time with at least one active flow
        self.flows = 0            # completed flows that crossed it
        self.n_active = 0
        self.busy_since = 0
        self.peak_active = 0

    def __repr__(self) -> str:
        return f"Link({self.name!r}, {self.gbps:g} GB/s)"


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """What happened to one flow, for the trace and for reports (times in ns)."""

    name: str
    path: tuple[str, ...]
    nbytes: float
    t_request_ns: int   # transfer() called
    t_start_ns: int     # latency elapsed, data starts moving
    t_end_ns: int       # last byte delivered

    @property
    def start_s(self) -> float:
        return to_s(self.t_start_ns)

    @property
    def end_s(self) -> float:
        return to_s(self.t_end_ns)

    @property
    def duration_s(self) -> float:
        return to_s(self.t_end_ns - self.t_request_ns)


@dataclass(slots=True, eq=False)
class _Flow:
    name: str
    links: tuple[Link, ...]
    nbytes: float
    event: simpy.Event
    t_request_ns: int
    t_start_ns: int = 0
    meta: Any = field(default=None)


class _PathClass:
    """Active flows sharing one path: same rate, one virtual clock."""

    __slots__ = ("links", "index_path", "heap", "vt", "rate", "fin_ns")

    def __init__(self, links: tuple[Link, ...]) -> None:
        self.links = links
        self.index_path = [li.index for li in links]
        self.heap: list[tuple[float, int, _Flow]] = []   # (finish mark, seq, flow)
        self.vt = 0.0        # bytes served to each flow of the class so far
        self.rate = 0.0      # bytes per ns per flow (== GB/s)
        self.fin_ns = 0      # when the heap's first flow completes at this rate


def max_min_rates(paths: Sequence[Sequence[int]], capacity: Sequence[float],
                  weights: Sequence[int] | None = None) -> list[float]:
    """Max-min fair rates by progressive filling.

    ``paths[f]`` lists the link indices flow ``f`` crosses (non-empty);
    ``capacity[li]`` is link ``li``'s bandwidth; ``weights[f]`` (default 1)
    counts identical flows folded into entry ``f``. Returns one per-flow rate
    per entry.

    The fair share of a link, ``capacity left / unfrozen flows``, can only grow
    as flows elsewhere freeze (each frozen flow takes at most the current
    minimum share), so a lazy min-heap of shares works: a popped entry whose
    share went up is pushed back with its new value.
    """
    n_links = len(capacity)
    n = len(paths)
    w = [1] * n if weights is None else weights
    cap = list(capacity)
    cnt = [0] * n_links
    members: list[list[int]] = [[] for _ in range(n_links)]
    for f in range(n):
        wf = w[f]
        for li in paths[f]:
            cnt[li] += wf
            members[li].append(f)
    rates = [0.0] * n
    frozen = [False] * n
    heap = [(cap[li] / cnt[li], li) for li in range(n_links) if cnt[li]]
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    # Hot loop (runs on every flow arrival/departure): plain locals, no calls.
    while heap:
        share, li = heappop(heap)
        c = cnt[li]
        if c == 0:
            continue
        cur = cap[li] / c
        if cur > share * (1.0 + 1e-12):
            heappush(heap, (cur, li))
            continue
        floor = capacity[li] * 1e-12   # float cancellation can leave a hair of negative capacity
        if cur < floor:
            cur = floor
        for f in members[li]:
            if frozen[f]:
                continue
            frozen[f] = True
            rates[f] = cur
            wf = w[f]
            take = cur * wf
            for l2 in paths[f]:
                cap[l2] -= take
                cnt[l2] -= wf
    return rates


class Network:
    """A set of named links and the flows crossing them.

    Usage inside a SimPy process (``env.now`` in integer ns)::

        net = Network(env)
        net.add_link("ib0", 50)   # GB/s
        net.add_link("ib1", 50)
        yield net.transfer(1e6, ["ib0", "ib1"], latency_s=2e-6, name="send")
    """

    def __init__(self, env: simpy.Environment, record_flows: bool = True) -> None:
        self.env = env
        self.links: dict[str, Link] = {}
        self._link_list: list[Link] = []
        self._classes: dict[tuple[int, ...], _PathClass] = {}
        self._arrived: list[_Flow] = []
        self._n_flows = 0
        self._seq = 0
        self._last_ns: int = env.now
        self._version = 0
        self._kick_pending = False
        self.record_flows = record_flows
        self.records: list[FlowRecord] = []
        self.n_completed = 0
        self.n_rate_updates = 0

    # ------------------------------------------------------------------ setup
    def add_link(self, name: str, gbps: float) -> Link:
        if name in self.links:
            raise ValueError(f"link {name!r}: already exists")
        link = Link(self.env, name, gbps)
        link.index = len(self._link_list)
        self.links[name] = link
        self._link_list.append(link)
        return link

    # ------------------------------------------------------------------ flows
    def transfer(self, nbytes: float, path: Iterable[str], latency_s: float = 0.0,
                 name: str = "", meta: Any = None) -> simpy.Event:
        """Start a flow; the returned event fires when its last byte arrives.

        The flow waits ``latency_s`` (rounded to ns) and then shares bandwidth
        with the other active flows on ``path``. Zero bytes or an empty path
        complete after the latency alone. The event's value is ``meta``.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes: must be >= 0, got {nbytes!r}")
        try:
            links = tuple(self.links[p] for p in path)
        except KeyError as e:
            raise ValueError(f"path: unknown link {e.args[0]!r}; known: {', '.join(self.links)}") from None
        env = self.env
        flow = _Flow(name, links, float(nbytes), env.event(), env.now, meta=meta)
        lat = to_ns(latency_s)
        if lat > 0:
            env.timeout(lat).callbacks.append(lambda _ev, f=flow: self._arrive(f))
        else:
            self._arrive(flow)
        return flow.event

    def _arrive(self, flow: _Flow) -> None:
        flow.t_start_ns = self.env.now
        if flow.nbytes <= 0 or not flow.links:
            self._finish(flow, self.env.now)
            return
        self._arrived.append(flow)
        self._kick()

    def _kick(self) -> None:
        """Schedule one rate recomputation at the current instant (batched)."""
        if self._kick_pending:
            return
        self._kick_pending = True
        ev = self.env.event()
        ev.callbacks.append(self._on_kick)
        ev.succeed()

    def _on_kick(self, _ev: simpy.Event) -> None:
        self._kick_pending = False
        self._update()

    def _on_timer(self, version: int) -> None:
        if version == self._version:
            self._update()

    def _finish(self, flow: _Flow, now: int) -> None:
        self.n_completed += 1
        for link in flow.links:
            link.bytes += flow.nbytes
            link.flows += 1
        if self.record_flows:
            self.records.append(FlowRecord(flow.name, tuple(li.name for li in flow.links),
                                           flow.nbytes, flow.t_request_ns, flow.t_start_ns, now))
        flow.event.succeed(flow.meta)

    def _update(self) -> None:
        """Advance all classes to now, retire finished flows, admit new ones,
        recompute rates and schedule the next completion."""
        now = self.env.now
        dt = now - self._last_ns
        self._last_ns = now
        classes = self._classes
        done: list[_Flow] = []
        heappop = heapq.heappop
        for key, c in list(classes.items()):
            c.vt += c.rate * dt
            heap = c.heap
            # The first flow is due at c.fin_ns (ceil, so never early); others
            # finish with it only if their remaining bytes are negligible.
            if c.fin_ns <= now:
                done.append(heappop(heap)[2])
            vt = c.vt + _EPS_BYTES
            while heap and heap[0][0] <= vt:
                done.append(heappop(heap)[2])
            if not heap:
                del classes[key]
        arrived = self._arrived
        if not done and not arrived:
            return
        for f in done:
            for link in f.links:
                link.n_active -= 1
                if link.n_active == 0:
                    link.busy_ns += now - link.busy_since
        for f in arrived:
            key = tuple(li.index for li in f.links)
            c = classes.get(key)
            if c is None:
                c = classes[key] = _PathClass(f.links)
            self._seq += 1
            heapq.heappush(c.heap, (c.vt + f.nbytes, self._seq, f))
            for link in f.links:
                if link.n_active == 0:
                    link.busy_since = now
                link.n_active += 1
                if link.n_active > link.peak_active:
                    link.peak_active = link.n_active
        if arrived:
            self._arrived = []
        self._n_flows += len(arrived) - len(done)
        self._version += 1
        if classes:
            self._reschedule(now)
        # Succeed completions last: waiting processes resume only after this
        # callback returns, and their new transfers are batched by _kick.
        for f in done:
            self._finish(f, now)

    def _reschedule(self, now: int) -> None:
        self.n_rate_updates += 1
        cls = list(self._classes.values())
        if all(len(c.links) == 1 for c in cls):
            # Fast path: independent links, plain processor sharing.
            for c in cls:
                link = c.links[0]
                c.rate = link.gbps / link.n_active
        else:
            rates = max_min_rates([c.index_path for c in cls], [li.gbps for li in self._link_list],
                                  [len(c.heap) for c in cls])
            for c, r in zip(cls, rates):
                c.rate = r
        nxt = -1
        ceil = math.ceil
        for c in cls:
            t = (c.heap[0][0] - c.vt) / c.rate
            d = ceil(t - t * _CEIL_REL - _CEIL_ABS)
            fin = now + (d if d > 1 else 1)
            c.fin_ns = fin
            if fin < nxt or nxt < 0:
                nxt = fin
        v = self._version
        self.env.timeout(nxt - now).callbacks.append(lambda _ev, v=v: self._on_timer(v))

    # -------------------------------------------------------------- reporting
    @property
    def n_active(self) -> int:
        return self._n_flows + len(self._arrived)

    def link_stats(self) -> dict[str, dict[str, float]]:
        """Per link: bytes carried, busy time, mean utilisation.

        ``busy_s`` counts time with at least one active flow (the link may be
        unsaturated if its flows are bottlenecked elsewhere); ``util_busy`` is
        bytes / (bandwidth x busy time) and ``util`` divides by elapsed time.
        """
        now = self.env.now
        out: dict[str, dict[str, float]] = {}
        for link in self._link_list:
            busy = link.busy_ns + (now - link.busy_since if link.n_active else 0)
            cap_busy = link.gbps * busy
            out[link.name] = {
                "gbps": link.gbps,
                "bytes": link.bytes,
                "flows": link.flows,
                "busy_s": to_s(busy),
                "peak_active": link.peak_active,
                "util_busy": link.bytes / cap_busy if cap_busy else 0.0,
                "util": link.bytes / (link.gbps * now) if now else 0.0,
            }
        return out
