"""Analytic engine: one training step from closed forms and short schedule runs, fast enough for plan search.

For each pipeline rank the engine sums its layers' op times per pass (forward
F, backward-for-input B, backward-for-weights W), adds communication by the
overlap rules of the schedule, and assembles the step as::

    step = busy + bubble + exposed data-parallel traffic + optimizer step

where ``busy`` is micro-batches x (F + B + W) of the slowest rank (its F&B
pairs at the time of an overlapped forward/backward pair, its lone chunks at
F or B, where pairs overlap) and ``bubble`` is the schedule's closed form
(see :mod:`simulator.bubble`) plus the P2P sends on the step's critical
path: the fill and drain's, and under 1F1B and Megatron's pairs about two a
micro-batch as well (:func:`simulator.schedules.p2p_hops`). Strict 1F1B (no
pairs, at least PP micro-batches) takes the ranks' own times instead of the
slowest rank's for the fill and drain: its step is the longest path through
them, P2P included (:func:`simulator.bubble.one_f_one_b_makespan`). An
interleaved step whose chunks take unequal times, and every DualPipe(V)
step, is the list scheduler's over the ranks' own chunk times, a long step
from two short runs (:func:`uneven_interleaved_bubble`,
:func:`simulator.schedules.dualpipe_makespan`).

Overlap rules:

- MoE all-to-all: exposed (added to F and B) unless the plan overlaps it
  (``plan.overlaps_ep``: DualPipe/DualPipeV by default; ``on`` under interleaved
  1F1B, or 1F1B without pipelining, is Megatron-LM's batch-level overlap, which
  pairs the steady state). Overlapped, a pair takes ``max(compute with comm SMs
  taken, all-to-all + PP sends on the NIC)``; the lone warm-up and drain chunks
  expose theirs.
- TP collectives: exposed, or hidden behind the GEMMs of the same pass when
  ``plan.tp_comm_overlap`` (only the excess shows, plus the last chunk of a pipelined
  reduce-scatter; the GEMMs pay for the overlap as :mod:`simulator.tp_overlap` says).
- CP ring exchange: hidden behind core attention (the excess shows).
- DP: gradient reduce-scatter hidden behind the last backward (the last W
  where the schedule splits it off: ZB1P, DualPipe), parameter all-gather
  behind the first forward, chunk by chunk under interleaving (PP chunk passes
  apart); under Megatron's 1F1B and interleaved, and ZB1P, rank 0 paces and has
  no bubble at either end, under DualPipe half the bubble adds to each window.
  ZeRO-2/3 reduce every micro-batch from the rank's first backward (after its
  warm-up forwards and the first gradient's round trip); ZeRO-3 gathers weights
  every micro-batch, on the same DP stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from itertools import repeat
from operator import add, attrgetter, mul

from .breakdown import step_parts
from .bubble import closed_form_bubble, one_f_one_b_makespan
from .comm import CommModel
from .config import PlanConfig, Scenario
from .layout import (
    chunks_per_microbatch,
    inflight_by_chunk,
    rank_stages,
    split_balanced,
    split_uniform,
    steady_microbatches,
    visits_per_stage,
)
from .layout import num_stages as layout_num_stages
from .memory import GIB, MemoryBreakdown, deepep_buffer_bytes, state_bytes
from .profile import Profile, load_profile
from .schedules import (
    PAIRABLE,
    SPLIT_BACKWARD,
    TIME_DEPENDENT_HOPS,
    TaskTimes,
    by_rounds,
    dualpipe_step,
    first_rounds,
    idle_at_ends,
    p2p_hops,
    runnable,
)
from .timer import OpTimer
from .workload import (
    BYTES,
    DISPATCH_TRANSPORT,
    LAYER_UNITS,
    MAIN_LAYERS,
    ROUTED_UNITS,
    LayerOps,
    Shape,
    attention_pairs_per_token,
    dispatch_traffic,
    hidden_state_bytes,
    kept_for_backward,
    layer_ops,
    model_units,
    param_counts,
    recompute_transient,
    routing_free,
    shared_weight_copies,
)


@dataclass(frozen=True)
class PassTimes:
    """Seconds of one layer unit (or a stage) for one micro-batch, split by pass and resource."""

    F: float = 0.0  # compute, all SMs
    B: float = 0.0
    W: float = 0.0
    Fr: float = 0.0  # compute with the communication SMs taken
    Br: float = 0.0
    Wr: float = 0.0
    aF: float = 0.0  # MoE all-to-all
    aB: float = 0.0
    xF: float = 0.0  # other exposed communication (TP, CP excess)
    xB: float = 0.0
    ib_bytes: float = 0.0  # all-to-all bytes over IB (both passes)
    recompute: float = 0.0  # part of B that is recomputed forward work
    memory_bound: float = 0.0  # part of F+B+W spent in memory-bound kernels
    gemm: float = 0.0  # part of F+B+W in dense GEMMs
    grouped_gemm: float = 0.0  # part of F+B+W in the routed experts' grouped GEMMs
    attention: float = 0.0  # part of F+B+W in core attention
    # The transformer layers' pieces, as an overlapped pair runs them (see :func:`pair_time`): compute with
    # the communication SMs taken, on the attention side (``A``: attention, norms, router, permutation) and
    # the FFN side (``M``: the dense FFN, or the routed and shared experts), and the all-to-all of each MoE
    # block: dispatch (``D``) and combine (``C``), forward (``f``) and backward (``b``). The backward's ``Cb``
    # is the combine's mirror, the first comm a backward chunk runs. Embedding and head have no pieces.
    pAf: float = 0.0
    pMf: float = 0.0
    pAb: float = 0.0  # backward for input
    pMb: float = 0.0
    pAw: float = 0.0  # backward for weights
    pMw: float = 0.0
    pDf: float = 0.0
    pCf: float = 0.0
    pDb: float = 0.0
    pCb: float = 0.0
    pN: float = 0.0  # transformer layers these pieces cover (dense layers have no D or C)

    # Hot path (a plan adds a rank's stages): map over the field tuples rather than a generator.
    def __add__(self, o: "PassTimes") -> "PassTimes":
        return PassTimes(*map(add, self.astuple(), o.astuple()))

    def scale(self, k: float) -> "PassTimes":
        return PassTimes(*map(mul, self.astuple(), repeat(k)))

    def astuple(self) -> tuple[float, ...]:
        return (self.F, self.B, self.W, self.Fr, self.Br, self.Wr, self.aF, self.aB, self.xF, self.xB,
                self.ib_bytes, self.recompute, self.memory_bound, self.gemm, self.grouped_gemm, self.attention,
                self.pAf, self.pMf, self.pAb, self.pMb, self.pAw, self.pMw, self.pDf, self.pCf, self.pDb, self.pCb, self.pN)


def pair_time(f: PassTimes, b: PassTimes, extra_comm: float = 0.0) -> float:
    """Seconds of an overlapped pair: the forward of one micro-batch (``f``, a stage's times) on the compute
    stream beside the backward of another (``b``), each one's all-to-all on the communication stream.

    The pair is not as short as the longer of its two streams: it runs layer by layer, each layer cut into
    four pieces, and every communication piece waits for the compute piece that makes its input. Megatron-LM's
    ``TransformerLayerSchedulePlan.run`` (megatron/core/models/common/model_chunk_schedule_plan.py) issues,
    for the forward's layer i and the backward's layer n-1-i::

        comm:    combine_bwd | dispatch_fwd -> dispatch_bwd          | combine_fwd
        compute: attn_fwd    | mlp_bwd -> mlp_bwd_dw -> mlp_fwd      | attn_bwd -> attn_bwd_dw

    (dispatch_bwd needs mlp_bwd's gradient, mlp_fwd the dispatched tokens, attn_bwd and combine_fwd both
    wait for dispatch_bwd and mlp_fwd); DeepSeek-V3's Figure 4 pairs the same pieces, rotated (MLP(B), MLP(W),
    MLP(F), ATTN(B), ATTN(W), ATTN(F) beside DISPATCH(F), DISPATCH(B), COMBINE(F), PP, COMBINE(B)). So a
    layer pair costs about max(attn_fwd, combine_bwd) + max(mlp_bwd, dispatch_fwd) + max(mlp_fwd,
    dispatch_bwd) + max(attn_bwd, combine_fwd): communication hides only behind the piece it is paired with.

    The recurrence runs on each side's average layer (exact for equal layers; both streams are taken to
    start a layer together, which leaves the attention weight gradients unoverlapped with the next layer's
    first piece: conservative by at most those). A side with more layers runs its extra ones alone, each
    piece after the one it needs, with the other side's compute outside its layers (embedding, head) free
    to fill their communication's gaps; such compute otherwise adds whole. ``extra_comm``: communication
    queued after the forward's combine (DualPipe's P2P sends), once a pair."""
    if not (f.aF or b.aB):
        return f.Fr + b.Br + b.Wr
    nf, nb = f.pN, b.pN
    n = min(nf, nb)
    own_f = f.Fr - f.pAf - f.pMf  # compute outside the layers
    own_b = b.Br + b.Wr - b.pAb - b.pMb - b.pAw - b.pMw
    # Layers with no partner run their pieces in order, the other side's compute outside its layers (an
    # embedding, a head) filling the gaps their communication leaves.
    if nf > n:
        k = (nf - n) / nf
        alone = own_f + max(k * (f.pAf + f.pMf) + own_b, k * (f.pAf + f.pDf + f.pMf + f.pCf))
    elif nb > n:
        k = (nb - n) / nb
        alone = own_b + max(k * (b.pAb + b.pMb + b.pAw + b.pMw) + own_f,
                            k * (b.pCb + b.pMb + b.pMw + b.pDb + b.pAb + b.pAw))
    else:
        alone = own_f + own_b
    if not n:
        return alone + extra_comm
    kf, kb = n / nf, n / nb  # the share of each side's pieces that runs in pairs
    t1 = max(kf * f.pAf, kb * b.pCb)                           # attn_fwd | combine_bwd
    df_end = t1 + kf * f.pDf                                   # dispatch_fwd
    mb_end = t1 + kb * b.pMb                                   # mlp_bwd
    db_end = max(df_end, mb_end) + kb * b.pDb                  # dispatch_bwd: after dispatch_fwd and mlp_bwd
    mf_end = max(mb_end + kb * b.pMw, df_end) + kf * f.pMf     # mlp_fwd: after mlp_bwd_dw and dispatch_fwd
    t3 = max(db_end, mf_end)
    return max(t3 + kf * f.pCf + extra_comm, t3 + kb * (b.pAb + b.pAw)) + alone


@dataclass
class StageReport:
    rank: int
    stages: list[int]
    layers: list[list[str]]
    F: float
    B: float
    W: float
    FB: float
    busy: float
    bubble: float
    exposed_comm: float
    hidden_comm: float
    memory: MemoryBreakdown


@dataclass
class Prediction:
    """Everything the analytic engine (or the DES) reports about one scenario."""

    scenario: Scenario
    engine: str
    step_time_s: float
    busy_s: float
    bubble_s: float
    exposed_comm_s: float
    hidden_comm_s: float
    dp_exposed_s: float
    optimizer_s: float
    stages: list[StageReport]
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    # ---- derived metrics
    @property
    def tokens_per_step(self) -> float:
        return self.scenario.training.global_batch * self.scenario.training.seq_len

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_step / (self.step_time_s * self.scenario.cluster.num_gpus)

    @property
    def gpu_hours_per_trillion_tokens(self) -> float:
        return 1e12 / (self.tokens_per_s_per_gpu * 3600)

    @property
    def model_flops_per_token(self) -> float:
        """FLOPs the model needs per token: 3 x forward matmuls + causal attention (+MTP), no recompute."""
        return model_flops_per_token(self.scenario.model, self.scenario.training.seq_len)

    @property
    def mfu(self) -> float:
        peak = self.scenario.cluster.gpu.bf16_tflops * 1e12
        return self.tokens_per_s_per_gpu * self.model_flops_per_token / peak

    @property
    def peak_memory_gib(self) -> float:
        return max(s.memory.total for s in self.stages) / GIB

    @property
    def fits_in_memory(self) -> bool:
        return self.peak_memory_gib <= self.scenario.cluster.gpu.hbm_gib


@lru_cache(maxsize=256)
def model_flops_per_token(m, seq: int) -> float:
    pc = param_counts(m)
    matmul = pc.activated - pc.embedding + (pc.embedding if m.tied_embeddings else 0) + pc.mtp_activated
    attn = 0.0
    for i in range(m.layers + m.mtp_depth):
        pairs = attention_pairs_per_token(m, seq, causal=True, layer=i)
        attn += 2 * m.heads * pairs * (m.qk_head_dim + m.v_dim)
    return 6 * matmul + 3 * attn


def resolve_profile(scenario: Scenario, profile: Profile | str | None) -> Profile | None:
    """The profile a prediction times with: the one given, else the cluster's. A given profile without
    collectives rows (a one-GPU calibration) takes the cluster profile's network rows."""
    own = scenario.cluster.profile
    if profile is None:
        return load_profile(own) if own else None
    p = profile if isinstance(profile, Profile) else load_profile(profile)
    if own and not p.tables.get("collectives"):
        p = p.with_collectives_from(load_profile(own))
    return p


