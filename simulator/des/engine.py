"""Discrete-event engine: one training step of one pipeline replica, in SimPy.

What is simulated
-----------------
One pipeline replica (``plan.pp`` ranks); every data-parallel replica and every
member of an expert-parallel group does the same work, so one replica stands
for all of them (the EP group's straggler effect enters through the sampled
max/mean expert load, see below). The clock is SimPy's ``env.now`` in integer
nanoseconds (:mod:`simulator.des.clock`).

Each rank runs its task list from :func:`simulator.schedules.build_schedule`
strictly in order, on two streams:

* **compute** (a ``simpy.Resource`` of capacity 1): the chunk's kernels;
* **comm**: the MoE all-to-all (dispatch + combine) and exposed TP/CP
  collectives. Its inter-node part is also a *flow* of the pass's IB bytes over
  the rank's NIC (:class:`simulator.des.links.Network`, fair sharing), so
  all-to-all traffic and pipeline P2P sends contend for the NIC.

Chunk durations are the analytic engine's (same :class:`Evaluator`, same stage
split from :func:`stage_units`), summed over the units of the task's stage:

* ``F``: compute ``F`` then all-to-all ``aF`` (+ exposed TP/CP ``xF``);
* ``B``: compute ``B`` (+ ``W`` unless ``split_backward``) then ``aB`` + ``xB``;
* ``W``: compute ``W``;
* ``FB`` (an overlapped pair, DualPipe's or Megatron's): compute ``Fr + Br + Wr``
  (SMs taken by communication) on the compute stream while ``aF + aB`` run on
  the comm stream; the pair ends when both are done, and no sooner than its
  pieces allow (:func:`simulator.analytic.pair_time`: a layer's dispatch and
  combine hide only behind the piece paired with them), then the exposed TP/CP
  ``xF + xB`` follow. Without EP overlap the pair is run
  sequentially. Under Megatron's pairs (1F1B / interleaved with ``ep_overlap``)
  the two P2P sends leave before the pair's last attention weight gradients
  (``_Times.attn_dw``), as ``schedule_chunk_1f1b`` orders them; DualPipe's
  reference sends after the whole pair.

Dependencies are those of :func:`simulator.schedules.simulate`: F of stage s
waits for F of stage s-1 of the same micro-batch plus its P2P send, B of stage
s for B of stage s+1 plus its send. P2P sends are flows over the sender's NIC
(cross-node pipelines) or NVLink port.

A third stream per rank, **dp**, runs the data-parallel collectives one at a
time: ZeRO-1/2 parameter all-gathers queued at t=0 (a chunk's first forward
waits for its first layer's share) and gradient reduce-scatters queued after a
chunk's backward. They too are flows, on the NIC when their group crosses
nodes, so gradient traffic, all-to-all and P2P sends slow one another.

Simplifications (documented, deliberate): a NIC is one link per rank for its
outgoing bytes (the all-to-all is symmetric, so the receive side carries the
same load); a DP collective is one flow per part (dense, expert) sized so that
alone on its link it takes the analytic ring time; ZeRO-3's gathers before
every forward and backward are taken as prefetched in time (flows on the DP
stream, never waited on). Under ZeRO-2/3 every micro-batch's gradients are
reduce-scattered after its backward (sharded gradients leave no buffer to
accumulate them in), under ZeRO-0/1 each chunk's once, after its last.

Expert load: with ``plan.routing`` zipf/histogram, each (stage, micro-batch)
gets a max/mean load factor from :mod:`simulator.des.routing` (seeded by
``plan.seed``), rounded to 0.05, and that chunk's times are the analytic unit
times at that imbalance (grouped GEMMs and all-to-all volumes scale). The
step is re-simulated balanced to report ``extra["imbalance_cost_s"]``.
"""

from __future__ import annotations

from typing import Any

import simpy

from simulator.analytic import (
    Evaluator,
    PassTimes,
    Prediction,
    StageReport,
    _dp_and_memory,
    dp_collectives,
    memory_shape,
    pair_time,
    plan_warnings,
    resolve_profile,
    routing_config,
    stage_first_layers,
    stage_units,
    unit_layers,
    window_phase,
)
from simulator.breakdown import step_parts
from simulator.config import Scenario
from simulator.des.clock import to_ns, to_s
from simulator.des.links import Network
from simulator.layout import num_stages, rank_stages, route_rank, visits_per_stage
from simulator.memory import GIB, MemoryBreakdown
from simulator.profile import Profile
from simulator.schedules import PAIRABLE, build_schedule, runnable
from simulator.workload import (
    DISPATCH_TRANSPORT,
    ROUTED_UNITS,
    Shape,
    hidden_state_bytes,
    shared_weight_copies,
)

TIMELINE_CAP = 50_000
MEMORY_POINTS = 200
_BUCKET = 0.05


