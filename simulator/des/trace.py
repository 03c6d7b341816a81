"""Chrome trace (Trace Event Format) writer for viewing a simulated step in Perfetto.

The format is a JSON object ``{"traceEvents": [...]}``; ui.perfetto.dev and
chrome://tracing both open it. The engine maps its world onto it like this:

* a *process* (``pid``) is one pipeline stage, e.g. "stage 0 (rank 0)";
* a *thread* (``tid``) is a track inside it: "compute", "comm", "ib",
  "nvlink", ... Tracks may be given by name; each name gets a small integer
  tid per process and a ``thread_name`` metadata event;
* a *complete event* (``ph: "X"``) is one busy interval on a track, with
  ``ts`` and ``dur`` in microseconds (floats, so nanosecond detail survives);
* a *flow* (``ph: "s"`` then ``ph: "f"`` with the same ``id``, ``bp: "e"``)
  draws an arrow from the slice that sends a pipeline P2P message to the one
  that receives it;
* a *counter* (``ph: "C"``) plots a value over time, e.g. memory in use;
* *metadata* (``ph: "M"``) names processes and threads and orders them.

Overlapping slices on one track are drawn as if nested, or garbled when they
only partly overlap, so the engine keeps one activity per track at a time;
:meth:`TraceWriter.validate` checks that rule and :meth:`TraceWriter.write`
refuses a trace that breaks it (unless told otherwise). Files are written
atomically (temporary file, then ``os.replace``); a ``.gz`` suffix gzips.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from typing import Any, Iterable

from ..atomic import write_atomic

# Slack when comparing float microseconds (1 ps).
_EPS_US = 1e-6


def ns_to_us(ns: int | float) -> float:
    """Engine clock (integer ns) to trace time (float microseconds)."""
    return ns / 1000.0


class TraceWriter:
    """Collects trace events and writes them as Chrome trace JSON."""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.metadata = dict(metadata or {})
        self._tids: dict[int, dict[str, int]] = defaultdict(dict)
        self._process_names: dict[int, str] = {}
        self._flow_ids = 0

    # ------------------------------------------------------------ metadata
    def process(self, pid: int, name: str, sort_index: int | None = None) -> None:
        """Name a process (a pipeline stage) and optionally fix its order."""
        self._process_names[pid] = name
        self.events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                            "args": {"name": name}})
        if sort_index is not None:
            self.events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                                "args": {"sort_index": sort_index}})

    def thread(self, pid: int, track: str, tid: int | None = None) -> int:
        """Name a track of ``pid``; returns its tid (allocated if not given)."""
        tids = self._tids[pid]
        if track in tids:
            return tids[track]
        if tid is None:
            tid = len(tids) + 1
        tids[track] = tid
        self.events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                            "args": {"name": track}})
        self.events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                            "args": {"sort_index": tid}})
        return tid

    def _tid(self, pid: int, track: int | str) -> int:
        return self.thread(pid, track) if isinstance(track, str) else track

    # ------------------------------------------------------------ events
    def complete(self, name: str, pid: int, track: int | str, ts_us: float, dur_us: float,
                 cat: str = "", args: dict[str, Any] | None = None) -> dict[str, Any]:
        """A busy interval ``[ts, ts + dur)`` on one track (times in microseconds)."""
        ev: dict[str, Any] = {"ph": "X", "name": name, "pid": pid, "tid": self._tid(pid, track),
                              "ts": float(ts_us), "dur": float(dur_us)}
        if cat:
            ev["cat"] = cat
        if args:
            ev["args"] = args
        self.events.append(ev)
        return ev

    def complete_ns(self, name: str, pid: int, track: int | str, start_ns: int, end_ns: int,
                    cat: str = "", args: dict[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`complete` with engine times (integer nanoseconds)."""
        return self.complete(name, pid, track, ns_to_us(start_ns), ns_to_us(end_ns - start_ns),
                             cat, args)

    def flow(self, name: str, src: tuple[int, int | str, float], dst: tuple[int, int | str, float],
             cat: str = "p2p", flow_id: int | None = None) -> int:
        """An arrow from ``src = (pid, track, ts_us)`` to ``dst`` (e.g. a P2P send).

        ``src`` should fall inside the sending slice and ``dst`` inside the
        receiving one (``bp: "e"`` binds the arrow head to the enclosing slice).
        Returns the flow id.
        """
        if flow_id is None:
            self._flow_ids += 1
            flow_id = self._flow_ids
        (spid, strack, sts), (dpid, dtrack, dts) = src, dst
        self.events.append({"ph": "s", "name": name, "cat": cat, "id": flow_id, "pid": spid,
                            "tid": self._tid(spid, strack), "ts": float(sts)})
        self.events.append({"ph": "f", "bp": "e", "name": name, "cat": cat, "id": flow_id,
                            "pid": dpid, "tid": self._tid(dpid, dtrack), "ts": float(dts)})
        return flow_id

    def counter(self, name: str, pid: int, ts_us: float, values: dict[str, float]) -> None:
        """A sample of one or more counter series (e.g. ``{"GB": 61.2}``)."""
        self.events.append({"ph": "C", "name": name, "pid": pid, "ts": float(ts_us),
                            "args": {k: float(v) for k, v in values.items()}})

    def instant(self, name: str, pid: int, track: int | str, ts_us: float,
                args: dict[str, Any] | None = None) -> None:
        """A zero-length marker on a track."""
        ev: dict[str, Any] = {"ph": "i", "s": "t", "name": name, "pid": pid,
                              "tid": self._tid(pid, track), "ts": float(ts_us)}
        if args:
            ev["args"] = args
        self.events.append(ev)

    # ------------------------------------------------------------ checks
    def validate(self) -> list[str]:
        """Problems with the trace; empty when it is sound.

        Checks: required fields per phase, non-negative durations, no two
        complete events overlapping on one (pid, tid) track, every flow has
        one start and one finish with the finish not before the start.
        """
        problems: list[str] = []
        tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        flows: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
        for i, ev in enumerate(self.events):
            ph = ev.get("ph")
            need = _REQUIRED.get(ph)
            if need is None:
                problems.append(f"event {i}: unknown phase {ph!r}")
                continue
            missing = [f for f in need if f not in ev]
            if missing:
                problems.append(f"event {i} ({ph} {ev.get('name')!r}): missing {', '.join(missing)}")
                continue
            if ph == "X":
                if ev["dur"] < 0:
                    problems.append(f"event {i} ({ev['name']!r}): negative dur {ev['dur']}")
                tracks[(ev["pid"], ev["tid"])].append(ev)
            elif ph in ("s", "f"):
                if ph in flows[ev["id"]]:
                    problems.append(f"flow {ev['id']}: duplicate {ph!r} event")
                flows[ev["id"]][ph] = ev
        for (pid, tid), evs in tracks.items():
            evs.sort(key=lambda e: (e["ts"], e["dur"]))
            end_ev = evs[0]
            for ev in evs[1:]:
                if ev["ts"] < end_ev["ts"] + end_ev["dur"] - _EPS_US:
                    problems.append(
                        f"overlap on pid {pid} ({self._process_names.get(pid, '?')}) tid {tid}: "
                        f"{end_ev['name']!r} [{end_ev['ts']:.3f}, {end_ev['ts'] + end_ev['dur']:.3f}) "
                        f"and {ev['name']!r} starting {ev['ts']:.3f} us")
                if ev["ts"] + ev["dur"] > end_ev["ts"] + end_ev["dur"]:
                    end_ev = ev
        for fid, ends in flows.items():
            if set(ends) != {"s", "f"}:
                problems.append(f"flow {fid}: has {sorted(ends)} but needs both 's' and 'f'")
            elif ends["f"]["ts"] < ends["s"]["ts"] - _EPS_US:
                problems.append(f"flow {fid}: finishes before it starts")
        return problems

    # ------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"traceEvents": self.events, "displayTimeUnit": "ms"}
        if self.metadata:
            out["otherData"] = self.metadata
        return out

    def write(self, path: str | os.PathLike[str], check: bool = True) -> None:
        """Write atomically; a ``.gz`` suffix gzips. Raises ValueError when
        ``check`` and :meth:`validate` finds problems."""
        if check:
            problems = self.validate()
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ValueError("trace: " + "; ".join(problems[:5]) + more)
        path = os.fspath(path)
        data = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        if path.endswith(".gz"):
            data = gzip.compress(data, compresslevel=6)
        write_atomic(path, lambda f: f.write(data), binary=True, field="-o")

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Append raw, already-formed trace events."""
        self.events.extend(events)


_REQUIRED: dict[str, tuple[str, ...]] = {
    "X": ("name", "pid", "tid", "ts", "dur"),
    "M": ("name", "pid", "args"),
    "s": ("name", "id", "pid", "tid", "ts"),
    "f": ("name", "id", "pid", "tid", "ts", "bp"),
    "C": ("name", "pid", "ts", "args"),
    "i": ("name", "pid", "tid", "ts"),
}