class Evaluator:
    """Times layer units for one cluster + profile; reused across the plans of a search."""

    def __init__(self, scenario: Scenario, profile: Profile | None):
        self.timer = OpTimer(scenario.cluster.gpu, profile)
        self.comm = CommModel(scenario.cluster, profile, self.timer.warnings)
        self._units: dict[tuple, PassTimes] = {}
        self._stages: dict[tuple, PassTimes] = {}
        self._stage_mem: dict[tuple, tuple] = {}
        self._rank_mem: dict[tuple, tuple] = {}  # rank_memory, by the units of the stages a rank holds
        self._rank_times: dict[tuple, tuple] = {}  # rank_times, by the identities of a rank's stage times
        self._uneven: dict[tuple, tuple] = {}  # uneven_bubble, by the identities of the ranks' chunk lists
        self._dp_parts: dict[tuple, tuple] = {}  # dp_collectives, by plan and parameter counts
        self._dp_links: dict[tuple, tuple] = {}  # dp_links, the same
        self._facts: dict[int, tuple] = {}  # rank_facts, by the pipeline step's identity (the step kept beside)
        self._activations: dict[tuple, float] = {}  # a pipeline rank's peak activation bytes (_rank_facts)
        self._splits: dict[tuple, list[list[str]]] = {}
        self._layouts: dict[int, tuple] = {}  # layout, by the split's identity (the split kept beside)
        self._steps: dict[tuple, PipelineStep] = {}  # pipeline_step, by the scenario less its ZeRO stage
        self._attn_dw: dict[tuple, float] = {}  # attention_wgrad

    def forget_plans(self) -> None:
        """Drop what was kept per plan (stage splits and layouts, stage and rank sums, DP parts, pipeline steps,
        ranks' DP and memory facts), keeping the per-layer timings and memory that other plans of the same shapes
        reuse: a search worker calls it between chunks, so that a long search holds one chunk's plans, not all of
        them (DeepSeek-V3: 0.57 GB a worker after 35,820 plans without it)."""
        for cache in (self._stages, self._rank_mem, self._rank_times, self._uneven, self._dp_parts, self._dp_links,
                      self._splits, self._layouts, self._steps, self._facts, self._activations):
            cache.clear()

    def layout(self, sc: Scenario, stages: list[list[str]]) -> tuple[list, tuple]:
        """What a split's timing depends on besides the plan's numbers: per stage, (its units, its place in the
        window cycle); per pipeline rank, (the stages it holds, its signature by those stage keys, its
        signature by units alone, the stage its step opens and closes with, that stage's layer count). Ranks
        with equal signatures time (keys) or hold (units) the same.

        Hot path: a split comes from ``stage_units``' cache, whose key holds the model and the schedule's
        shape, so it is the same object for every plan that shares it; its layout is kept by its identity
        (with the split itself, so that the id stays its own)."""
        hit = self._layouts.get(id(stages))
        if hit is not None and hit[0] is stages:
            return hit[1], hit[2]
        p = sc.plan
        keys = [(tuple(units), window_phase(sc.model, f)) for units, f in zip(stages, stage_first_layers(stages))]
        ranks = []
        for r in range(p.pp):
            held = rank_stages(p.schedule, p.pp, p.vpp, r)
            edge = min(held)  # micro-batches enter a rank's stages there
            ranks.append((held, tuple(keys[s] for s in held), tuple(keys[s][0] for s in held), edge,
                          max(1, len(stages[edge]))))
        self._layouts[id(stages)] = (stages, keys, tuple(ranks))
        return keys, tuple(ranks)

    def rank_facts(self, sc: Scenario, st: PipelineStep) -> tuple:
        """:func:`_rank_facts` of a pipeline step, kept by its identity (``pipeline_step`` keeps one object for the
        plan's ZeRO variants, and the entry holds it, so the id stays its own)."""
        hit = self._facts.get(id(st))
        if hit is None or hit[0] is not st:
            hit = self._facts[id(st)] = (st, _rank_facts(sc, self, st.stages, st.memory_shape, st.microbatches, st.F,
                                                         st.B, st.nic_mb, st.p2p, st.grads_last, st.rank_ends))
        return hit[1]

    def stage_times(self, sc: Scenario, units: tuple[str, ...], shape: Shape, first: int = 0) -> PassTimes:
        """Sum of a stage's unit times (hot path: stages repeat, unit kinds repeat). ``first``: the model layer
        index of the stage's first transformer layer, which decides which of its layers are windowed where
        windowed and full attention alternate (gpt-oss)."""
        p = sc.plan
        phase = window_phase(sc.model, first)
        key = (units, phase, shape, p.comm_sms, p.ep_overlap, p.schedule, p.tp_comm_overlap, p.cp_comm, sc.model,
               sc.cluster)
        hit = self._stages.get(key)
        if hit is None:
            count: dict[tuple[str, int], int] = {}
            for unit in unit_layers(sc.model, units, phase):
                count[unit] = count.get(unit, 0) + 1
            # In stage order: the same sum in every process (a set's order follows the hash seed). Summed as
            # tuples, field by field as PassTimes' + and scale would, without building one for each step.
            tot = PassTimes().astuple()
            for (kind, layer), n in count.items():
                tot = tuple(map(add, tot, map(mul, self.unit_times(sc, kind, shape, layer).astuple(), repeat(n))))
            hit = self._stages[key] = PassTimes(*tot)
        return hit

    def stage_memory(self, sc: Scenario, units: tuple[str, ...], shape: Shape) -> tuple[float, float, float, float,
                                                                                       float]:
        """(dense params, expert params, activation bytes kept per micro-batch, the largest transient of
        full recomputation: one block's activations rebuilt before its backward, the params of the largest
        layer unit: what sharded data parallelism holds whole while that unit runs)."""
        key = (units, shape, sc.model, sc.cluster.gpus_per_node, sc.plan.recompute)
        hit = self._stage_mem.get(key)
        if hit is None:
            pd = pe = act = act_max = unit_max = 0.0
            per_kind: dict[str, tuple] = {}  # a stage repeats few kinds (V3's 61 layers are 3): each looked up once
            for kind in units:
                k = per_kind.get(kind)
                if k is None:
                    lo = layer_ops(sc.model, kind, shape, sc.cluster.gpus_per_node)
                    k = per_kind[kind] = (lo.params_expert, lo.params - lo.params_expert, lo.params,
                                          kept_for_backward(sc.model, kind, shape, lo),
                                          recompute_transient(sc.model, kind, shape, sc.cluster.gpus_per_node))
                pe += k[0]  # summed unit by unit, in the stage's order, as before
                pd += k[1]
                unit_max = max(unit_max, k[2])
                act += k[3]
                act_max = max(act_max, k[4])
            hit = self._stage_mem[key] = (pd, pe, act, act_max, unit_max)
        return hit

    def rank_memory(self, sc: Scenario, held: tuple[tuple[str, ...], ...], shape: Shape) -> tuple:
        """A pipeline rank's sums of :meth:`stage_memory` over the stages it holds (``held``: their units):
        (dense params, with the copies of weights shared between its stages, expert params, activation bytes
        kept per micro-batch, the largest transient, the largest layer unit's params, the activation bytes of
        each stage). Hot path: one lookup a rank kind, where the stages' own are one a stage (Llama 3's
        interleaved ranks hold 8)."""
        key = (held, shape, sc.model, sc.cluster.gpus_per_node)
        hit = self._rank_mem.get(key)
        if hit is None:
            pd = pe = act = act_max = unit = 0.0
            chunk_act = []
            for units in held:
                spd, spe, sact, smax, sunit = self.stage_memory(sc, units, shape)
                pd, pe, act, act_max, unit = pd + spd, pe + spe, act + sact, max(act_max, smax), max(unit, sunit)
                chunk_act.append(sact)
            pd += shared_weight_copies(sc.model, (u for units in held for u in units), shape.tp)
            hit = self._rank_mem[key] = (pd, pe, act, act_max, unit, tuple(chunk_act))
        return hit

    def rank_times(self, held: tuple[PassTimes, ...], overlap: bool) -> tuple[PassTimes, list[tuple[float, float]]]:
        """A pipeline rank's times from its stages' (``held``, from :meth:`stage_times`): their sum, each as its
        half of an overlapped pair runs it where ``overlap``, and per stage (forward, full backward) with the
        communication on the path (an interleaved rank's chunks).

        Hot path: keyed by the stages' identities (``stage_times`` keeps one object per stage kind, and the
        entry holds them, so an id stays theirs), where hashing 27 floats a stage would cost as much as the sum."""
        key = (tuple(map(id, held)), overlap)
        hit = self._rank_times.get(key)
        if hit is None:
            tot = PassTimes()
            parts = [paired_sms(x, overlap) for x in held]
            for x in parts:
                tot = tot + x
            fb = [(x.F + x.aF + x.xF, x.B + x.W + x.aB + x.xB) for x in parts]
            hit = self._rank_times[key] = (tot, fb, held)
        return hit[0], hit[1]

    def uneven_bubble(self, chunks: list[list[tuple[float, float]]], pp: int, vpp: int,
                      microbatches: int) -> tuple[float, int] | None:
        """:func:`uneven_interleaved_bubble`, kept by the identities of the ranks' chunk lists (those of
        :meth:`rank_times`, one per rank kind; the entry holds them, so an id stays theirs): rounding and
        hashing 16 ranks' chunks took longer than the rest of an interleaved Llama 3 plan's pipeline."""
        key = (tuple(map(id, chunks)), pp, vpp, microbatches)
        hit = self._uneven.get(key)
        if hit is None:
            hit = self._uneven[key] = (uneven_interleaved_bubble(chunks, pp, vpp, microbatches), chunks)
        return hit[0]

    def unit_times(self, sc: Scenario, kind: str, shape: Shape, layer: int = 0) -> PassTimes:
        p = sc.plan
        comm_sms = comm_sms_held(sc)
        key = (sc.model, kind, shape, layer, comm_sms, p.tp_comm_overlap, p.cp_comm, p.ep, sc.cluster)
        hit = self._units.get(key)
        if hit is not None:
            return hit
        first = key
        if kind not in ROUTED_UNITS:  # no routed experts: timed once for every EP size and routing (routing_free)
            first = (sc.model, kind, routing_free(shape), layer, comm_sms, p.tp_comm_overlap, p.cp_comm, 1, sc.cluster)
            hit = self._units.get(first)
            if hit is not None:
                self._units[key] = hit
                return hit
        lo = layer_ops(sc.model, kind, shape, sc.cluster.gpus_per_node, layer)
        res = self._units[key] = self._units[first] = self._time_unit(lo, p, comm_sms)
        return res

    def attention_wgrad(self, sc: Scenario, kind: str, shape: Shape) -> float:
        """Seconds of one layer unit's attention-block weight gradients (the router included, as
        Megatron's ``attn`` schedule node holds it), with the SMs communication holds."""
        sms = comm_sms_held(sc)
        key = (kind, shape, sms, sc.model, sc.cluster.gpus_per_node)
        hit = self._attn_dw.get(key)
        if hit is None:
            lo = layer_ops(sc.model, kind, shape, sc.cluster.gpus_per_node)
            sms_r = self._sms_left(sms)
            hit = self._attn_dw[key] = sum(self.timer.time(op, sms_r) for op in lo.W
                                           if op.block == "attn" and op.kind != "comm")
        return hit

    def _sms_left(self, comm_sms: int) -> int | None:
        """SMs compute keeps while communication holds ``comm_sms`` (None: all of them)."""
        return self.timer.gpu.sms - comm_sms if comm_sms else None

    def _time_unit(self, lo: LayerOps, p, comm_sms: int) -> PassTimes:
        t = self.timer
        sms_r = self._sms_left(comm_sms)
        acc = {"F": [0.0, 0.0], "B": [0.0, 0.0], "W": [0.0, 0.0]}
        a2a = {"F": 0.0, "B": 0.0}
        gemm = {"F": 0.0, "B": 0.0}
        attn = {"F": 0.0, "B": 0.0}
        ib = recompute = 0.0
        by_kind = {"gemm": 0.0, "grouped_gemm": 0.0, "attention": 0.0, "memory": 0.0}  # F+B+W, all SMs
        piece = dict.fromkeys(("AF", "MF", "AB", "MB", "AW", "MW", "dispatchF", "combineF", "dispatchB",
                               "combineB"), 0.0)  # pair_time's pieces, keyed by side or block, then pass
        times = t.pairs(sms_r)  # op -> (all SMs, the SMs communication leaves)
        # Hot loop (~70 ops a unit, ~1,500 units a V3 worker's six chunks): a pass's sums in locals, each added
        # in op order as it would be in place.
        for ph, ops in (("F", lo.F), ("B", lo.B), ("W", lo.W)):
            all_sms = fewer_sms = side_a = side_m = gemm_t = attn_t = 0.0
            for op in ops:
                kind = op.kind
                if kind == "comm":
                    dt = self.comm.op_time(op, p.ep, p.tp, p.cp)
                    if op.comm in ("dispatch", "combine"):
                        a2a[ph] += dt
                        ib += op.comm_bytes * op.m
                        piece[op.block + ph] += dt
                    continue  # TP/CP collectives: overlap rules below
                d, dr = times.get(op) or t.pair(op, sms_r)
                all_sms += d
                fewer_sms += dr
                if op.block == "mlp":
                    side_m += dr
                else:
                    side_a += dr
                by_kind[kind] += d
                if op.recompute:
                    recompute += d
                if kind == "gemm" or kind == "grouped_gemm":
                    gemm_t += d
                elif kind == "attention":
                    attn_t += d
            acc[ph] = [all_sms, fewer_sms]
            piece["A" + ph] = side_a
            piece["M" + ph] = side_m
            if ph in gemm:  # F and B: what their own TP and CP collectives hide behind (below)
                gemm[ph] = gemm_t
                attn[ph] = attn_t
        exposed = {}
        for ph in ("F", "B"):
            ops = lo.F if ph == "F" else lo.B
            tp_t = tail = 0.0
            for op in ops:
                if op.comm == "tp":
                    dt = self.comm.op_time(op, p.ep, p.tp, p.cp)
                    tp_t += dt
                    tail += dt / op.splits if op.splits > 1 else 0.0  # last chunk after the last GEMM chunk
            cp_t = sum(self.comm.op_time(op, p.ep, p.tp, p.cp) for op in ops if op.comm == "cp")
            tp_exposed = tail + max(0.0, tp_t - tail - gemm[ph]) if p.tp_comm_overlap else tp_t
            exposed[ph] = tp_exposed + (cp_t if p.cp_comm == "allgather" else max(0.0, cp_t - attn[ph]))
        layer = lo.kind in LAYER_UNITS
        if not layer:
            piece = dict.fromkeys(piece, 0.0)  # embedding, head: their compute adds to a pair whole
        return PassTimes(
            acc["F"][0], acc["B"][0], acc["W"][0], acc["F"][1], acc["B"][1], acc["W"][1],
            a2a["F"], a2a["B"], exposed["F"], exposed["B"], ib, recompute, by_kind["memory"],
            by_kind["gemm"], by_kind["grouped_gemm"], by_kind["attention"],
            piece["AF"], piece["MF"], piece["AB"], piece["MB"], piece["AW"], piece["MW"],
            piece["dispatchF"], piece["combineF"], piece["dispatchB"], piece["combineB"], 1.0 if layer else 0.0,
        )