# ----------------------------------------------------------------------------- helpers
def _overlap_len(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Total length of the intersection of two sorted lists of disjoint intervals."""
    i = j = tot = 0
    while i < len(a) and j < len(b):
        s = max(a[i][0], b[j][0])
        e = min(a[i][1], b[j][1])
        if e > s:
            tot += e - s
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tot


def _union_len(iv: list[tuple[int, int]]) -> int:
    tot = 0
    cur_s = cur_e = None
    for s, e in sorted(iv):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                tot += cur_e - cur_s
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_e is not None:
        tot += cur_e - cur_s
    return tot


def _downsample(samples: list[tuple[int, float]], end_ns: int, n: int = MEMORY_POINTS) -> list[tuple[float, float]]:
    """(t_s, GiB) step samples reduced to about ``n`` points, keeping each bucket's maximum (so the peak)."""
    if not samples:
        return [(0.0, 0.0)]
    if len(samples) <= n:
        return [(to_s(t), v / GIB) for t, v in samples]
    width = max(1, end_ns // n + 1)
    out: dict[int, tuple[int, float]] = {}
    for t, v in samples:
        k = t // width
        cur = out.get(k)
        if cur is None or v > cur[1]:
            out[k] = (t, v)
    return [(to_s(t), v / GIB) for _, (t, v) in sorted(out.items())]


class _Times:
    """Per-stage PassTimes, optionally per (stage, imbalance bucket)."""

    def __init__(self, sc: Scenario, ev: Evaluator, stages: list[list[str]], override: PassTimes | None):
        self.sc, self.ev, self.stages, self.override = sc, ev, stages, override
        self.cache: dict[tuple[int, float], PassTimes] = {}
        m = sc.model
        self.layers = [unit_layers(m, units, window_phase(m, f)) for units, f in zip(stages, stage_first_layers(stages))]

    def get(self, s: int, imb: float = 1.0) -> PassTimes:
        key = (s, imb)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if self.override is not None:
            tot = self.override
        else:
            shape = Shape.of(self.sc.plan, self.sc.training.seq_len, imb)
            tot = PassTimes()
            for kind, layer in self.layers[s]:
                tot = tot + self.ev.unit_times(self.sc, kind, shape, layer)
        self.cache[key] = tot
        return tot

    def attn_dw(self, s: int) -> float:
        """Seconds of the attention block's weight gradients in the stage's first layer, with the
        SMs communication holds: the work Megatron's combined 1F1B leaves after a pair's P2P sends
        (``schedule_chunk_1f1b``: backward goes through the layers last to first, and "the last
        wgrad of attention" runs after ``post_forward`` / ``post_backward``, overlapping them).
        The attention block includes the router, as Megatron's ``attn`` node does."""
        if self.override is not None:
            return 0.0
        kind = next((k for k in self.stages[s] if k in ("dense", "moe")), None)
        if kind is None:
            return 0.0
        return self.ev.attention_wgrad(self.sc, kind, Shape.of(self.sc.plan, self.sc.training.seq_len))


def _imbalance_table(sc: Scenario, stages: list[list[str]], M: int, warnings: list[str]) -> list[list[float]] | None:
    """Per stage, per micro-batch max/mean expert load (rounded to 0.05), or None when balanced."""
    from simulator.des.routing import RoutingSampler

    try:
        cfg = routing_config(sc)
        if cfg is None:
            return None
        sampler = RoutingSampler(cfg)
    except ValueError as e:
        warnings.append(f"routing: {e}; expert load taken as balanced")
        return None
    table = []
    for s, units in enumerate(stages):
        if ROUTED_UNITS.isdisjoint(units):
            table.append([1.0] * M)
            continue
        row = []
        for mb in range(M):
            f = sampler.sample(s, mb).imbalance
            row.append(max(1.0, round(f / _BUCKET) * _BUCKET))
        table.append(row)
    return table


# ----------------------------------------------------------------------------- engine
def predict_des(sc: Scenario, profile: Profile | str | None = None, *, times: PassTimes | None = None,
                comm: bool = True, imbalance: bool = True, record_timeline: bool = True,
                evaluator: Evaluator | None = None, **_ignored: Any) -> Prediction:
    """Simulate one training step of ``sc`` with the discrete-event engine.

    ``times`` replaces every stage's PassTimes (tests); ``comm=False`` drops all
    communication (P2P, all-to-all, TP/CP, DP) and the optimizer step;
    ``imbalance=False`` times every chunk at balanced expert load (memory stays sized for the
    plan's routing, :func:`simulator.analytic.memory_shape`).
    """
    prof = evaluator.timer.profile if evaluator else resolve_profile(sc, profile)
    ev = evaluator or Evaluator(sc, prof)
    warnings: list[str] = []
    p, t = sc.plan, sc.training
    M = sc.microbatches
    shape = Shape.of(p, t.seq_len)
    stages = stage_units(sc, ev, shape)
    tt = _Times(sc, ev, stages, times)
    table = _imbalance_table(sc, stages, M, warnings) if (imbalance and comm and times is None) else None
    res = _simulate(sc, ev, stages, tt, table, comm, record_timeline)
    extra_imb = 0.0
    mean_imb = 1.0
    base = None
    if table is not None:
        base = _simulate(sc, ev, stages, tt, None, comm, False)
        extra_imb = res["step"] - base["step"]
        vals = [v for row, units in zip(table, stages) if not ROUTED_UNITS.isdisjoint(units) for v in row]
        mean_imb = sum(vals) / len(vals) if vals else 1.0
    pred = _to_prediction(sc, ev, stages, res, comm, warnings, tt, base)
    pred.extra["imbalance_cost_s"] = extra_imb
    pred.extra["mean_imbalance"] = mean_imb
    return pred


def _simulate(sc: Scenario, ev: Evaluator, stages, tt: _Times, table, comm: bool, record: bool) -> dict:
    p, m, c = sc.plan, sc.model, sc.cluster
    M, pp, vpp = sc.microbatches, p.pp, p.vpp
    name = runnable(p.schedule)
    ns = num_stages(name, pp, vpp)
    overlap = sc.ep_overlapped
    # Overlap outside DualPipe is Megatron's batch-level pairing of the 1F1B steady state.
    sched = build_schedule(name, pp, M, vpp, pairs=overlap)
    megatron_pairs = overlap and name in PAIRABLE
    # Without pipelining Megatron's pair builds the forward's activations layer by layer as the
    # backward frees the other micro-batch's (Megatron-Bridge PR #3880: 61.35 GB peak, one micro-batch's
    # worth, for Qwen3-30B-A3B on 16 H100): the backward's are
    # counted freed when the pair starts, so one micro-batch stays the peak.
    frees_at_start = megatron_pairs and pp == 1
    stage_map = [rank_stages(name, pp, vpp, r) for r in range(pp)]

    env = simpy.Environment()
    # Every flow crosses one link (the sender's NIC or NVLink port), so flows of different ranks
    # never share a link: one Network per rank is exact and keeps each rate update local.
    ib_gbps, nvl_gbps = c.ib_gbps, c.nvlink_gbps
    nets = []
    for r in range(pp):
        net = Network(env, record_flows=record)
        net.add_link(f"nic{r}", ib_gbps)
        net.add_link(f"nvl{r}", nvl_gbps)
        nets.append(net)

    # P2P: activations (forward) or their gradients (backward) of one micro-batch.
    shape = Shape.of(p, sc.training.seq_len)
    act_bytes = hidden_state_bytes(m, shape)
    cross_node_pp = p.tp * p.cp * sc.dp > c.gpus_per_node or p.pp > 1 and c.num_gpus > c.gpus_per_node
    if cross_node_pp:
        p2p_link, p2p_eff = "nic", ev.comm.ib("p2p", 2)
        p2p_lat, p2p_gbps = c.ib_latency_us * 1e-6, ib_gbps
    else:
        p2p_link, p2p_eff = "nvl", ev.comm.nvlink("p2p", 2)
        p2p_lat, p2p_gbps = c.nvlink_latency_us * 1e-6, nvl_gbps
    p2p_flow_bytes = act_bytes * p2p_gbps * 1e9 / p2p_eff  # alone on the link: exactly the analytic p2p time
    transport = DISPATCH_TRANSPORT[p.dispatcher]

    def a2a_flow_bytes(ib_bytes: float) -> float:
        """Bytes of an all-to-all's NIC flow: alone on the NIC it takes its IB bytes' time (CommModel.a2a_nic_time)."""
        return ev.comm.a2a_nic_time(ib_bytes, transport, p.ep) * ib_gbps * 1e9

    # Per (stage, imbalance) durations in ns, cached.
    dur_cache: dict[tuple[int, float], tuple] = {}
    floor_cache: dict[tuple, int] = {}

    def durs(s: int, imb: float) -> tuple:
        key = (s, imb)
        d = dur_cache.get(key)
        if d is None:
            pt = tt.get(s, imb)
            a = pt.aF + pt.aB
            ibF = pt.ib_bytes * (pt.aF / a) if a > 0 else 0.0
            ibB = pt.ib_bytes - ibF
            if not comm:
                d = (to_ns(pt.F), to_ns(pt.B), to_ns(pt.W), to_ns(pt.Fr), to_ns(pt.Br), to_ns(pt.Wr),
                     0, 0, 0, 0, 0.0, 0.0)
            else:
                d = (to_ns(pt.F), to_ns(pt.B), to_ns(pt.W), to_ns(pt.Fr), to_ns(pt.Br), to_ns(pt.Wr),
                     to_ns(pt.aF), to_ns(pt.aB), to_ns(pt.xF), to_ns(pt.xB), a2a_flow_bytes(ibF), a2a_flow_bytes(ibB))
            dur_cache[key] = d
        return d

    def imb_of(s: int, mb: int) -> float:
        return table[s][mb] if table is not None else 1.0

    # Per stage: activation bytes per micro-batch (as analytic's memory model) and the dense and
    # expert parameters its DP collectives move.
    # The analytic memory model's per-stage sums (Evaluator.stage_memory), at the shape a rank's memory holds
    # under skewed routing (analytic.memory_shape).
    act_stage, params_stage = [], []
    mshape = memory_shape(sc, stages)
    for units in stages:
        pd, pe, a = ev.stage_memory(sc, tuple(units), mshape)[:3]
        act_stage.append(a)
        params_stage.append([pd, pe])
    # A rank's copies of weights it shares with a unit it does not hold (workload.shared_weight_copies),
    # reduced with its last stage's gradients. Under DualPipe ranks r and PP-1-r hold the same two stages, and
    # the copies once: V3 at PP32 puts the embedding and the MTP head (which shares the output head's weights) on
    # stages 0 and 31, and each of ranks 0 and 31 used to add the head's copy to its own last stage, so both
    # reduced two copies a step (ZeRO-2 at CP2: 4.5 s of the DES's 24.8 s step exposed, against 0.07 s).
    seen_held: set[frozenset[int]] = set()
    for r in range(pp):
        held = stage_map[r]
        if frozenset(held) in seen_held:
            continue
        seen_held.add(frozenset(held))
        params_stage[held[-1]][0] += shared_weight_copies(m, (u for s in held for u in stages[s]), p.tp)

    # DP per stage (analytic.dp_collectives).
    # Each DP collective is a list of parts (ns alone on its link, link prefix): the dense part over
    # its group and the expert part over its own, each on the link that bounds it (the NIC, or NVLink
    # when a group has so many members per node that NVLink is the slower leg; the 1/k of its bytes
    # that still crosses the NIC then competes with nothing: a simplification). Parts run as flows,
    # so on the NIC they share it with all-to-all and P2P sends (and slow them).
    rs_t: list[list[tuple[int, str]]] = []
    ag_t: list[list[tuple[int, str]]] = []
    for pd, pe in params_stage:
        if not comm:
            rs_t.append([])
            ag_t.append([])
            continue
        rs, ag = dp_collectives(sc, ev, pd, pe)
        rs_t.append([(to_ns(t), "nic" if on_nic else "nvl") for t, on_nic in rs])
        # ZeRO-1/2 gather the updated weights once a step; ZeRO-3 before every forward and backward (below).
        ag_t.append([(to_ns(t), "nic" if on_nic else "nvl") for t, on_nic in ag])
    link_gbps = {"nic": ib_gbps, "nvl": nvl_gbps}

    # Arrival events of stage inputs: index s*M+mb.
    f_in: list[simpy.Event | None] = [None] * (ns * M)
    b_in: list[simpy.Event | None] = [None] * (ns * M)

    def ev_of(lst, i):
        e = lst[i]
        if e is None:
            e = lst[i] = env.event()
        return e

    def deliver(lst, s_to: int, mb: int, src_rank: int):
        i = s_to * M + mb
        e = ev_of(lst, i)
        s_from = s_to - 1 if lst is f_in else s_to + 1
        dst = route_rank(name, pp, vpp, src_rank, s_from, s_to)
        if dst == src_rank or not comm:
            e.succeed()
            return
        fl = nets[src_rank].transfer(p2p_flow_bytes, (f"{p2p_link}{src_rank}",), latency_s=p2p_lat,
                          name=f"p2p {'F' if lst is f_in else 'B'}{mb} s{s_to} r{src_rank}>r{dst}",
                          meta=(src_rank, dst, env.now))
        fl.callbacks.append(lambda _e, e=e: e.succeed())

    def send_outputs(s: int, mb: int, s2: int, mb2: int, r: int):
        """A pair's two P2P sends: the forward output downstream, the input gradient upstream."""
        if s < ns - 1:
            deliver(f_in, s + 1, mb, r)
        if s2 > 0:
            deliver(b_in, s2 - 1, mb2, r)

    def send_pair(gate: list, exposed_ns: int, s: int, mb: int, s2: int, mb2: int, r: int):
        yield env.all_of(gate)
        if exposed_ns:
            yield env.timeout(exposed_ns)
        send_outputs(s, mb, s2, mb2, r)

    # A pair sends its two P2P messages before its last attention weight gradients (once the rest of its work
    # is done) under Megatron's combined 1F1B (below) and under DualPipe(V) with plan.dualpipe_sends in_pair:
    # DeepSeek-V3's Figure 4 runs a pair's pieces (MLP(B), MLP(W), MLP(F), ATTN(B), ATTN(W), ATTN(F)) beside
    # DISPATCH(F), DISPATCH(B), COMBINE(F), PP, COMBINE(B) on the communication stream, "fully hidden".
    # after_pair sends them once the pair has ended, as deepseek-ai/DualPipe does.
    early_sends = megatron_pairs or (overlap and name in ("dualpipe", "dualpipev")
                                     and p.dualpipe_sends == "in_pair")
    tail_ns = [to_ns(tt.attn_dw(s)) if (early_sends and comm) else 0 for s in range(ns)]

    # Per-rank records.
    comp_iv: list[list[tuple[int, int]]] = [[] for _ in range(pp)]
    comm_iv: list[list[tuple[int, int]]] = [[] for _ in range(pp)]
    tl: list[tuple] = []
    mem: list[list[tuple[int, float]]] = [[(0, 0.0)] for _ in range(pp)]
    kind_d: list[dict[str, list[int]]] = [{"F": [0, 0], "B": [0, 0], "W": [0, 0], "FB": [0, 0]} for _ in range(pp)]
    last_end = [0] * pp
    dp_free = [0] * pp
    ag_wait = [0] * pp  # ns a forward waited for its chunk's parameter all-gather (exposed DP)
    dp_iv: list[list[tuple[int, int, str]]] = [[] for _ in range(pp)]
    n_tl = [0]

    def rec(r, stream, nm, kind, mb, s0, s1):
        if record and n_tl[0] < TIMELINE_CAP and s1 > s0:
            tl.append((r, stream, nm, kind, mb, s0, s1))
            n_tl[0] += 1

    def rank_proc(r: int):
        tasks = sched[r]
        compute = simpy.Resource(env, 1)
        act = 0.0
        samples = mem[r]
        kd = kind_d[r]
        cmp_iv, cm_iv = comp_iv[r], comm_iv[r]
        nic = f"nic{r}"
        net = nets[r]
        # The tasks that finish a micro-batch's weight gradients of a chunk (task index -> chunk): a W, a
        # backward that is not split, the backward half of an F&B pair. ZeRO-1 and plain DP accumulate
        # every micro-batch's gradients in a full-size buffer and reduce once, after the chunk's last;
        # sharded gradients (ZeRO-2/3) leave no such buffer, so every micro-batch's are reduce-scattered
        # (analytic._dp_and_memory).
        grad_tasks: dict[int, int] = {}
        for i, tk in enumerate(tasks):
            if tk.kind == "W" or (tk.kind == "B" and not tk.split_backward):
                grad_tasks[i] = tk.chunk
            elif tk.kind == "FB":
                grad_tasks[i] = tk.chunk2
        if p.zero >= 2:
            rs_at = grad_tasks
        else:
            rs_at = {i: ch for ch, i in {ch: i for i, ch in grad_tasks.items()}.items()}  # each chunk's last
        # The DP stream: one collective at a time, in the order queued. Parameter all-gathers
        # (ZeRO-1/2, overlap-param-gather) are queued at t=0 in chunk order of first use; a chunk's
        # first forward waits for its first layer's share. Reduce-scatters are queued after a
        # chunk's last backward.
        dp_q = simpy.Store(env)
        ag_ready: dict[int, simpy.Event] = {}
        ag_done: dict[int, simpy.Event] = {}
        seen = []
        for tk in tasks:
            if tk.kind in ("F", "FB") and tk.chunk not in seen:
                seen.append(tk.chunk)
        for ch in seen if p.zero in (1, 2) else ():
            s = stage_map[r][ch]
            if ag_t[s]:
                ag_ready[ch] = env.event()
                ag_done[ch] = env.event()
                dp_q.put((f"all-gather s{s}", ag_t[s], ag_ready[ch], len(stages[s]), ag_done[ch]))
        env.process(dp_stream(r, dp_q))
        deferred: list[tuple] = []
        feeding: list = []

        def pair_floor(s: int, imb_f: float, s2: int, imb_b: float) -> int:
            """ns an overlapped pair takes at least, piece by piece (:func:`simulator.analytic.pair_time`)."""
            key = (s, imb_f, s2, imb_b)
            hit = floor_cache.get(key)
            if hit is None:
                hit = floor_cache[key] = to_ns(pair_time(tt.get(s, imb_f), tt.get(s2, imb_b)))
            return hit

        def pair_compute(df: tuple, db: tuple) -> int:
            """The compute of an F&B pair (forward durations ``df``, backward ``db``): overlapped, with the
            SMs the all-to-all kernels hold taken, unless neither half has an all-to-all (embedding, dense or
            head layers only: all SMs, as analytic.paired_sms); not overlapped, at full F + B + W."""
            if overlap and df[6] + db[7]:
                return df[3] + db[4] + db[5]
            return df[0] + db[1] + db[2]

        def grad_time(tk, kind, s, mb) -> int:
            """Compute time of the task that produces a chunk's last weight gradients."""
            if kind == "W":
                return durs(s, imb_of(s, mb))[2]
            if kind == "B":
                d = durs(s, imb_of(s, mb))
                return d[1] if tk.split_backward else d[1] + d[2]
            s2 = stage_map[r][tk.chunk2]
            return pair_compute(durs(s, imb_of(s, mb)), durs(s2, imb_of(s2, tk.mb2)))

        def feed_buckets(sg: int, gd: int):
            n = max(1, len(stages[sg]))
            done = env.event()
            feeding.append(done)
            for j in range(n):
                yield env.timeout(gd // n)
                dp_q.put((f"reduce-scatter s{sg} ({j + 1}/{n})", [(max(1, dur // n), link) for dur, link in rs_t[sg]],
                          None, 1, None))
            done.succeed()

        def comm_after(cdur, ib_bytes, kind, mb, s, t1):
            """A chunk's all-to-all after its compute: a timed comm interval whose IB bytes
            also flow over the rank's NIC (sharing it with P2P sends). Returns its end."""
            if not cdur:
                return t1
            fl = net.transfer(ib_bytes, (nic,), name=f"a2a {kind}{mb}") if ib_bytes > 0 else None
            yield env.timeout(cdur)
            if fl is not None and not fl.processed:
                yield fl
            t2 = env.now
            cm_iv.append((t1, t2))
            rec(r, "comm", f"a2a {kind}{mb}.s{s}", kind, mb, t1, t2)
            return t2

        for i, tk in enumerate(tasks):
            kind = tk.kind
            s = stage_map[r][tk.chunk]
            mb = tk.mb
            # ---- wait for inputs
            if kind in ("F", "FB"):
                ar = ag_ready.pop(tk.chunk, None)
                if ar is not None and not ar.processed:
                    yield ar
                agd = ag_done.pop(tk.chunk, None)
                if s > 0:
                    e = ev_of(f_in, s * M + mb)
                    if not e.processed:
                        yield e
            if kind == "B":
                if s < ns - 1:
                    e = ev_of(b_in, s * M + mb)
                    if not e.processed:
                        yield e
            if kind == "FB":
                s2 = stage_map[r][tk.chunk2]
                if s2 < ns - 1:
                    e = ev_of(b_in, s2 * M + tk.mb2)
                    if not e.processed:
                        yield e
            t0 = env.now
            req = compute.request()
            yield req
            if p.zero == 3:
                # ZeRO-3 gathers a chunk's weights before its forward and again before its backward. They are
                # taken as prefetched in time (the chunk does not wait), but they queue on the DP stream and
                # share the NIC, so their bytes slow the other flows and what is left at the end is exposed.
                uses = {"F": ((s, f"F{mb}"),), "B": ((s, f"B{mb}"),),
                        "FB": ((s, f"F{mb}"), (stage_map[r][tk.chunk2], f"B{tk.mb2}"))}.get(kind, ())
                for sg, label in uses:
                    if ag_t[sg]:
                        dp_q.put((f"all-gather s{sg} {label}", ag_t[sg], None, 1, None))
            ch_rs = rs_at.get(i)
            if ch_rs is not None and (p.grad_reduce_overlap or p.zero >= 2) and rs_t[stage_map[r][ch_rs]]:
                # A backward whose gradients are reduced now (the chunk's last, or under ZeRO-2/3 every
                # one): DDP-style buckets, one per layer, each reduced as soon as backward has produced it
                # (the last layer's first), overlapping the backward tail.
                sg = stage_map[r][ch_rs]
                env.process(feed_buckets(sg, grad_time(tk, kind, s, mb)))
            if kind == "F":
                d = durs(s, imb_of(s, mb))
                act += act_stage[s]
                samples.append((t0, act))
                if agd is not None and not agd.processed:
                    # Layer j's forward needs layer j's gathered parameters: when the gather is
                    # slower than the forward, the last layer waits for the gather's end.
                    last = d[0] // max(1, len(stages[s]))
                    yield env.timeout(d[0] - last)
                    tw = env.now
                    cmp_iv.append((t0, tw))
                    rec(r, "compute", f"F{mb}.s{s}", "F", mb, t0, tw)
                    if not agd.processed:
                        yield agd
                    ag_wait[r] += env.now - tw  # the gather itself is on the rank's DP track
                    t0c = env.now
                    yield env.timeout(last)
                else:
                    t0c = t0
                    yield env.timeout(d[0])
                t1 = env.now
                cmp_iv.append((t0c, t1))
                rec(r, "compute", f"F{mb}.s{s}", "F", mb, t0c, t1)
                t2 = yield from comm_after(d[6] + d[8], d[10], "F", mb, s, t1)
                compute.release(req)
                kd["F"][0] += t2 - t0
                kd["F"][1] += 1
                if s < ns - 1:
                    deliver(f_in, s + 1, mb, r)
            elif kind == "B":
                d = durs(s, imb_of(s, mb))
                split = tk.split_backward
                yield env.timeout(d[1] if split else d[1] + d[2])
                t1 = env.now
                cmp_iv.append((t0, t1))
                rec(r, "compute", f"{'b' if split else 'B'}{mb}.s{s}", "B", mb, t0, t1)
                t2 = yield from comm_after(d[7] + d[9], d[11], "B", mb, s, t1)
                compute.release(req)
                if not split:
                    act -= act_stage[s]
                    samples.append((t2, act))
                kd["B"][0] += t2 - t0
                kd["B"][1] += 1
                if s > 0:
                    deliver(b_in, s - 1, mb, r)
            elif kind == "W":
                d = durs(s, imb_of(s, mb))
                yield env.timeout(d[2])
                t2 = env.now
                cmp_iv.append((t0, t2))
                rec(r, "compute", f"W{mb}.s{s}", "W", mb, t0, t2)
                compute.release(req)
                act -= act_stage[s]
                samples.append((t2, act))
                kd["W"][0] += t2 - t0
                kd["W"][1] += 1
            else:  # FB pair: forward (mb, s) with full backward (mb2, s2)
                s2 = stage_map[r][tk.chunk2]
                mb2 = tk.mb2
                df = durs(s, imb_of(s, mb))
                db = durs(s2, imb_of(s2, mb2))
                freed_early = act_stage[s2] if frees_at_start else 0.0
                act += act_stage[s] - freed_early
                samples.append((t0, act))
                label = f"{mb}&{mb2}"
                sent = False
                if overlap:
                    a2a = df[6] + db[7]
                    ccomp = pair_compute(df, db)
                    tc = env.now
                    fl = None
                    # The pair's pieces pace it (analytic.pair_time): its comm stream is busy until then,
                    # and its compute done no sooner.
                    span = max(ccomp, pair_floor(s, imb_of(s, mb), s2, imb_of(s2, mb2))) if a2a else ccomp
                    # Where the pieces stall it, the all-to-all's last a2a ns end with the pair.
                    c0 = tc + span - a2a if span > ccomp else tc
                    fe = [c0 + a2a]
                    if df[10] + db[11] > 0:
                        fl = net.transfer(df[10] + db[11], (nic,), name=f"a2a FB{label}")
                        fl.callbacks.append(lambda _e, fe=fe: fe.append(env.now))
                    to_c = env.timeout(fe[0] - tc) if a2a else None
                    lead = min(tail_ns[s2], ccomp)
                    if lead:
                        # Both outputs leave before the stage's last attention weight gradients
                        # (early_sends): once the rest of the compute, the all-to-all and the exposed
                        # TP/CP work are done (the latter counted before the sends: conservative).
                        gate = [e for e in (env.timeout(span - lead), env.timeout(a2a) if a2a else None, fl)
                                if e is not None]
                        env.process(send_pair(gate, df[8] + db[9], s, mb, s2, mb2, r))
                        sent = True
                    yield env.timeout(ccomp)
                    t1 = env.now
                    if to_c is not None and not to_c.processed:
                        yield to_c
                    if fl is not None and not fl.processed:
                        yield fl
                    tce = max(fe)
                    cmp_iv.append((t0, t1))
                    rec(r, "compute", f"F{label}", "FB", mb, t0, t1)
                    if tce > c0:
                        cm_iv.append((c0, tce))
                        rec(r, "comm", f"a2a {label}", "FB", mb, c0, tce)
                    x = df[8] + db[9]
                    if x:
                        t3 = env.now
                        yield env.timeout(x)
                        cm_iv.append((t3, env.now))
                        rec(r, "comm", f"tp/cp {label}", "FB", mb, t3, env.now)
                else:
                    yield env.timeout(df[0] + db[1] + db[2])
                    t1 = env.now
                    cmp_iv.append((t0, t1))
                    rec(r, "compute", f"F{label}", "FB", mb, t0, t1)
                    cdur = df[6] + df[8] + db[7] + db[9]
                    if cdur:
                        fl = net.transfer(df[10] + db[11], (nic,), name=f"a2a FB{label}") if df[10] + db[11] > 0 else None
                        yield env.timeout(cdur)
                        if fl is not None and not fl.processed:
                            yield fl
                        cm_iv.append((t1, env.now))
                        rec(r, "comm", f"a2a {label}", "FB", mb, t1, env.now)
                compute.release(req)
                t2 = env.now
                act -= act_stage[s2] - freed_early
                samples.append((t2, act))
                kd["FB"][0] += t2 - t0
                kd["FB"][1] += 1
                if not sent:
                    send_outputs(s, mb, s2, mb2, r)
            # ---- data-parallel gradient reduce-scatter of a chunk after its last backward
            ch = rs_at.get(i)
            if ch is not None and not p.grad_reduce_overlap and p.zero < 2:
                sg = stage_map[r][ch]
                if rs_t[sg]:
                    deferred.append((f"reduce-scatter s{sg}", rs_t[sg], None, 1, None))
        if feeding:
            yield env.all_of(feeding)
        for job in deferred:  # not overlapped: gradients reduced once the pipeline has drained
            dp_q.put(job)
        dp_q.put(None)
        last_end[r] = env.now

    def dp_stream(r: int, q: simpy.Store):
        """Runs rank r's DP collectives one after another as flows on its NIC / NVLink port."""
        net = nets[r]
        while True:
            job = yield q.get()
            if job is None:
                return
            name, parts, first_share, n_layers, done = job
            t0 = env.now
            for j, (dur, link) in enumerate(parts):
                nbytes = dur * 1e-9 * link_gbps[link] * 1e9  # alone on the link: exactly `dur`
                if j == 0 and first_share is not None and n_layers > 1:
                    # The first layer's share arrives first; the chunk's forward may start then.
                    yield net.transfer(nbytes / n_layers, (f"{link}{r}",), name=f"{name} (first layer)")
                    first_share.succeed()
                    first_share = None
                    nbytes -= nbytes / n_layers
                yield net.transfer(nbytes, (f"{link}{r}",), name=name)
            if first_share is not None:
                first_share.succeed()
            if done is not None:
                done.succeed()
            dp_iv[r].append((t0, env.now, name))
            dp_free[r] = env.now

    for r in range(pp):
        env.process(rank_proc(r))
    env.run()
    n_events = next(env._eid) if hasattr(env, "_eid") else 0
    compute_end = max(last_end)
    ends = [max(last_end[r], dp_free[r]) for r in range(pp)]
    makespan = max(ends)
    return dict(
        makespan=makespan, compute_end=compute_end, comp_iv=comp_iv, comm_iv=comm_iv, tl=tl, mem=mem,
        kind_d=kind_d, dp_iv=dp_iv, nets=nets, n_events=n_events, act_stage=act_stage,
        step=to_s(makespan), stage_map=stage_map, ag_wait=ag_wait, sched=sched, p2p_s=to_s(to_ns(act_bytes / p2p_eff + p2p_lat)),
    )


def _to_prediction(sc: Scenario, ev: Evaluator, stages, res: dict, comm: bool, warnings: list[str],
                   tt: _Times, balanced: dict | None = None) -> Prediction:
    """The report of one simulated step ``res``; ``balanced``: the same step simulated at balanced
    expert load (None when routing is balanced), for what imbalance adds to the pacing rank's compute."""
    p = sc.plan
    pp, M = p.pp, sc.microbatches
    _, opt, mems = _dp_and_memory(sc, ev, stages, memory_shape(sc, stages), M, 0.0, 0.0)
    if not comm:
        opt = 0.0
    if comm and p.zero == 3:
        warnings.append("des: ZeRO-3 weight gathers are taken as prefetched in time: they share the NIC and "
                        "the DP stream, and only what is left after the compute is exposed")
    makespan = res["makespan"]
    step = to_s(makespan) + opt
    dp_exposed = to_s(makespan - res["compute_end"] + max(res["ag_wait"], default=0))
    reports = []
    busy_all, hidden_all, exposed_all, compute_all = [], [], [], []
    per_rank_chunks = []
    for r in range(pp):
        ci, mi = res["comp_iv"][r], res["comm_iv"][r]
        comp_t = sum(e - s for s, e in ci)
        comm_t = sum(e - s for s, e in mi)
        hid = _overlap_len(ci, mi)
        busy = comp_t + comm_t - hid
        exposed = comm_t - hid
        busy_all.append(busy)
        compute_all.append(comp_t)
        hidden_all.append(hid)
        exposed_all.append(exposed)
        kd = res["kind_d"][r]
        ch = {k: (to_s(v[0]) / v[1] if v[1] else 0.0) for k, v in kd.items()}
        if kd["W"][1] and kd["B"][1]:
            # DualPipe's B is a full backward chunk: a split backward's weight part runs later as a W task
            # (one per split B), so the full backward is the B tasks' time and the W tasks' together.
            ch["B"] = to_s(kd["B"][0] + kd["W"][0]) / kd["B"][1]
        per_rank_chunks.append({k: v * 1e3 for k, v in ch.items()})
        mb_ = mems[r]
        samples = res["mem"][r]
        peak_act = max(v for _, v in samples)
        static = mb_.params + mb_.grads + mb_.optimizer + mb_.transient + mb_.comm_buffers
        memb = MemoryBreakdown(mb_.params, mb_.grads, mb_.optimizer, peak_act, mb_.transient, mb_.comm_buffers)
        held = rank_stages(p.schedule, pp, p.vpp, r)
        sr = StageReport(rank=r, stages=held, layers=[stages[s] for s in held], F=ch["F"], B=ch["B"], W=ch["W"],
                         FB=ch["FB"], busy=to_s(busy), bubble=step - to_s(busy) - dp_exposed - opt,
                         exposed_comm=to_s(exposed), hidden_comm=to_s(hid), memory=memb)
        pts = [(t, v + static) for t, v in samples]
        sr.memory_over_time = _downsample(pts, makespan)  # type: ignore[attr-defined]
        reports.append(sr)
    r_star = max(range(pp), key=lambda r: busy_all[r])
    busy_s = to_s(busy_all[r_star])
    bubble_s = step - busy_s - dp_exposed - opt
    hidden_s = to_s(hidden_all[r_star])
    exposed_s = to_s(exposed_all[r_star]) + dp_exposed
    timeline = [
        {"rank": r, "stream": st, "name": nm, "kind": k, "mb": mb, "start_s": to_s(a), "end_s": to_s(b)}
        for (r, st, nm, k, mb, a, b) in res["tl"]
    ]
    total = hidden_s + exposed_s
    ct = per_rank_chunks[r_star]
    parts = {}
    if tt.override is None:  # kernel classes are known only for the workload's own times
        runs = M * visits_per_stage(p.schedule)
        work = sum((tt.get(s).scale(runs) for s in rank_stages(p.schedule, pp, p.vpp, r_star)), PassTimes())
        even = None if balanced is None else to_s(sum(e - s for s, e in balanced["comp_iv"][r_star]))
        parts["step_parts_s"] = step_parts(work, to_s(compute_all[r_star]), busy_s, bubble_s, dp_exposed, opt, even)
        parts["recompute_s"] = work.recompute
    return Prediction(
        scenario=sc, engine="des", step_time_s=step, busy_s=busy_s, bubble_s=bubble_s,
        exposed_comm_s=exposed_s, hidden_comm_s=hidden_s, dp_exposed_s=dp_exposed, optimizer_s=opt,
        stages=reports, warnings=list(ev.timer.warnings.values()) + plan_warnings(sc) + warnings,
        extra={
            "microbatches": M, "dp": sc.dp, "p2p_s": res["p2p_s"],
            "overlap_ratio": hidden_s / total if total > 0 else 1.0,
            "chunk_times_ms": ct,
            "chunk_times_ms_per_rank": per_rank_chunks,
            "bubble_per_rank_s": [to_s(makespan - b) for b in busy_all],
            "timeline": timeline,
            "dp_timeline": [{"rank": r, "stream": "dp", "name": nm, "start_s": to_s(a), "end_s": to_s(b)}
                            for r in range(pp) for a, b, nm in res["dp_iv"][r]],
            "des_events": res["n_events"],
            "p2p_flows": [{"name": f.name, "start_s": f.start_s, "end_s": f.end_s, "request_s": to_s(f.t_request_ns)}
                          for net in res["nets"] for f in net.records if f.name.startswith("p2p")][:TIMELINE_CAP],
            "dp_flows": [{"name": f.name, "start_s": f.start_s, "end_s": f.end_s, "link": f.path[0], "bytes": f.nbytes}
                         for net in res["nets"] for f in net.records
                         if f.name.startswith(("reduce-scatter", "all-gather"))][:TIMELINE_CAP],
            "link_stats": {k: v for net in res["nets"] for k, v in net.link_stats().items()},
            **parts,
        },
    )
