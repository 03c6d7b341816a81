"""``gpuhours trace``: run the discrete-event engine and write a Perfetto (Chrome trace) JSON.

One process per pipeline rank ("rank r: stages a, b"), tracks ``compute``,
``comm`` (all-to-all, TP/CP), ``dp`` (reduce-scatter / all-gather), ``nic``
(P2P sends; ``nic 2``... where sends overlap on the shared link) and ``nic in``
(P2P receives, likewise), a memory counter, and flow arrows for P2P sends.
"""

from __future__ import annotations

import argparse
import re
import sys

_P2P = re.compile(r"p2p ([FB])(\d+) s(\d+) r(\d+)>r(\d+)")


def register(subparsers) -> argparse.ArgumentParser:
    from simulator.cli import add_scenario_args

    p = subparsers.add_parser("trace", help="write a Perfetto (Chrome trace) JSON of one step simulated by the DES")
    add_scenario_args(p)
    p.add_argument("-o", "--output", default="trace.json",
                   help="output path, .json or .json.gz (default: trace.json in the current directory)")
    p.set_defaults(func=run)
    return p


def build_trace(pred):
    """A :class:`TraceWriter` holding the DES prediction's timeline."""
    from simulator.des.trace import TraceWriter

    sc = pred.scenario
    tw = TraceWriter({"scenario": sc.name, "engine": pred.engine, "step_time_s": pred.step_time_s,
                      "timeline_truncated": len(pred.extra.get("timeline", [])) >= 50_000})
    for s in pred.stages:
        tw.process(s.rank, f"rank {s.rank}: stages {', '.join(map(str, s.stages))}", sort_index=s.rank)
        for track in ("compute", "comm", "dp", "nic"):
            tw.thread(s.rank, track)
    us = 1e6
    for e in pred.extra.get("timeline", []):
        tw.complete(e["name"], e["rank"], e["stream"], e["start_s"] * us, (e["end_s"] - e["start_s"]) * us,
                    cat=e["kind"], args={"mb": e["mb"]})
    for e in pred.extra.get("dp_timeline", []):
        tw.complete(e["name"], e["rank"], "dp", e["start_s"] * us, (e["end_s"] - e["start_s"]) * us, cat="dp")
    # P2P transfers as they ran: flows that share a NIC overlap in time, so each goes on the first lane of its
    # rank's "nic" tracks (sends) or "nic in" tracks (receives) that is free when it starts (no overlapping
    # slices on a track), and an arrow runs from the send's start to the end of its receive.
    lanes: dict[tuple[int, str], list[float]] = {}

    def lane(rank: int, base: str, a: float, b: float) -> str:
        ends = lanes.setdefault((rank, base), [])
        for i, end in enumerate(ends):
            if end <= a:
                ends[i] = b
                return base if i == 0 else f"{base} {i + 1}"
        ends.append(b)
        return base if len(ends) == 1 else f"{base} {len(ends)}"

    flows = [(f, m) for f in pred.extra.get("p2p_flows", []) if (m := _P2P.match(f["name"]))]
    for f, m in sorted(flows, key=lambda x: (x[0]["start_s"], x[0]["end_s"])):
        a, b = f["start_s"], max(f["end_s"], f["start_s"])
        src, dst = int(m.group(4)), int(m.group(5))
        out_track, in_track = lane(src, "nic", a, b), lane(dst, "nic in", a, b)
        tw.complete(f["name"], src, out_track, a * us, (b - a) * us, cat="p2p")
        tw.complete(f"recv {f['name'][4:]}", dst, in_track, a * us, (b - a) * us, cat="p2p")
        if b > a:
            tw.flow(f"p2p {m.group(1)}{m.group(2)}", (src, out_track, a * us), (dst, in_track, (a + b) / 2 * us))
    for s in pred.stages:
        for t_s, gib in getattr(s, "memory_over_time", []) or []:
            tw.counter("memory", s.rank, t_s * us, {"GiB": gib})
    return tw


def run(args: argparse.Namespace) -> int:
    from simulator.api import load
    from simulator.atomic import check_writable
    from simulator.des.engine import predict_des
    from simulator.errors import ConfigError

    if not args.output.endswith((".json", ".json.gz")):
        raise ConfigError("-o", f"{args.output!r} is not a trace file name", "a path ending in .json or .json.gz")
    check_writable(args.output, "-o")  # before the simulation, not after it
    sc = load(args.scenario, args.overrides)
    pred = predict_des(sc, profile=args.profile)
    tw = build_trace(pred)
    tw.write(args.output)
    print(f"wrote {args.output}: {len(tw.events):,} events, step {pred.step_time_s:.3f} s by the discrete-event engine "
          f"({pred.gpu_hours_per_trillion_tokens:,.0f} GPU-hours / 1T tokens); open in ui.perfetto.dev",
          file=sys.stderr)
    return 0