def _window_cycle(m) -> int:
    """Layers in one cycle of windowed and full attention (1: all alike)."""
    return m.sliding_window_every if m.sliding_window else 1


def window_phase(m, first: int) -> int:
    """Where a stage starting at model layer ``first`` falls in the cycle of windowed and full-attention
    layers."""
    return first % _window_cycle(m)


def unit_layers(m, units, phase: int = 0) -> list[tuple[str, int]]:
    """A stage's units with the layer index each is timed at: 0 for a windowed transformer layer, 1 for a
    full-attention one where the two alternate (``workload.attention_pairs_per_token`` windows layer i when
    i % sliding_window_every == 0), else 0; ``phase`` as :func:`window_phase` gives it."""
    every = _window_cycle(m)
    if every == 1:
        return [(kind, 0) for kind in units]
    out, i = [], phase
    for kind in units:
        if kind in MAIN_LAYERS:
            out.append((kind, 0 if i % every == 0 else 1))
            i += 1
        else:
            out.append((kind, 0))
    return out


def stage_first_layers(stages) -> list[int]:
    """Per stage, the model layer index of its first transformer layer (stages are the model's units in order)."""
    out, n = [], 0
    for units in stages:
        out.append(n)
        n += sum(1 for kind in units if kind in MAIN_LAYERS)
    return out


def comm_sms_held(sc: Scenario) -> int:
    """SMs the all-to-all kernels hold while compute runs beside them: the plan's ``comm_sms``
    when the all-to-all overlaps compute, else none (it then runs alone, between kernels)."""
    return sc.plan.comm_sms if sc.ep_overlapped else 0


def stage_units(sc: Scenario, ev: Evaluator, shape: Shape) -> list[list[str]]:
    """The layer units of each pipeline stage (memoized per evaluator: plans that differ
    only in fields the split ignores, e.g. ZeRO stage, share it)."""
    p = sc.plan
    comm_sms = comm_sms_held(sc)
    key = (sc.model, sc.cluster, p.schedule, p.pp, p.vpp, p.layer_split, shape, comm_sms, p.tp_comm_overlap, p.ep)
    hit = ev._splits.get(key)
    if hit is not None:
        return hit
    units = model_units(sc.model)
    n = layout_num_stages(p.schedule, p.pp, p.vpp)
    if p.layer_split == "uniform":
        hit = split_uniform(units, n)
    else:
        # Each unit costed at its own place in the model: where windowed and full-attention layers
        # alternate (gpt-oss) the two weigh differently.
        timed = unit_layers(sc.model, units)
        cost = {}
        for kind, layer in set(timed):
            u = ev.unit_times(sc, kind, shape, layer)
            cost[kind, layer] = u.F + u.B + u.W + u.aF + u.aB
        parts = split_balanced(range(len(units)), n, lambda i: cost[timed[i]])
        hit = [[units[i] for i in part] for part in parts]
    ev._splits[key] = hit
    return hit


# DeepEP's normal kernels run on 20 SMs unless told otherwise (deep_ep.Buffer.num_sms in deepseek-ai/DeepEP
# deep_ep/buffer.py), and the profile's all-to-all rows (DeepEP's README figures) were measured so.
DEEPEP_MEASURED_SMS = 20


