"""Chrome trace writer (simulator/des/trace.py)."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from simulator.des.trace import TraceWriter, ns_to_us


def small_trace() -> TraceWriter:
    tw = TraceWriter(metadata={"scenario": "test"})
    for stage in range(2):
        tw.process(stage, f"stage {stage} (rank {stage * 8})", sort_index=stage)
    tw.complete("F0", 0, "compute", 0.0, 10.0, cat="fwd", args={"mb": 0})
    tw.complete("F1", 0, "compute", 10.0, 10.0, cat="fwd")        # touches, no overlap
    tw.complete("send F0", 0, "comm", 10.0, 2.5)
    tw.complete_ns("F0", 1, "compute", 12_500, 22_500)
    tw.flow("act F0", src=(0, "comm", 10.0), dst=(1, "compute", 12.5))
    tw.counter("memory", 0, 0.0, {"GB": 10})
    tw.counter("memory", 0, 20.0, {"GB": 14.5})
    tw.instant("step end", 1, "compute", 22.5)
    return tw


def test_written_file_is_valid_chrome_trace(tmp_path):
    tw = small_trace()
    assert tw.validate() == []
    path = tmp_path / "trace.json"
    tw.write(path)
    data = json.loads(path.read_text())
    assert data["otherData"] == {"scenario": "test"}
    events = data["traceEvents"]
    for ev in events:
        assert {"ph", "name", "pid"} <= ev.keys()
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == 4
    for e in xs:
        assert {"ts", "dur", "tid"} <= e.keys()
        assert isinstance(e["ts"], float) and isinstance(e["dur"], float)
    f0 = next(e for e in xs if e["pid"] == 1)
    assert (f0["ts"], f0["dur"]) == (12.5, 10.0)
    assert not [p for p in os.listdir(tmp_path) if p != "trace.json"]  # no temp left behind


def test_metadata_names_processes_and_threads():
    events = small_trace().to_dict()["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {0: "stage 0 (rank 0)", 1: "stage 1 (rank 8)"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"]
               for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(threads.values()) == {"compute", "comm"}
    # Every X event's track has a name.
    for e in events:
        if e["ph"] == "X":
            assert (e["pid"], e["tid"]) in threads


def test_flow_and_counter_events():
    events = small_trace().to_dict()["traceEvents"]
    s = [e for e in events if e["ph"] == "s"]
    f = [e for e in events if e["ph"] == "f"]
    assert len(s) == len(f) == 1 and s[0]["id"] == f[0]["id"] and f[0]["bp"] == "e"
    counters = [e for e in events if e["ph"] == "C"]
    assert [c["args"]["GB"] for c in counters] == [10.0, 14.5]


def test_validate_catches_overlap_on_one_track():
    tw = small_trace()
    tw.complete("B0", 0, "compute", 15.0, 3.0)   # inside F1 on the same track
    problems = tw.validate()
    assert len(problems) == 1 and "overlap" in problems[0] and "'B0'" in problems[0]
    with pytest.raises(ValueError, match="overlap"):
        tw.write("/nonexistent-dir/never.json")
    # Same times on a different track or process are fine.
    ok = small_trace()
    ok.complete("B0", 0, "ib", 15.0, 3.0)
    ok.complete("B0", 1, "comm", 15.0, 3.0)
    assert ok.validate() == []


def test_validate_catches_overlap_hidden_behind_long_event():
    tw = TraceWriter()
    tw.complete("long", 0, 1, 0.0, 100.0)
    tw.complete("a", 0, 1, 100.0, 1.0)
    tw.complete("short", 0, 1, 10.0, 1.0)
    assert len(tw.validate()) == 1


def test_validate_catches_broken_flows_and_fields():
    tw = TraceWriter()
    tw.events.append({"ph": "s", "name": "x", "id": 7, "pid": 0, "tid": 1, "ts": 5.0})
    tw.events.append({"ph": "X", "name": "no dur", "pid": 0, "tid": 1, "ts": 0.0})
    tw.flow("back", src=(0, 1, 10.0), dst=(1, 1, 9.0))
    tw.complete("neg", 0, 2, 1.0, -1.0)
    text = " | ".join(tw.validate())
    assert "flow 7" in text and "missing dur" in text and "finishes before" in text and "negative" in text


def test_write_gzip_and_unchecked(tmp_path):
    tw = small_trace()
    tw.complete("clash", 0, "compute", 1.0, 1.0)
    tw.write(tmp_path / "t.json.gz", check=False)
    data = json.loads(gzip.decompress((tmp_path / "t.json.gz").read_bytes()))
    assert any(e["name"] == "clash" for e in data["traceEvents"])


def test_ns_to_us():
    assert ns_to_us(1_500) == 1.5


def test_v3_p2p_transfers_are_drawn_as_they_ran_and_every_arrow_lands_on_a_slice():
    """P2P flows that share a NIC overlap in time; each is drawn with its own start and end on the first free
    lane of the sender's "nic" tracks and the receiver's "nic in" tracks, so none collapses to nothing, no
    track has overlapping slices, and every arrow ends inside the receive it belongs to."""
    from collections import defaultdict

    from simulator.des.engine import predict_des
    from simulator.des.trace_cli import build_trace
    from simulator.scenario import load_scenario

    events = build_trace(predict_des(load_scenario("deepseek-v3"))).events
    p2p = [e for e in events if e.get("ph") == "X" and e.get("cat") == "p2p"]
    assert p2p and all(e["dur"] > 0 for e in p2p)
    slices = defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            slices[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    for track in slices.values():
        track.sort()
        assert all(a2 >= b1 - 1e-6 for (_, b1), (a2, _) in zip(track, track[1:]))
    heads = [e for e in events if e.get("ph") == "f"]
    assert heads and all(any(a <= e["ts"] <= b for a, b in slices[e["pid"], e["tid"]]) for e in heads)


def test_dualpipe_p2p_lands_on_the_rank_that_runs_the_next_stage():
    """DualPipe holds each stage on two ranks, one per direction; the DES looked the receiver up in a
    stage-to-rank map that kept one of them, so forward sends were drawn (and, between the two middle
    ranks, timed) as going to the rank of the other direction: 'p2p F0 s1 r0>r14' while rank 1 ran F0.s1."""
    import re

    from simulator.des.engine import predict_des
    from simulator.des.trace_cli import build_trace
    from simulator.scenario import load_scenario

    events = build_trace(predict_des(load_scenario("deepseek-v3"))).events
    runs = {(e["pid"], e["args"]["mb"]) for e in events
            if e.get("ph") == "X" and e.get("cat") in ("F", "FB") and "mb" in e.get("args", {})}
    sends = [re.fullmatch(r"p2p F(\d+) s(\d+) r(\d+)>r(\d+)", e["name"]) for e in events
             if e.get("ph") == "X" and e.get("cat") == "p2p" and e["name"].startswith("p2p F")]
    assert sends and all(sends)
    for m in sends:
        mb, _, src, dst = map(int, m.groups())
        assert abs(src - dst) == 1 and (dst, mb) in runs, m.group(0)