def plan_caveats(sc: Scenario) -> list[tuple[str, bool]]:
    """What a prediction of this plan leaves out or bends, each with whether it changes what the headline
    means (a mechanism priced cheaper than any measurement supports, so the step can only look faster)."""
    p, m = sc.plan, sc.model
    out = []
    chunks = p.pp * p.vpp
    # A balanced split that gives the embedding and head chunks of their own (Llama 3) is even too.
    even = m.layers % chunks == 0 or (p.layer_split == "balanced" and len(model_units(m)) % chunks == 0)
    if p.schedule == "interleaved" and p.vpp > 1 and not even:
        out.append((f"interleaved: {m.layers} layers over pp={p.pp} x vpp={p.vpp} virtual stages do not split "
                    "evenly (Megatron-LM's uniform split refuses it; Megatron-Core's --pipeline-model-parallel-layout "
                    "runs it); modelled with uneven chunks, whose steady state stalls", False))
    if p.dispatcher == "alltoall" and m.is_moe and p.ep > 1:
        out.append(("alltoall dispatcher: the host-device sync for the all-to-all split sizes (one per MoE layer "
                    "and micro-batch) and the host's kernel launches are not costed", False))
        if sc.ep_overlapped and runnable(p.schedule) in PAIRABLE:
            # Megatron-Bridge PRs #3862/#3868 (Qwen3-30B-A3B, 16 H100, BF16, EP16): 41.25 s -> 31.31 s.
            out.append(("Megatron's all-to-all overlap is credited piece by piece (a layer's dispatch and combine "
                        "hide behind the other micro-batch's attention or experts); measured on Qwen3-30B-A3B "
                        "(16 H100, EP16) it gave 1.32x, below the 1.62x predicted for that plan "
                        "(tests/data/supplementary.csv): treat the overlap gain as optimistic", True))
    if p.dispatcher == "deepep" and m.is_moe and p.ep > 1 and p.comm_sms < DEEPEP_MEASURED_SMS:
        out.append((f"comm_sms={p.comm_sms} is below the {DEEPEP_MEASURED_SMS} SMs DeepEP's all-to-all rates were "
                    f"measured with: the dispatch and combine keep those rates while compute keeps the SMs they "
                    "give up, so fewer communication SMs can only look faster (the slower all-to-all is not costed)",
                    True))
    if p.tp_comm_overlap and p.tp > 1 and not p.sp:
        out.append(("tp_comm_overlap without sequence parallelism: Transformer Engine's userbuffers overlap needs "
                    "it; modelled as all-reduces hidden behind the GEMMs at no cost to them", True))
    if m.attention_dropout > 0 and p.attention_kernel != "unfused":
        out.append((f"attention dropout runs inside the fused {p.attention_kernel} kernel: its cost is not in the "
                    "attention rows, which were measured without dropout (not costed)", False))
    return out


def plan_warnings(sc: Scenario) -> list[str]:
    """What a prediction of this plan leaves out or bends (per plan: an Evaluator serves many)."""
    return [text for text, _ in plan_caveats(sc)]


def headline_warnings(sc: Scenario) -> list[str]:
    """The plan warnings that change what the headline figures mean (see :func:`plan_caveats`)."""
    return [text for text, headline in plan_caveats(sc) if headline]


@lru_cache(maxsize=256)
def lone_chunks(schedule: str, pp: int, microbatches: int, vpp: int,
                pairs: bool = False) -> tuple[tuple[int, int, int], ...]:
    """Per rank: (forward chunks run alone, backward chunks run alone, forward-backward pairs).

    Under DualPipe the warm-up forwards and the cool-down backwards have no partner chunk, so
    their all-to-all cannot hide behind another micro-batch's compute (V3 Figure 5's edges).
    ``pairs``: Megatron-LM's batch-level overlap of a 1F1B or interleaved steady state (see
    :func:`simulator.schedules.build_schedule`); counts are in chunks (1/vpp of a rank's layers).

    Past a few pipeline fills (:func:`simulator.layout.steady_microbatches`) more micro-batches only lengthen
    the steady state: each adds its forward chunks on the rank (``chunks_per_microbatch``) as pairs where the
    schedule pairs (DualPipe, DualPipeV, ``pairs``), as lone forwards and backwards where it does not, to the
    counts of the capped step (checked over a grid in tests/test_analytic.py). A plan search meets counts in
    the thousands (DeepSeek-V3 at DP 8: 1,920), whose schedules took 60 ms to build."""
    from .schedules import build_schedule

    cap = steady_microbatches(schedule, pp, vpp, microbatches)
    more = (microbatches - cap) * round(chunks_per_microbatch(schedule, vpp))
    paired = pairs or schedule in ("dualpipe", "dualpipev")
    out = []
    for tasks in build_schedule(schedule, pp, cap, vpp, pairs):
        kinds = [t.kind for t in tasks]
        n_f, n_b, n_fb = kinds.count("F"), kinds.count("B"), kinds.count("FB")
        out.append((n_f, n_b, n_fb + more) if paired else (n_f + more, n_b + more, n_fb))
    return tuple(out)


def paired_sms(st: PassTimes, overlap: bool) -> PassTimes:
    """A stage's times as its half of an overlapped pair runs them: with the all-to-all kernels' SMs taken
    (``Fr``, ``Br``, ``Wr``), unless the stage has no all-to-all (embedding, dense or head layers only), whose
    half runs on all SMs (exact when its partner has none either, as the DES prices pairs)."""
    if overlap and not (st.aF or st.aB):
        return replace(st, Fr=st.F, Br=st.B, Wr=st.W)
    return st


def rank_bubble(p, f: float, b: float, w: float, fb: float) -> float:
    """The closed-form bubble of a 1F1B, interleaved or ZB1P plan from a rank's per-micro-batch times
    (interleaved's formula divides by V itself). DualPipe and DualPipeV are list-scheduled instead
    (schedules.dualpipe_makespan)."""
    return max(closed_form_bubble(p.schedule, p.pp, f, b, w, fb, p.vpp), 0.0)


def uneven_interleaved_bubble(chunks: list[list[tuple[float, float]]], pp: int, vpp: int,
                              microbatches: int) -> tuple[float, int] | None:
    """The bubble of an interleaved step whose virtual stages take different times, and its busiest rank;
    None where they are alike (the closed form holds).

    ``chunks[r][c]``: rank r's chunk c, (forward, full backward) of one micro-batch. 95 layers over PP16 x
    VPP4 give each rank chunks of 2, 2, 1 and 1 layers (Megatron-Core's ``--pipeline-model-parallel-layout``
    runs such splits). The closed form (PP-1)(F+B)/V takes a rank's mean chunk; the schedule's order is
    rigid (PP micro-batches through chunk 0, then chunk 1, ...), and rank r starts 2(PP-1-r) forwards later
    than rank 0 in it, so a rank running a heavy forward beside a light backward waits on a neighbour running
    the opposite, in the steady state too: on DeepSeek 67B at TP1 PP16 CP2 VPP4 the list scheduler's bubble
    is 2.2 s, the closed form's 0.33 s. The list scheduler runs it here
    (:func:`simulator.schedules.simulate` with ``chunk_times``), on times in units of the mean chunk (F + B)
    rounded to 0.1 % of it so that a plan search looks each shape up once (1 % put a 1.3 : 2.5 chunk's bubble
    2.4 % off), and, as :func:`simulator.schedules.p2p_hops`,
    past two rounds of PP micro-batches from two short runs (the order repeats every PP micro-batches)."""
    # Ranks holding the same layers share one list (most of them): round each distinct list once.
    distinct = {id(rank): rank for rank in chunks}
    if len({fb for rank in distinct.values() for fb in rank}) == 1:
        return None
    unit = sum(f + b for rank in chunks for f, b in rank) / sum(len(rank) for rank in chunks)
    if unit <= 0:
        return None
    rounded = {k: tuple((round(f / unit, 3), round(b / unit, 3)) for f, b in rank) for k, rank in distinct.items()}
    key = tuple(rounded[id(rank)] for rank in chunks)
    bubble = by_rounds(lambda m: _uneven_interleaved(key, pp, vpp, m)[0], pp, microbatches)
    return max(0.0, bubble) * unit, _uneven_interleaved(key, pp, vpp, first_rounds(pp, microbatches))[1]


@lru_cache(maxsize=16384)  # a V3 search meets ~1,000 shapes a worker; a few hundred bytes each
def _uneven_interleaved(key: tuple, pp: int, vpp: int, microbatches: int) -> tuple[float, int]:
    from .schedules import simulate

    times = [[TaskTimes(f, b, 0.0, f + b) for f, b in rank] for rank in key]
    tl = simulate("interleaved", pp, microbatches, times[0][0], vpp, chunk_times=times)
    busiest = max(range(pp), key=tl.busy)
    return tl.makespan - tl.busy(busiest), busiest


@lru_cache(maxsize=256)
def warmup_forwards(schedule: str, pp: int, microbatches: int, vpp: int, pairs: bool = False) -> tuple[int, ...]:
    """Per rank: the forward chunks it runs before its first backward (its warm-up; every one of them on
    an interleaved rank 0 when the micro-batches are no more than PP). The warm-up ends within a few fills:
    a longer step's is that of :func:`simulator.layout.steady_microbatches` (checked in tests/test_analytic.py)."""
    from .schedules import build_schedule

    out = []
    for tasks in build_schedule(schedule, pp, steady_microbatches(schedule, pp, vpp, microbatches), vpp, pairs):
        n = 0
        while n < len(tasks) and tasks[n].kind == "F":
            n += 1
        out.append(n)
    return tuple(out)


def routing_config(sc: Scenario):
    """The plan's expert routing (``plan.routing``: Zipf skew or a given histogram, node-limited top-k,
    redundant experts) as :class:`simulator.des.routing.RoutingConfig` for one micro-batch's tokens on a
    GPU; None for balanced routing, a dense model or EP 1. Raises ValueError where the sampler cannot
    route it."""
    p, m = sc.plan, sc.model
    if p.routing == "balanced" or not m.is_moe or p.ep <= 1:
        return None
    from .des.routing import RoutingConfig

    return RoutingConfig(
        tokens=p.micro_batch * sc.training.seq_len // p.cp, n_experts=m.n_routed_experts, top_k=m.experts_per_token,
        ep=p.ep, gpus_per_node=sc.cluster.gpus_per_node, max_nodes=m.max_nodes_per_token, skew=p.routing,
        zipf_s=p.zipf_s, histogram=tuple(p.expert_histogram) or None, redundant=p.redundant_experts, seed=p.seed)


def routing_imbalance(sc: Scenario) -> float:
    """The most loaded EP rank's expert tokens over the mean under the plan's routing, the mean over sampled
    layers (:func:`simulator.des.routing.expected_max_load_factor`); 1.0 without skew (:func:`routing_config`)."""
    cfg = routing_config(sc)
    if cfg is None:
        return 1.0
    from .des.routing import expected_max_load_factor

    return expected_max_load_factor(cfg)


def memory_shape(sc: Scenario, stages: list[list[str]]) -> Shape:
    """The shape whose activations a rank's memory holds. Under skewed routing a rank keeps its expert
    activations summed over its MoE layers, so the skew that counts is the most loaded rank's total over
    the most MoE layers a pipeline rank holds (:func:`simulator.des.routing.memory_load_factor`), not the
    per-layer max that paces time."""
    p = sc.plan
    try:
        cfg = routing_config(sc)
    except ValueError:  # routing the sampler cannot place: the engines say so where they time it
        cfg = None
    if cfg is None:
        return Shape.of(p, sc.training.seq_len)
    from .des.routing import memory_load_factor

    moe_units = max(sum(u in ROUTED_UNITS for s in rank_stages(p.schedule, p.pp, p.vpp, r) for u in stages[s])
                    for r in range(p.pp))
    return Shape.of(p, sc.training.seq_len, round(memory_load_factor(cfg, moe_units), 4))


def predict_analytic(sc: Scenario, profile: Profile | str | None = None, imbalance: float | None = None,
                     evaluator: Evaluator | None = None) -> Prediction:
    """Predict one training step of a validated scenario with the closed-form engine.

    ``imbalance``: the most loaded EP rank's expert tokens over the mean (None: what the plan's
    routing gives, :func:`routing_imbalance`); every micro-batch's expert work and all-to-all are
    priced at it."""
    routing_note = []
    if imbalance is None:
        try:
            imbalance = routing_imbalance(sc)
        except ValueError as e:  # as the DES: routing the sampler cannot place is taken as balanced, and said
            imbalance = 1.0
            routing_note.append(f"routing: {e}; expert load taken as balanced")
    prof = evaluator.timer.profile if evaluator else resolve_profile(sc, profile)
    ev = evaluator or Evaluator(sc, prof)
    st = pipeline_step(sc, ev, imbalance)
    dp_exposed, opt_time, mem = _dp_and_memory(sc, ev, st.stages, st.memory_shape, st.microbatches, st.F, st.B,
                                               st.nic_mb, span=st.busy + st.bubble, p2p=st.p2p,
                                               grads_last=st.grads_last, rank_ends=st.rank_ends,
                                               facts=ev.rank_facts(sc, st))
    step = st.busy + st.bubble + dp_exposed + opt_time
    stage_reports = [
        StageReport(rank=r, stages=held, layers=[st.stages[s] for s in held], F=f, B=b, W=w, FB=fb, busy=busy,
                    bubble=max(0.0, step - busy - dp_exposed - opt_time), exposed_comm=exp, hidden_comm=hid,
                    memory=memb)
        for (r, held, f, b, w, fb, busy, exp, hid), memb in zip(st.ranks, mem)
    ]
    return Prediction(
        scenario=sc, engine="analytic", step_time_s=step, busy_s=st.busy, bubble_s=st.bubble,
        exposed_comm_s=st.exposed_comm + dp_exposed, hidden_comm_s=st.hidden_comm, dp_exposed_s=dp_exposed,
        optimizer_s=opt_time, stages=stage_reports,
        warnings=list(ev.timer.warnings.values()) + plan_warnings(sc) + routing_note,
        extra={
            "microbatches": st.microbatches, "dp": sc.dp, "p2p_s": st.p2p, "pair_p2p_s": st.pair_p2p,
            "total_comm_s": st.total_comm + dp_exposed,
            "memory_bound_s": st.memory_bound, "recompute_s": st.recompute,
            "step_parts_s": step_parts(st.work, st.compute, st.busy, st.bubble, dp_exposed, opt_time, st.even),
            "mean_imbalance": imbalance, "chunk_times_ms": dict(st.chunk_times_ms),
        },
    )


@dataclass(frozen=True)
class PipelineStep:
    """A plan's step without its data-parallel traffic, optimizer and memory, which are all that its ZeRO stage
    changes (:func:`_dp_and_memory` adds them): the pacing rank's per-micro-batch times (F, B, through the chunks
    of it a micro-batch runs), its work and bubble over the step, the communication on and off its path, and
    per rank what its report needs (rank, stages held, per-chunk F, B, W, F&B, busy, exposed and hidden
    communication)."""

    stages: list
    memory_shape: Shape
    microbatches: int
    F: float
    B: float
    busy: float
    bubble: float
    compute: float
    p2p: float
    nic_mb: tuple  # per rank, a micro-batch's other NIC time, which the per-micro-batch ZeRO-2/3 reductions share
    grads_last: float  # a micro-batch's time in the tasks that make its weight gradients (the last reductions wait)
    hidden_comm: float
    exposed_comm: float
    total_comm: float
    work: PassTimes  # the pacing rank's kernel classes over the step, at balanced expert load
    even: float | None  # its compute at balanced load, where the plan's routing is skewed
    memory_bound: float
    recompute: float
    chunk_times_ms: tuple
    ranks: tuple
    rank_ends: tuple = ()  # DualPipe: each rank's (idle before, idle after, other stage's lead, first grads), schedules.dualpipe_step
    pair_p2p: float | tuple = 0.0  # DualPipe: what a pair's outputs wait past its end (per rank and chunk where they differ)


# Every plan field but the ZeRO stage, read at once (hot path: a copy of the plan with the stage cleared took
# 14 us, as long as the rest of a cache hit).
_PLAN_BUT_ZERO = attrgetter(*(f.name for f in fields(PlanConfig) if f.name != "zero"))


def pipeline_step(sc: Scenario, ev: Evaluator, imbalance: float) -> PipelineStep:
    """:func:`_pipeline_step`, kept on the Evaluator by the scenario less its ZeRO stage: a search meets each
    shape under ZeRO-1, 2 and 3 in a row (DeepSeek-V3: 35,820 plans, 15,066 without the stage), and only the
    data-parallel traffic, optimizer and memory of a prediction differ between them."""
    key = (_PLAN_BUT_ZERO(sc.plan), sc.model, sc.cluster, sc.training, imbalance)
    hit = ev._steps.get(key)
    if hit is None:
        hit = ev._steps[key] = _pipeline_step(sc, ev, imbalance)
    return hit


def _pipeline_step(sc: Scenario, ev: Evaluator, imbalance: float) -> PipelineStep:
    """The pipeline part of :func:`predict_analytic`: stages and their times, the pacing rank, bubble and P2P,
    the all-to-all hidden in pairs or exposed alone."""
    p, m, c, t = sc.plan, sc.model, sc.cluster, sc.training
    shape = Shape.of(p, t.seq_len, imbalance)
    M = sc.microbatches
    dp = sc.dp
    stages = stage_units(sc, ev, shape)
    # Stages holding the same units time the same: look each distinct one up once (Llama 3's 128 one-block
    # stages are three kinds).
    keys, rank_layout = ev.layout(sc, stages)
    distinct = dict.fromkeys(keys)
    for units, phase in distinct:
        distinct[units, phase] = ev.stage_times(sc, units, shape, phase)
    stage_t = [distinct[k] for k in keys]

    overlap = sc.ep_overlapped
    vk = chunks_per_microbatch(p.schedule, p.vpp)  # the chunks of a rank one micro-batch runs through
    act_bytes = hidden_state_bytes(m, shape)
    cross_node_pp = p.tp * p.cp * dp > c.gpus_per_node or p.pp > 1 and c.num_gpus > c.gpus_per_node
    p2p = ev.comm.p2p(act_bytes, cross_node_pp) if p.pp > 1 else 0.0
    dual = p.schedule in ("dualpipe", "dualpipev")
    # Whether the MoE all-to-all crosses nodes, so that its traffic takes the NIC the P2P and DP traffic use.
    a2a_on_nic = m.is_moe and p.ep > 1 and dispatch_traffic(m, p.ep, c.gpus_per_node, p.dispatcher)[0] > 0

    ranks = []
    seen: dict[tuple, tuple] = {}  # ranks holding the same layers time the same (most of them)
    chunk_fb: dict[tuple, list[tuple[float, float]]] = {}
    for r, (held, sig, _, _, _) in enumerate(rank_layout):
        if sig in seen:
            ranks.append((r, held) + seen[sig])
            continue
        tot, fb = ev.rank_times(tuple(stage_t[s] for s in held), overlap)
        if p.schedule == "interleaved":  # per chunk: forward and full backward, communication on the path
            chunk_fb[sig] = fb
        share = visits_per_stage(p.schedule)
        if share != 1.0:
            tot = tot.scale(share)  # DualPipe: each micro-batch visits one of the two stages on this rank
        # Lone chunks: communication on the critical path.
        F = tot.F + tot.aF + tot.xF
        B = tot.B + tot.W + tot.aB + tot.xB  # full backward (DualPipe's B)
        W = tot.W
        if overlap:
            pair_compute = tot.Fr + tot.Br + tot.Wr
            pair_comm = tot.aF + tot.aB + (2 * p2p * vk if dual else 0.0)  # a DualPipe pair's two sends, vk a mb
            if dual:
                # DualPipe and DualPipeV pair one stage's forward with the other stage's backward (F0&B1, then
                # F1&B0). A stage without an all-to-all (embedding, dense layers, head) keeps every SM only in a
                # pair where neither half has one (paired_sms); beside a MoE half the all-to-all kernels hold
                # their SMs for both, as the DES prices them (V3 PP16 CP2 DualPipeV rank 0, embedding and two
                # dense layers with the MTP: 35.3 ms a pair from the stages' mean, 37.7 in the DES).
                x0, x1 = (stage_t[s] for s in held)
                pair = pair_compute = 0.0
                for f_, b_ in ((x0, x1), (x1, x0)):
                    if not (f_.aF or b_.aB):
                        f_, b_ = paired_sms(f_, overlap), paired_sms(b_, overlap)
                    pair += share * pair_time(f_, b_, 2 * p2p)
                    pair_compute += share * (f_.Fr + b_.Br + b_.Wr)
            else:  # Megatron's pairs: a micro-batch's forward beside another's backward, on the same chunks
                pair = pair_time(tot, tot)
            FB = pair + tot.xF + tot.xB
            busy_per_mb = FB
            hidden = max(0.0, pair_comm - (pair - pair_compute))
            exposed_mb = tot.xF + tot.xB + pair - pair_compute
        else:
            FB = F + B
            busy_per_mb = F + B
            hidden = 0.0
            exposed_mb = tot.aF + tot.aB + tot.xF + tot.xB
        seen[sig] = (tot, F, B, W, FB, busy_per_mb, hidden, exposed_mb)
        ranks.append((r, held) + seen[sig])

    # The slowest rank sets the pace.
    r_star = max(ranks, key=lambda x: x[7])
    _, _, tot, F, B, W, FB, busy_per_mb, hidden, exposed_mb = r_star
    # Paired chunks hide their all-to-all; lone ones (warm-up forwards and cool-down backwards)
    # expose it. Under DualPipe the list-scheduled step below runs the lone chunks at their own
    # times (their all-to-all reported as exposed comm). Megatron's pairs (1F1B / interleaved steady state) leave
    # the closed form's bubble as it is and run the lone chunks at full F and B instead of F&B:
    # the step is (M - w) F&B + w (F + B) + (PP-1)(F+B)/V, with w the last rank's lone forwards
    # (per micro-batch), which a list-schedule simulation of the paired schedule reproduces exactly.
    paired = overlap and not dual
    counts = None
    if overlap:
        # Counts are in chunks; a rank's times (tot) are a micro-batch's pass through all the chunks it runs.
        counts = [(n_f / vk, n_b / vk, n_fb / vk)
                  for n_f, n_b, n_fb in lone_chunks(runnable(p.schedule), p.pp, M, p.vpp, paired)]

    def comm_split(r: int, rtot: PassTimes, rhidden: float, rexp: float) -> tuple[float, float, float]:
        """(hidden, exposed in pairs or alone, exposed alone) over the step for rank r."""
        if counts is None:
            return M * rhidden, M * rexp, 0.0
        n_f, n_b, n_fb = counts[r]
        lone = n_f * (rtot.aF + rtot.xF) + n_b * (rtot.aB + rtot.xB)
        return n_fb * rhidden, n_fb * rexp + lone, lone

    def rank_work(r: int, rtot: PassTimes, rF: float, rB: float, rFB: float, rbusy: float) -> tuple[float, float]:
        """A rank's own work over the step, and the compute in it: pairs at F&B (compute with the SMs the
        all-to-all holds), lone chunks at F or B (all SMs; their all-to-all exposed)."""
        if counts is None:
            return M * rbusy, M * (rtot.F + rtot.B + rtot.W)
        n_f, n_b, n_fb = counts[r]
        return (n_fb * rFB + n_f * rF + n_b * rB,
                n_fb * (rtot.Fr + rtot.Br + rtot.Wr) + n_f * rtot.F + n_b * (rtot.B + rtot.W))

    # The P2P sends on the critical path: what the list scheduler finds, which under strict 1F1B and Megatron's
    # pairs is about two hops a micro-batch, not only the fill's 2(PP-1). (DualPipe's step, sends included, is
    # the list scheduler's below.)
    p2p_path = 2 * (p.pp - 1) * p2p if p.pp > 1 else 0.0  # the fill's and drain's hops
    # Strict 1F1B whose ranks take different times (the embedding on the first, the head on the last, dense
    # layers before MoE ones): the step is the longest path through the ranks' own times, not the slowest
    # rank's times PP - 1 more times (bubble.one_f_one_b_makespan).
    strict = runnable(p.schedule) == "1f1b" and not paired and p.pp > 1 and M >= p.pp
    if strict:
        fs, bs = [x[3] for x in ranks], [x[4] for x in ranks]
        pipe = one_f_one_b_makespan(fs, bs, M, p2p)
        p2p_path = pipe - one_f_one_b_makespan(fs, bs, M) if p2p else 0.0
    elif p.pp > 1 and not dual:
        hops = p2p_hops(runnable(p.schedule), p.pp, M, p.vpp, paired,
                        TaskTimes(F, B, min(W, B), FB) if p.schedule in TIME_DEPENDENT_HOPS else None)
        p2p_path = max(p2p_path, hops * p2p)
    rank_ends: tuple = ()
    pair_p2p: float | tuple = 0.0
    if dual:
        # A DualPipe rank's work is its F&B pairs plus its lone chunks (warm-up forwards at F, cool-down
        # backwards at B, their all-to-all exposed), and every rank runs its own chunk times: the end ranks
        # hold the embedding and the head beside fewer layers, and a stage without an all-to-all pairs
        # otherwise. The step is the list scheduler's over those times (schedules.dualpipe_makespan, not the
        # closed form of alike ranks), with the P2P sends where they go: a lone chunk's output always waits one
        # transfer. A pair whose halves overlap sends as plan.dualpipe_sends says: inside itself (priced in
        # pair_comm above; the next rank waits only for what outlasts the pair's tail, below) or after it, both outputs to the same
        # neighbour (F0&B1 downstream under both DualPipe and DualPipeV, F1&B0 upstream) over one link, two
        # transfers (their link time also stays in pair_comm: they share the NIC with the next pair's
        # all-to-all). A pair that runs its F then its B (a dense model, or ep_overlap off) sends both after it
        # (DeepSeek 67B's dense PP16 DualPipeV waits 238 hops in 96 micro-batches, not the fill's 30). The
        # busiest rank paces the step; its chunk times, communication and DP windows are the step's (the DES
        # reports its busiest rank's).
        rank_chunks = [TaskTimes(rF / vk, rB / vk, min(rW, rB) / vk, rFB / vk) for _, _, _, rF, rB, rW, rFB, *_ in ranks]
        # What a pair's outputs wait past its end, per rank and chunk of the pair's forward (its backward runs the
        # rank's other chunk), as the DES sends them. Sent inside the pair, both leave before the last attention
        # weight gradients of its backward's stage (DeepSeek-V3's Figure 4 runs the PP sends beside ATTN(W)), and
        # only what of the two transfers outlasts that tail is waited for: nothing on V3's 1.4 ms tails, but
        # DeepSeekMoE 16B's are 0.25 ms against 0.68 ms of sends, and a stage of no transformer layer (the
        # head's) has none. Sent after it, both transfers are. A pair that runs its F then its B sends after it.
        in_pair = overlap and p.dualpipe_sends == "in_pair"

        tails: dict[str, float] = {}  # by the kind of layer (the stages of a split repeat few)

        def tail(s: int) -> float:
            kind = next((k for k in stages[s] if k in ("dense", "moe")), None)
            if not kind:
                return 0.0
            hit = tails.get(kind)
            if hit is None:
                hit = tails[kind] = ev.attention_wgrad(sc, kind, shape)
            return hit

        waits = [[max(0.0, 2 * p2p - tail(held[1 - c])) if in_pair else 2 * p2p for c in (0, 1)]
                 for _, held, *_ in ranks] if p2p else [[0.0, 0.0]] * len(ranks)
        if overlap and cross_node_pp and a2a_on_nic:
            # What is waited for leaves as the rank's next pair starts, and that pair's all-to-all with it, on
            # the same NIC: the two share it (half each while both move) for as long as the shorter lasts (the
            # DES: V3 PP32 CP2 DualPipeV after each pair waits 1.26 s a step on them, 0.79 s without the sharing;
            # DeepSeekMoE 16B PP16 inside each pair 0.65 ms a pair, 0.43 ms without).
            waits = [[x + min(x, (rtot.aF + rtot.aB) / vk) / 2 for x in w] for w, (_, _, rtot, *_) in zip(waits, ranks)]
        distinct = {x for w in waits for x in w}
        pair_p2p = distinct.pop() if len(distinct) == 1 else tuple(map(tuple, waits))
        step, rank_ends = dualpipe_step(p.schedule, p.pp, M, rank_chunks, p2p, pair_p2p)
        works = [rank_work(r, rtot, rF, rB, rFB, rbusy) for r, _, rtot, rF, rB, _, rFB, rbusy, _, _ in ranks]
        pace = max(range(len(ranks)), key=lambda i: works[i][0])
        busy, compute = works[pace]
        bubble = max(0.0, step - busy)
        r_star = ranks[pace]
        _, _, tot, F, B, W, FB, _, hidden, exposed_mb = r_star
        counted = r_star[0]  # whose chunk counts price the step
    else:
        uneven = None
        if p.schedule == "interleaved" and not paired and p.pp > 1:
            uneven = ev.uneven_bubble([chunk_fb[x[1]] for x in rank_layout], p.pp, p.vpp, M)
        if uneven is not None:
            bubble = uneven[0] + p2p_path
        else:
            bubble = pipe - M * busy_per_mb if strict else rank_bubble(p, F, B, W, FB) + p2p_path
        # Megatron's pairs: the last rank's counts (fewest lone chunks, most pairs, on the critical path)
        # with the slowest rank's chunk times.
        counted = p.pp - 1 if paired else r_star[0]
        busy, compute = rank_work(counted, tot, F, B, FB, busy_per_mb)

    # Where the step goes: kernel classes at balanced expert load; skew's extra compute is its own part.
    work, even = tot, None
    if imbalance != 1.0:
        even_shape = Shape.of(p, t.seq_len)
        work = sum((paired_sms(ev.stage_times(sc, keys[s][0], even_shape, keys[s][1]), overlap)
                    for s in rank_stages(p.schedule, p.pp, p.vpp, r_star[0])), PassTimes())
        work = work.scale(visits_per_stage(p.schedule))
        even = rank_work(counted, work, 0.0, 0.0, 0.0, 0.0)[1]  # its compute only

    # What else a micro-batch puts on each rank's NIC, which the per-micro-batch ZeRO-2/3 reductions share:
    # its P2P sends (an activation out of each chunk forward, a gradient out of each chunk backward) and its
    # all-to-all where the EP group crosses nodes. Each rank's own: the pacing rank's stood for every rank, and
    # V3's PP8 DualPipe is paced by an end rank whose embedding, dense layers and head leave it 0.038 s of
    # all-to-all a micro-batch against the middle ranks' 0.055 s (ZeRO-2 at EP64: 18.75 s against the DES's 20.41).
    # The all-to-all's share is its IB bytes' time alone on the NIC, not its whole time: its NVLink leg and
    # latency leave the NIC to the reductions (DeepSeekMoE 16B PP2 EP16 ZeRO-3: 0.023 s a micro-batch on the NIC
    # of 0.031 s of all-to-all, as the DES's flows carry them).
    sends = 2 * vk * p2p if cross_node_pp else 0.0
    transport = DISPATCH_TRANSPORT[p.dispatcher]
    nic_mb = tuple(sends + (ev.comm.a2a_nic_time(rtot.ib_bytes, transport, p.ep) if a2a_on_nic else 0.0)
                   for _, _, rtot, *_ in ranks)
    # The last weight gradients, which the last reductions wait for, come from the last W task where the schedule
    # splits the backward (ZB1P and DualPipe end on W's), from the full backward elsewhere.
    split = runnable(p.schedule) in SPLIT_BACKWARD
    # Chunk times are reported in DualPipe's notation, per chunk (a forward chunk, a full backward chunk, its
    # weight part, a pair), as the DES reports them; a rank's times above are per micro-batch, through the
    # vk chunks of it that each micro-batch runs (interleaved: vpp, DualPipeV: 2).
    reports = []
    for r, held, rtot, rF, rB, rW, rFB, rbusy, rhidden, rexp in ranks:
        r_hid, r_exp, _ = comm_split(r, rtot, rhidden, rexp)
        r_busy, _ = rank_work(r, rtot, rF, rB, rFB, rbusy)
        reports.append((r, held, rF / vk, rB / vk, rW / vk, rFB / vk, r_busy, r_exp, r_hid))
    hidden_s, exposed_s, _ = comm_split(counted, tot, hidden, exposed_mb)
    return PipelineStep(
        stages=stages, memory_shape=memory_shape(sc, stages), microbatches=M, F=F, B=B, busy=busy,
        bubble=bubble, compute=compute, p2p=p2p, nic_mb=nic_mb, grads_last=W if split else B, hidden_comm=hidden_s,
        exposed_comm=exposed_s, total_comm=M * (tot.aF + tot.aB + (2 * p2p * vk if dual else 0.0) + tot.xF + tot.xB),
        work=work.scale(M), even=even, memory_bound=M * tot.memory_bound, recompute=M * tot.recompute,
        chunk_times_ms=(("F", F / vk * 1e3), ("B", B / vk * 1e3), ("W", W / vk * 1e3), ("FB", FB / vk * 1e3)),
        ranks=tuple(reports), rank_ends=rank_ends, pair_p2p=pair_p2p,
    )


def _dp_key(sc: Scenario, pd: float, pe: float) -> tuple:
    """What a rank's DP collectives depend on: the plan's groups, ZeRO stage and gradient dtype, and its parameters."""
    p = sc.plan
    return (sc.cluster, sc.dp, sc.dp_expert, p.cp, p.tp, p.ep, p.zero, p.grad_dtype, pd, pe)


def dp_collectives(sc: Scenario, ev: Evaluator, pd: float, pe: float) -> tuple[tuple[tuple[float, bool], ...], tuple[tuple[float, bool], ...]]:
    """The data-parallel collectives of one step for a rank holding ``pd`` dense and ``pe`` expert parameters.

    Gradients are reduced (reduce-scatter under ZeRO >= 1, all-reduce without) in the dtype of the
    buffer they were accumulated in, ``plan.grad_dtype``: Megatron reduces its ``main_grad`` buffer as
    it is, FP32 for BF16 training unless ``--grad-reduce-in-bf16`` (megatron/training/arguments.py,
    "bfloat16 requires gradient accumulation and all-reduce to be done in fp32"; Megatron-Bridge's
    ``bf16_mixed`` sets ``grad_reduce_in_fp32=True``; Llama 3 sec 3.3.4 reduce-scatters in FP32).
    Parameters are all-gathered in BF16 under ZeRO >= 1. The dense part runs over the DP x CP
    group, the expert part over the expert-data-parallel group.

    Returns (reduce parts, gather parts), each part (seconds alone on its link, whether the NIC
    rather than NVLink bounds it); a part with nothing to move is left out. Kept on the Evaluator by plan
    and parameter counts."""
    p = sc.plan
    dp = sc.dp
    key = _dp_key(sc, pd, pe)
    hit = ev._dp_parts.get(key)
    if hit is not None:
        return hit
    comm = ev.comm
    # Rank order is TP fastest, then CP and DP: the dense group's members sit TP apart; the expert
    # data-parallel group's members sit EP apart (its EP x expert-DP ranks fill the same GPUs).
    groups = [(n, size, stride) for n, size, stride in ((pd, dp * p.cp, p.tp), (pe, sc.dp_expert, p.ep))
              if n > 0 and size > 1]
    kind = "reduce_scatter" if p.zero >= 1 else "all_reduce"
    g = BYTES[p.grad_dtype]
    rs = tuple(comm.ring_part(kind, n * g, size, stride) for n, size, stride in groups)
    ag: tuple[tuple[float, bool], ...] = ()
    if p.zero >= 1:
        w = BYTES["bf16"]
        ag = tuple(comm.ring_part("all_gather", n * w, size, stride) for n, size, stride in groups)
    hit = ev._dp_parts[key] = (rs, ag)
    return hit


def dp_links(sc: Scenario, ev: Evaluator, pd: float, pe: float) -> tuple:
    """:func:`dp_collectives`' parts summed: the reductions' seconds alone on (the NIC, NVLink), the gathers' the
    same, and (the reductions', the gathers') whole, part after part. Kept on the Evaluator by the same key: a rank
    kind sums them for each of its plans' ZeRO stages, and most ranks of a plan hold what another holds."""
    key = _dp_key(sc, pd, pe)
    hit = ev._dp_links.get(key)
    if hit is None:
        rs, ag = dp_collectives(sc, ev, pd, pe)
        hit = ev._dp_links[key] = ((sum(t for t, nic in rs if nic), sum(t for t, nic in rs if not nic)),
                                   (sum(t for t, nic in ag if nic), sum(t for t, nic in ag if not nic)),
                                   (sum(t for t, _ in rs), sum(t for t, _ in ag)))
    return hit


def nic_share_delay(x: float, a: float, period: float, stream: float = 0.0) -> float:
    """Seconds a serial stream's NIC parts of ``x`` seconds (alone on the NIC) lose each micro-batch to other
    NIC traffic of ``a`` seconds alone (the micro-batch's all-to-all and P2P sends) that shares the NIC fairly
    with them (half each while both move: the DES's rule, des/links.py); the other traffic loses as much.

    The stream (``stream`` seconds alone a micro-batch, ``x`` of them on the NIC) moves its work in many small
    pieces (a bucket per layer) as the work comes, so inside the other traffic's window of a + h seconds it
    does the work it does anywhere else, x/P of NIC work a second of window, and that work takes twice its
    time there, all of it beside the other traffic: each loses half of that, h = (a + h) x / P, so
    h = a x / (P - x). Where the doubled work does not fit in the window (stream + x > P) the stream is never
    idle there and spends the share 2x / (2x + y) of it on the NIC, y = stream - x its other parts, so
    h = a x / stream (the two meet at stream + x = P). Two pieces placed at random overlap 2 x a / P on
    average, not the x a / P of intervals that do not stretch each other: assuming the two busy fractions
    independent halved the delay (a flow-level run of the DES's links agrees with this, tests/test_analytic.py).
    P is the step's pace: the pipeline's ``period`` (span / M), or x + a where the NIC cannot keep that.
    At most min(x, a): full overlap."""
    if x <= 0.0 or a <= 0.0:
        return 0.0
    q = max(period, x + a)
    s = max(stream, x)
    half = a * x / (q - x) if s + x <= q else a * x / s
    return min(half, x, a)


def _rank_facts(sc: Scenario, ev: Evaluator, stages, shape: Shape, M: int, F: float, B: float, nic_mb: tuple,
                p2p: float, grads_last: float, rank_ends: tuple):
    """What :func:`_dp_and_memory` reads of a plan that its ZeRO stage does not change: per kind of rank (by the
    units it holds), its weights, activations and the per-stage parameter counts its DP traffic follows from;
    per rank, its kind, its idle time at each end of the step, its other NIC traffic and its peak activations.
    A search meets each plan under ZeRO-1, 2 and 3 in a row, and these take a third of the DP and memory sums
    (kept on the Evaluator by the pipeline step they came from, :meth:`Evaluator.rank_facts`)."""
    p = sc.plan
    sched = runnable(p.schedule)
    pairs = bool(sc.ep_overlapped and sched in PAIRABLE)  # Megatron's pairs: one more micro-batch in flight
    vk = chunks_per_microbatch(p.schedule, p.vpp)
    chunk_times = TaskTimes(F / vk, B / vk, grads_last / vk if sched in SPLIT_BACKWARD else 0.0)
    kinds: dict[tuple, tuple] = {}
    ranks = []
    for r, (held, _, sig, edge_stage, edge_layers) in enumerate(ev.layout(sc, stages)[1]):
        if rank_ends:  # DualPipe's ranks, timed by the list scheduler on their own chunk times
            gathers_hide, reductions_hide, lead, first_grads = rank_ends[r]
        else:
            gathers_hide, reductions_hide = idle_at_ends(sched, p.pp, r, chunk_times, p2p)
            lead = first_grads = None
        kind = kinds.get(sig)
        if kind is None:
            mem = ev.rank_memory(sc, sig, shape)
            # The stage the rank's step opens and closes with, and (ZeRO-3's one collective a stage) each stage's
            # parameters, the rank's copies of weights shared with units it does not hold reduced and gathered
            # with its last stage, as the DES does. (V3 PP32 DualPipe: the MTP head's copy of the output head on
            # stage 31, 0.93 B parameters, a third of rank 0's ZeRO-3 traffic.)
            edge = parts = None
            if len(held) > 1:
                edge = ev.stage_memory(sc, tuple(stages[edge_stage]), shape)[:2]
                parts = [list(ev.stage_memory(sc, tuple(stages[s]), shape)[:2]) for s in held]
                parts[-1][0] += shared_weight_copies(sc.model, (u for s in held for u in stages[s]), shape.tp)
            # DeepEP's staging buffers, on every GPU of an EP group that runs routed experts.
            routed = p.dispatcher == "deepep" and any(u in ROUTED_UNITS for s in held for u in stages[s])
            buffers = deepep_buffer_bytes(sc.model.hidden, p.ep, p.comm_sms) if routed else 0.0
            kind = kinds[sig] = (mem, edge, parts, buffers)
        pd, pe, act, act_max, unit, chunk_act = kind[0]
        if p.pp > 1:
            # Walk the rank's own task order (layout.inflight_by_chunk, as the DES keeps memory): the
            # micro-batches each of its chunks holds at the moments it could peak, weighted by what each
            # chunk saves. Rank 0 of an interleaved schedule holds PP*V + PP - 1 chunk activations
            # (Narayanan et al. 2021, sec 2.2.2), the last rank (V-1)*PP + 1, and that last rank's chunk
            # carries the output head; under 1F1B rank r holds PP - r; DualPipe PP+1 on every rank,
            # split between its two chunks by the rank's place in the pipeline.
            # Kept on the Evaluator: plans of other EP sizes hold the same activations on the same ranks.
            key = (p.schedule, p.pp, p.vpp, M, r, pairs, chunk_act)
            activations = ev._activations.get(key)
            if activations is None:
                activations = ev._activations[key] = max(sum(n * a for n, a in zip(v, chunk_act))
                                                         for v in inflight_by_chunk(p.schedule, p.pp, p.vpp, M, r, pairs))
        else:
            # Without pipelining one micro-batch's activations are held at a time, also under Megatron's
            # pairs: the forward builds its activations layer by layer as the other micro-batch's backward
            # frees its own (Megatron-Bridge PR #3880 measured 61.35 GB peak for Qwen3-30B-A3B on 16 H100).
            activations = act / len(held)
        ranks.append((sig, len(held), edge_layers, gathers_hide, reductions_hide, lead, first_grads,
                      nic_mb[r] if nic_mb else 0.0, activations))
    return kinds, ranks


def _dp_and_memory(sc: Scenario, ev: Evaluator, stages, shape: Shape, M: int, F: float, B: float,
                   nic_mb: tuple = (), span: float = 0.0, p2p: float = 0.0, grads_last: float | None = None,
                   rank_ends: tuple = (), facts: tuple | None = None):
    """Exposed DP time, optimizer time and per-rank memory (``nic_mb``: per rank, a micro-batch's other NIC time;
    ``span``: the pacing rank's work and bubble over the step, which per-micro-batch reductions overlap;
    ``grads_last``: a micro-batch's time in the tasks that make its weight gradients, B unless the
    schedule splits W off; ``facts``: :func:`_rank_facts` of these, where the caller keeps them)."""
    grads_last = B if grads_last is None else grads_last
    kinds, rank_facts = facts or _rank_facts(sc, ev, stages, shape, M, F, B, nic_mb, p2p, grads_last, rank_ends)
    p = sc.plan
    dp = sc.dp
    dp_expert = sc.dp_expert
    dense_group = dp * p.cp
    worst_exposed = 0.0
    opt = 0.0
    mems = []
    # Weights, gradients, optimizer states and DP traffic follow from what a rank's stages hold, so ranks
    # holding the same layers share them; the activations in flight depend on the rank itself.
    seen: dict[tuple, tuple] = {}
    sched = runnable(p.schedule)  # the schedule the ranks run (looked up once: below runs per rank)
    megatron = sched in PAIRABLE  # Megatron-LM's 1F1B and interleaved schedules
    # Megatron's forward-backward pairs add one warm-up forward (one more micro-batch in flight).
    pairs = bool(sc.ep_overlapped and megatron)
    vk = chunks_per_microbatch(p.schedule, p.vpp)  # F is a micro-batch's pass through vk of a rank's chunks
    # Megatron reduces an interleaved rank's gradients chunk by chunk, each after its chunk's last backward
    # (and gathers each chunk's weights before its first forward), and those come PP chunk backwards (forwards)
    # apart: the last round runs chunk V-1 for its PP micro-batches, then chunk V-2, ... (the DES queues them so).
    # A rank's gathers can hide in its idle time before its first forward, and its last reductions in its idle
    # time after its last backward (W) (schedules.idle_at_ends, at the pacing rank's chunk times).
    chunks = p.vpp if p.schedule == "interleaved" else 1
    warm = None  # warmup_forwards, when a rank needs it
    two_legs = p.schedule in ("dualpipe", "dualpipev")
    visit = visits_per_stage(p.schedule)  # the share of a micro-batch's passes each stage a rank holds runs
    period = span / M if M else 0.0  # the step's micro-batches come span / M apart

    def bucketed(t: float, c: float, n: int) -> float:
        """How far a collective of ``t`` seconds, cut into ``n`` buckets that a pass of ``c`` seconds makes (or
        needs) one layer at a time, reaches past that pass: at least its last (first) bucket, and the rest
        when the buckets come faster than the stream moves them."""
        return max(t / n, t - c * (n - 1) / n)

    def behind(t: float, t_edge: float, per_mb: float, n: int, edge: float, lead: float | None = None) -> float:
        """What shows of one step's DP collective of ``t`` seconds over the rank's chunks, ``t_edge`` of it for
        the chunk the rank's step closes with (its last backward; opens with, its first forward): each chunk's
        share runs on the DP stream once its chunk is done (one collective at a time), that chunk's behind its
        own pass (DDP buckets, one per each of its ``n`` layers), and the ``edge`` idle at the rank's end of the
        step. The whole must also fit after the other chunks' last passes: an interleaved rank's come PP chunk
        passes apart (the last round runs chunk V-1 for its PP micro-batches, then chunk V-2, ...); DualPipe's
        and DualPipeV's other chunk ends at least one pass before (the list scheduler: one W on the ranks
        nearest the middle, most of the cool-down on the end ranks), or ``lead`` before the rank's last task
        where the list scheduler timed the rank (:func:`simulator.schedules.dualpipe_step`)."""
        c = per_mb / vk
        if lead is not None:
            return max(0.0, bucketed(t_edge, c, n) - edge, t - lead - edge)
        ahead = (chunks - 1) * p.pp * c if chunks > 1 else c if two_legs else 0.0
        return max(0.0, bucketed(t_edge, c, n) - edge, t - ahead - c - edge)
    for r, (sig, n_held, edge_layers, gathers_hide, reductions_hide, lead, first_grads, nic_r,
            activations) in enumerate(rank_facts):
        if sig not in seen:
            (pd, pe, act, act_max, unit, chunk_act), edge, parts, buffers = kinds[sig]
            # Seconds alone on each link: (NIC, NVLink) for the reductions and for the gathers.
            rs_link, ag_link, _ = dp_links(sc, ev, pd, pe)
            edge_dp = dp_links(sc, ev, *edge)[2] if edge is not None else (sum(rs_link), sum(ag_link))
            # Seconds alone on (NIC, NVLink) of a micro-batch's reductions and gathers on the DP stream. ZeRO-3's
            # are one collective per stage it runs, each at its own time (the DES queues them so), so each pays its
            # own ring latency: summed over the held stages. (ZeRO-2's reductions keep the rank's one collective:
            # summed by stage, Llama 3 405B's interleaved ZeRO-2 step moved 1.563 -> 1.634 s against the DES's
            # 1.448; an open item.)
            mb_links = (rs_link, ag_link)
            if p.zero == 3 and parts is not None:
                per = [dp_collectives(sc, ev, a, b) for a, b in parts]
                mb_links = tuple((sum(t for c in per for t, nic in c[k] if nic),
                                  sum(t for c in per for t, nic in c[k] if not nic)) for k in (0, 1))
            w, gr, o = state_bytes(pd, pe, p.zero, dense_group, dp_expert, p.grad_dtype, p.moment_dtype)
            owned = pd / (dense_group if p.zero >= 1 else 1) + pe / (dp_expert if p.zero >= 1 else 1)
            opt_bytes = owned * (8 + 4 * BYTES[p.moment_dtype] + BYTES[p.grad_dtype] + 2)
            opt = max(opt, opt_bytes / (ev.timer.gpu.hbm_gbps * 1e9))
            transient = act_max
            if p.zero >= 2:
                # Sharded gradients leave no full-size buffer: a layer's gradients exist unsharded until its
                # reduce-scatter (the collective's input), and ZeRO-3 also holds two layers' gathered BF16
                # weights at once, the one computing and the one prefetched (PyTorch FSDP2's default "allows
                # two all-gather output tensors to be alive at once", pytorch/pytorch#128884). Sized by the
                # largest layer unit the rank holds (its local experts included, before the DP sharding).
                transient += unit * (BYTES[p.grad_dtype] + (2 * 2 if p.zero == 3 else 0))
            seen[sig] = (w, gr, o, transient, rs_link, ag_link, edge_dp, buffers, mb_links, sum(rs_link), sum(ag_link),
                         sum(mb_links[0]), sum(mb_links[1]))
        (w, gr, o, transient, rs_link, ag_link, (e_rs, e_ag), buffers, (rs_mb, ag_mb), t_rs, t_ag, t_rs_mb,
         t_ag_mb) = seen[sig]
        if p.zero >= 2:
            # Sharded gradients (ZeRO-2/3) leave no full-size buffer to accumulate micro-batches in: every
            # micro-batch's gradients are reduce-scattered as its backward makes them (DeepSpeed ZeRO-2;
            # FSDP without no_sync), M reductions a step, and under ZeRO-3 its weights are gathered before
            # its forward and again before its backward. The reductions can only run from the rank's first
            # backward on (after its warm-up forwards: all of them on rank 0 when M is small against PP x V);
            # what does not fit in the rest of the step is exposed. The traffic must fit two resources: the DP
            # stream, one collective at a time on whichever link bounds each part, and the NIC, which its NIC
            # parts share with the micro-batch's other NIC traffic (nic_mb). (The parts cover every stage the
            # rank holds; a DualPipe micro-batch runs one of its two.)
            if first_grads is not None:
                # DualPipe: the rank's first task making weight gradients, where its run put it (a W, split off
                # its backward, can come well after that backward's start: V2 PP2 DualPipeV, 0.57 s against 0.39).
                first_b = first_grads
            else:
                if warm is None:
                    warm = warmup_forwards(sched, p.pp, M, p.vpp, pairs)
                first_b = (r + warm[r]) * F / vk
            if megatron and p.pp > 1:
                # Nor before the first micro-batch's gradient is back. The last rank runs n forward chunks before
                # its first backward (warmup_forwards counts the steady state's first one too; all V*M of them
                # when M = PP under interleaving, as Megatron-LM runs that case all forwards first). Its forwards
                # come in rounds of PP micro-batches per chunk, and each round waits on the loop: micro-batch 0
                # leaves rank 0's chunk c, crosses the PP ranks and comes back for chunk c + 1, PP (f + p2p)
                # later. The backward then comes back over the PP-1-r ranks after r. (Llama 3 405B: 2.1 s; the
                # rank's own warm-up says 1.5 s.)
                f, b = F / vk, B / vk
                n_last = warm[-1]
                rounds, j = divmod(n_last - 1, p.pp)
                trip = (rounds * p.pp + p.pp - 1) * (f + p2p) + (j + 1) * f + (p.pp - 1 - r) * (b + p2p)
                first_b = max(first_b, trip)
            after_warmup = span - first_b
            nic = nic_r if rs_link[0] or ag_link[0] else 0.0
            # ... and the last micro-batch's reduction can only follow its own backward.
            # The DP stream's NIC parts share the NIC with that traffic, so the stream takes longer than its
            # parts alone (nic_share_delay, per micro-batch; the step's micro-batches come span / M apart).
            stream_mb = visit * t_rs + nic_share_delay(visit * rs_link[0], nic, period, visit * t_rs)
            exposed = max(behind(t_rs, e_rs, grads_last, edge_layers, reductions_hide, lead),
                          M * stream_mb - after_warmup, M * (visit * rs_link[0] + nic) - after_warmup)
            # The updated shard is gathered behind the first forward and the fill: once a step under ZeRO-2,
            # and under ZeRO-3 as the first of its gathers (the optimizer has just written the shard, so
            # nothing gathers it ahead), so ZeRO-3 never shows less than ZeRO-2.
            exposed += behind(t_ag, e_ag, F, edge_layers, gathers_hide)
            if p.zero == 3:  # ... and all of its gathers, twice per micro-batch, must fit in the step
                # Before the rank's first backward the stream has only the gathers of the forwards run so far
                # (one stage's each), and idles the rest of that time.
                n_fwd = first_b / (F / vk) if F > 0 else 0.0
                idle = max(0.0, first_b - n_fwd * t_ag_mb / n_held)
                dp_nic = visit * (rs_mb[0] + 2 * ag_mb[0])
                work_mb = visit * (t_rs_mb + 2 * t_ag_mb)
                stream_mb = work_mb + nic_share_delay(dp_nic, nic, period, work_mb)
                exposed = max(exposed, M * stream_mb + idle - span, M * (dp_nic + nic) - span)
        elif p.grad_reduce_overlap:
            exposed = (behind(t_rs, e_rs, grads_last, edge_layers, reductions_hide, lead)
                       + behind(t_ag, e_ag, F, edge_layers, gathers_hide))
        else:  # one collective after the pipeline drains; the next step's all-gather still overlaps
            exposed = t_rs + behind(t_ag, e_ag, F, edge_layers, gathers_hide)
        worst_exposed = max(worst_exposed, exposed)
        mems.append(MemoryBreakdown(w, gr, o, activations, transient, buffers))
    return worst_exposed, opt, mems
