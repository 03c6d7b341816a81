"""Expert load sampling for MoE layers.

What the engine needs from routing
----------------------------------
For every (micro-batch, MoE layer) the discrete-event engine needs to know how
unevenly the routed tokens land on the expert-parallel (EP) ranks: the most
loaded rank sets the expert-GEMM time, and the all-to-all dispatch/combine
volumes depend on how many tokens each rank ships to each node. This module
samples those counts.

The gate being modelled (DeepSeek-V3 node-limited routing)
----------------------------------------------------------
Each token scores every routed expert; the experts are split into groups, one
group per node of the EP group. DeepSeek-V3's ``Gate`` (inference/model.py)
scores a group by the sum of its two best expert scores, keeps the
``topk_groups`` best groups, masks the others and takes the top-k experts among
what is left, so a token's experts lie on at most ``M = topk_groups`` nodes.
Here a token's score for expert ``e`` is its log-popularity perturbed by Gumbel
noise, ``log p_e + G_e``; without the node limit, the top-k of these is a draw
of k distinct experts from ``p`` without replacement (Plackett-Luce, the
Gumbel-top-k trick). The group score sums the top ``k // M`` perturbed scores
of the group (2 for V3: k=8, M=4). :func:`route_tokens` implements this gate
token by token.

Token by token is too slow at V3 scale: 4096 tokens on each of 64 ranks is
262,144 tokens x 256 expert scores, i.e. 67 million random numbers per sample.
So sampling is two-level:

1. Per layer, *once*: route ``mc_tokens`` tokens (default 4096) through the
   exact gate and measure the marginals: expected token-expert pairs per
   expert (``pi``, sums to k), the probability that a token uses a node
   (``q``) and that it uses a GPU (``rho``). ``pi`` is Rao-Blackwellised (see
   ``_Gate``): each token contributes P(expert chosen | the other scores)
   instead of a 0/1 pick, which cuts the Monte-Carlo noise by 3-10x (in
   standard deviation), so that a fixed per-layer estimation error does not
   masquerade as load imbalance. With uniform popularity the gate is
   symmetric, so the estimates are averaged over experts/nodes/GPUs, which
   makes ``pi`` exact.
2. Per sample, cheaply: pairs per expert ~ Multinomial(tokens x ranks x k,
   pi / k) and tokens rank i ships to node j ~ Binomial(tokens, q_j). That is
   a few hundred random numbers instead of 67 million.

The count-level step treats tokens as independent and the (per-expert, per-node)
counts as independent of each other; the per-token coupling (a token that goes
to node j is more likely to also feed expert e on node j) is lost. Per-rank
loads are what the engine uses and they are right in mean and very nearly in
variance. Cost on a slow 2-core machine at V3 scale: 20-50 ms per layer
(once), about 0.15 ms per sample.

Skew
----
``balanced`` (uniform popularity), ``zipf`` (popularity of the r-th most
popular expert ~ 1/r^s; the experts are shuffled per layer so that the hot
expert sits on a different GPU in every layer) or ``histogram`` (a user list of
E weights, the same for every layer).

Redundant experts (EPLB style)
------------------------------
``redundant = R`` extra replicas: the R replicas go to the experts with the
highest expected load per replica (greedily, so the hottest expert may get
several), each replica sits on the GPU with the least expected load that has a
free redundant slot (``ceil(R / ep)`` slots per GPU), and an expert's tokens are
split evenly among its replicas. Replicas change compute load only; dispatch
volumes (``ib_send``) are computed from the primary placement.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

SKEWS = ("balanced", "zipf", "histogram")

# Tokens routed per chunk when estimating marginals (bounds memory: a chunk
# holds chunk x E float32 scores).
_MC_CHUNK = 4096


# ---------------------------------------------------------------- the gate
def _check_gate(n_experts: int, top_k: int, n_groups: int, topk_groups: int) -> bool:
    """Validate a gate shape; returns whether the group limit is active."""
    if n_groups < 1 or n_experts % n_groups:
        raise ValueError(f"n_groups: {n_groups} does not divide {n_experts} experts")
    limited = 0 < topk_groups < n_groups
    if limited and top_k > topk_groups * (n_experts // n_groups):
        raise ValueError(f"top_k: {top_k} > topk_groups x experts per group "
                         f"({topk_groups * (n_experts // n_groups)})")
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k: must be in [1, {n_experts}], got {top_k}")
    return limited


def _scores(p32: np.ndarray, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Perturbed scores (n_tokens, E) in ratio form ``p_e / X_e``, X_e ~ Exp(1).

    Exponential race: ``log(p_e / X_e) = log p_e + Gumbel``, so these order the
    experts exactly like Gumbel-perturbed log-popularities, without the logs.
    Zero-popularity experts score 0 and are picked only when nothing else is left.
    """
    x = rng.standard_exponential((n_tokens, p32.size), dtype=np.float32)
    np.maximum(x, np.float32(1e-30), out=x)   # Exp(1) can return exactly 0.0
    np.divide(p32, x, out=x)
    return x


def _top_desc(a: np.ndarray, n: int) -> np.ndarray:
    """The n largest values along the last axis, sorted descending (n <= size)."""
    size = a.shape[-1]
    if n < size:
        a = np.partition(a, size - n, axis=-1)[..., size - n:]
    return np.flip(np.sort(a, axis=-1), axis=-1)


class _Gate:
    """The gate applied to one chunk of scores ``s`` (t, E).

    ``experts()`` is the routing decision; ``inclusion_prob()`` is its
    Rao-Blackwellised expectation: the probability that each expert is chosen
    given every *other* expert's score. Given the others, the gate picks e iff
    its own score ``p_e / X_e`` beats a threshold tau, which happens with
    probability ``1 - exp(-p_e / tau)``; averaging that smooth quantity over
    tokens estimates the gate's marginals with 3-10x less noise than counting
    picks (an order of magnitude fewer Monte-Carlo tokens).

    Without the group limit, tau is the k-th best score among the others. With
    it, e must also lift its group into the top ``M = topk_groups``, and once
    the group is in, beat the k-th best other candidate (see ``_tau_limited``).
    """

    def __init__(self, s: np.ndarray, top_k: int, n_groups: int, topk_groups: int) -> None:
        self.s = s
        self.t, self.E = s.shape
        self.k = top_k
        self.G = n_groups
        self.M = topk_groups
        self.limited = 0 < topk_groups < n_groups
        if self.limited:
            self.P = self.E // n_groups
            self.kk = min(max(1, top_k // topk_groups), self.P)   # experts per group score
            self.K1 = min(top_k + 1, self.P)
            # Best K1 scores of each group, descending.
            self.gval = _top_desc(s.reshape(self.t, self.G, self.P), self.K1)
            with np.errstate(divide="ignore"):
                self.gscore = np.log(self.gval[:, :, :self.kk]).sum(axis=2)   # (t, G)
            self.gorder = np.argsort(-self.gscore, axis=1)                   # groups by rank
        else:
            self.top_val = _top_desc(s, min(top_k + 1, self.E))

    def experts(self) -> np.ndarray:
        """(t, k) chosen expert ids, unordered within a row."""
        k, E = self.k, self.E
        if not self.limited:
            return np.argpartition(self.s, E - k, axis=1)[:, E - k:]
        t, M, P = self.t, self.M, self.P
        groups = self.gorder[:, :M]                                           # (t, M)
        cand = np.take_along_axis(self.s.reshape(t, self.G, P), groups[:, :, None], axis=1)
        loc = np.argpartition(cand.reshape(t, M * P), M * P - k, axis=1)[:, M * P - k:]
        return np.take_along_axis(groups, loc // P, axis=1) * P + loc % P

    def inclusion_prob(self, p32: np.ndarray) -> np.ndarray:
        """(t, E) float32: P(expert chosen | the other experts' scores)."""
        tau = self._tau_limited() if self.limited else self._tau_free()
        # Hot path over t x E: float32 and in-place to keep memory traffic low.
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(p32, tau, out=tau)                 # tau -> p / tau
        np.negative(tau, out=tau)
        np.expm1(tau, out=tau)
        np.negative(tau, out=tau)                        # 1 - exp(-p / tau)
        np.nan_to_num(tau, copy=False, nan=0.0)          # p = 0 and tau = 0
        return tau

    def _tau_free(self) -> np.ndarray:
        k, s = self.k, self.s
        kth = self.top_val[:, k - 1:k]
        k1th = self.top_val[:, k:k + 1] if self.top_val.shape[1] > k else np.zeros_like(kth)
        return np.where(s >= kth, k1th, kth)

    def _tau_limited(self) -> np.ndarray:
        """Threshold on e's score under the group limit, shape (t, E).

        Group part: with S_j the sum of the j best log-scores of the *other*
        experts of e's group and gamma the M-th best score among the other
        groups, the group is chosen iff ``max(S_kk, log s_e + S_kk-1) > gamma``.
        With ``r = exp(gamma - group score)`` and ``g = kk-th best score of the
        group`` this works out to ``tau_group = max(s_e, g) * r``, unless the
        group wins without e (``tau_group`` below the (kk+1)-th best score if e
        is in the group's top kk, below g otherwise), when it is 0.
        Candidate part: the k-th best other candidate in e's group plus the
        best M-1 other groups; for a group already in the top M those are the
        current top-M groups.
        """
        t, G, M, P, k, kk, K1 = self.t, self.G, self.M, self.P, self.k, self.kk, self.K1
        s = self.s.reshape(t, G, P)
        gval, gscore, gorder = self.gval, self.gscore, self.gorder
        rows = np.arange(t)[:, None]
        grank = np.empty_like(gorder)
        grank[rows, gorder] = np.arange(G)
        in_top = grank < M                                                   # (t, G)
        g_sorted = np.take_along_axis(gscore, gorder, axis=1)
        gamma = np.where(in_top, g_sorted[:, M:M + 1], g_sorted[:, M - 1:M])
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.exp(gamma - gscore).astype(np.float32)[:, :, None]       # (t, G, 1)
        g_kk = gval[:, :, kk - 1:kk]
        g_next = gval[:, :, kk:kk + 1] if K1 > kk else np.zeros_like(g_kk)
        in_kk = s >= g_kk
        tau_group = np.maximum(s, g_kk)
        tau_group *= r
        tau_group[tau_group < np.where(in_kk, g_next, g_kk)] = 0.0
        # Candidate thresholds.
        lists = np.take_along_axis(gval, gorder[:, :, None], axis=1)        # groups by rank
        cand_top = _top_desc(lists[:, :M].reshape(t, -1), min(k + 1, M * K1))
        base = lists[:, :M - 1].reshape(t, 1, -1)
        merged = np.concatenate([np.broadcast_to(base, (t, G, base.shape[2])), gval], axis=2)
        cand_other = _top_desc(merged, min(k + 1, merged.shape[2]))
        width = min(cand_top.shape[1], cand_other.shape[2])
        cand = np.where(in_top[:, :, None], cand_top[:, None, :width], cand_other[:, :, :width])
        kth = cand[:, :, k - 1:k]
        k1th = cand[:, :, k:k + 1] if width > k else np.zeros_like(kth)
        tau_in = np.where(s >= kth, k1th, kth)
        np.maximum(tau_group, tau_in, out=tau_group)
        return tau_group.reshape(t, self.E)


def route_tokens(
    popularity: np.ndarray,
    n_tokens: int,
    top_k: int,
    rng: np.random.Generator,
    n_groups: int = 1,
    topk_groups: int = 0,
) -> np.ndarray:
    """Route tokens through a group-limited top-k gate; returns (n_tokens, top_k) expert ids.

    Expert scores are ``log p_e + Gumbel``. With ``0 < topk_groups < n_groups``
    the experts are split into ``n_groups`` contiguous groups (nodes), a group
    is scored by the sum of its best ``top_k // topk_groups`` scores, and only
    the best ``topk_groups`` groups may be chosen (DeepSeek-V3 ``Gate``).
    """
    p = np.asarray(popularity, dtype=np.float64)
    _check_gate(p.size, top_k, n_groups, topk_groups)
    p32 = (p / p.max()).astype(np.float32)
    out = np.empty((n_tokens, top_k), dtype=np.int64)
    for lo in range(0, n_tokens, _MC_CHUNK):
        t = min(_MC_CHUNK, n_tokens - lo)
        out[lo:lo + t] = _Gate(_scores(p32, t, rng), top_k, n_groups, topk_groups).experts()
    return out


# ---------------------------------------------------------------- config
@dataclass(frozen=True)
class RoutingConfig:
    """One MoE routing scenario.

    ``tokens`` is the number of tokens per micro-batch on each EP rank (each
    rank routes its own tokens). ``max_nodes`` is M of node-limited routing
    (0 = unlimited).
    """

    tokens: int
    n_experts: int
    top_k: int
    ep: int
    gpus_per_node: int = 8
    max_nodes: int = 0
    skew: str = "balanced"
    zipf_s: float = 1.0
    histogram: tuple[float, ...] | None = None
    redundant: int = 0
    seed: int = 0
    mc_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.skew not in SKEWS:
            raise ValueError(f"skew: unknown {self.skew!r}; allowed: {', '.join(SKEWS)}")
        if self.ep < 1 or self.n_experts % self.ep:
            raise ValueError(f"ep: {self.ep} must divide n_experts {self.n_experts}")
        if self.ep > self.gpus_per_node and self.ep % self.gpus_per_node:
            raise ValueError(f"ep: {self.ep} must be a multiple of gpus_per_node {self.gpus_per_node}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k: must be in [1, {self.n_experts}], got {self.top_k}")
        if self.skew == "histogram":
            if self.histogram is None or len(self.histogram) != self.n_experts:
                raise ValueError(f"histogram: need {self.n_experts} weights")
            if min(self.histogram) < 0 or sum(self.histogram) <= 0:
                raise ValueError("histogram: weights must be >= 0 with a positive sum")
        if self.redundant < 0 or self.max_nodes < 0 or self.tokens < 0:
            raise ValueError("redundant, max_nodes and tokens must be >= 0")

    @property
    def n_nodes(self) -> int:
        return max(1, self.ep // self.gpus_per_node)

    @property
    def experts_per_rank(self) -> int:
        return self.n_experts // self.ep

    @property
    def node_limited(self) -> bool:
        return 0 < self.max_nodes < self.n_nodes

    @property
    def rank_node(self) -> np.ndarray:
        """Node index of each EP rank."""
        return np.arange(self.ep) // (self.ep // self.n_nodes)


@dataclass(frozen=True)
class LayerRouting:
    """Per-layer quantities: popularity, gate marginals, replica placement."""

    popularity: np.ndarray   # (E,) normalised
    pi: np.ndarray           # (E,) expected pairs per token per expert, sums to k
    q: np.ndarray            # (nodes,) P(token uses node)
    rho: np.ndarray          # (ep,) P(token uses GPU)
    replicas: np.ndarray     # (E,) number of copies (>= 1)
    replica_rank: list[np.ndarray]  # per expert: ranks holding its copies (home first)

    @functools.cached_property
    def copies(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every expert copy flattened, expert by expert in ``replica_rank`` order: the rank that holds
        it, its expert, and its index among that expert's copies (0 = home). Built once per layer."""
        ranks = np.concatenate(self.replica_rank)
        expert = np.repeat(np.arange(self.replicas.size), self.replicas)
        first = np.cumsum(self.replicas) - self.replicas   # each expert's first copy in the flat order
        return ranks, expert, np.arange(ranks.size) - first[expert]

    @property
    def expected_rank_pairs(self) -> np.ndarray:
        """Expected pairs per token landing on each rank (after replication)."""
        load = np.zeros(self.rho.size)
        share = self.pi / self.replicas
        for e, ranks in enumerate(self.replica_rank):
            np.add.at(load, ranks, share[e])
        return load


@dataclass(frozen=True)
class RoutingSample:
    """Counts for one (micro-batch, layer).

    ``recv_pairs[g]``: token-expert pairs computed on EP rank g (expert GEMM
    rows). ``recv_tokens[g]``: distinct tokens delivered to rank g (a token
    feeding two experts on one GPU arrives once). ``ib_send[i, j]``: tokens rank
    i sends over IB to node j (each token crosses IB once per distinct remote
    node, then fans out over NVLink; 0 for i's own node). ``expert_pairs[e]``:
    pairs routed to logical expert e (all replicas together).
    """

    recv_pairs: np.ndarray
    recv_tokens: np.ndarray
    ib_send: np.ndarray
    expert_pairs: np.ndarray

    @property
    def imbalance(self) -> float:
        """max / mean of the per-rank pair load (1.0 = perfectly balanced)."""
        mean = self.recv_pairs.mean()
        return float(self.recv_pairs.max() / mean) if mean > 0 else 1.0


# ---------------------------------------------------------------- sampler
class RoutingSampler:
    """Samples per-rank MoE loads; deterministic per (seed, layer, micro-batch).

    Layer quantities (popularity, marginals, replica placement) are computed
    lazily on the first sample of a layer and cached; a sample costs well under
    a millisecond after that.
    """

    def __init__(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self._layers: dict[int, LayerRouting] = {}

    # ---- per layer
    def popularity(self, layer: int) -> np.ndarray:
        cfg = self.cfg
        E = cfg.n_experts
        if cfg.skew == "balanced":
            p = np.full(E, 1.0 / E)
        elif cfg.skew == "zipf":
            ranked = 1.0 / np.arange(1, E + 1, dtype=np.float64) ** cfg.zipf_s
            perm = np.random.default_rng([cfg.seed, layer, 0xE7]).permutation(E)
            p = ranked[perm]          # expert i is the (perm[i]+1)-th most popular
        else:
            p = np.asarray(cfg.histogram, dtype=np.float64)
        return p / p.sum()

    def layer(self, layer: int) -> LayerRouting:
        lr = self._layers.get(layer)
        if lr is None:
            lr = self._layers[layer] = self._build_layer(layer)
        return lr

    def _build_layer(self, layer: int) -> LayerRouting:
        """The layer's routing quantities, shared with every sampler of the same gate and placement."""
        return _layer_routing(replace(self.cfg, tokens=0), layer)

    def _compute_layer(self, layer: int) -> LayerRouting:
        cfg = self.cfg
        p = self.popularity(layer)
        uniform = bool(np.all(p == p[0]))
        pi, q, rho = _gate_marginals(
            p, cfg.top_k, cfg.n_nodes, cfg.max_nodes if cfg.node_limited else 0, cfg.ep,
            cfg.mc_tokens, np.random.default_rng([cfg.seed, layer, 0x6A7E]),
            rao_blackwell=not uniform,
        )
        if uniform:
            # Symmetric gate: average the estimates over the symmetry group.
            pi = np.full_like(pi, cfg.top_k / cfg.n_experts)
            q = np.full_like(q, q.mean())
            rho = np.full_like(rho, rho.mean())
        replicas, replica_rank = _place_replicas(pi, cfg.ep, cfg.redundant)
        return LayerRouting(p, pi, q, rho, replicas, replica_rank)

    # ---- per sample
    def sample(self, layer: int, microbatch: int = 0) -> RoutingSample:
        cfg = self.cfg
        lr = self.layer(layer)
        rng = np.random.default_rng([cfg.seed, layer, microbatch, 0x5A])
        total_tokens = cfg.tokens * cfg.ep
        k = cfg.top_k
        expert_pairs = rng.multinomial(total_tokens * k, lr.pi / k)
        recv_pairs = _pairs_per_rank(expert_pairs, lr, cfg)
        # Distinct tokens per rank: scale each rank's pairs by its expected
        # tokens-per-pair ratio (keeps the correlation with the pair load).
        home_pairs = lr.pi.reshape(cfg.ep, -1).sum(axis=1)
        ratio = np.divide(lr.rho, home_pairs, out=np.ones_like(lr.rho), where=home_pairs > 0)
        recv_tokens = np.rint(recv_pairs * np.minimum(ratio, 1.0)).astype(np.int64)
        # Tokens each rank sends to each remote node over IB.
        ib_send = rng.binomial(cfg.tokens, np.broadcast_to(lr.q, (cfg.ep, cfg.n_nodes)))
        ib_send[np.arange(cfg.ep), cfg.rank_node] = 0
        return RoutingSample(recv_pairs, recv_tokens, ib_send.astype(np.int64), expert_pairs)


@functools.lru_cache(maxsize=1024)
def _layer_routing(cfg: RoutingConfig, layer: int) -> LayerRouting:
    """A layer's routing quantities (popularity, gate marginals, replica placement), which do not depend
    on how many tokens a micro-batch samples: every sampler of the same gate, experts and placement shares
    them, so a plan search that varies the micro-batch or CP builds each layer once. ``cfg`` comes with
    ``tokens=0``; the arrays are read, never written."""
    return RoutingSampler(cfg)._compute_layer(layer)


def _pairs_per_rank(expert_pairs: np.ndarray, lr: LayerRouting, cfg: RoutingConfig) -> np.ndarray:
    """Spread each expert's pairs evenly over its replicas, sum per rank.

    Expert ``e``'s ``n`` pairs go ``n // r`` to each of its ``r`` copies, and the remainder one
    each to the first copies (home first). A rank may hold two replicas of one expert (EPLB places
    a hot expert's extra copies on the least-loaded GPUs, and with few ranks that can be one it
    already holds), so the copies' ranks can repeat a rank and the per-rank sum must add every
    copy: a fancy-indexed ``recv[ranks] += n`` is buffered and writes a repeated rank once,
    dropping the other replica's pairs. ``np.bincount`` (like ``np.add.at``) adds each occurrence,
    over all copies of all experts at once (:attr:`LayerRouting.copies`)."""
    if cfg.redundant == 0:
        return expert_pairs.reshape(cfg.ep, -1).sum(axis=1)
    ranks, expert, copy = lr.copies
    base, rem = np.divmod(expert_pairs, lr.replicas)
    # Copy c of expert e gets base[e] pairs, plus one of the remainder if c < rem[e] (the first
    # copies take it); the float sums are exact (integers far below 2**53), hence the cast back.
    per_copy = base[expert] + (copy < rem[expert])
    return np.bincount(ranks, weights=per_copy, minlength=cfg.ep).astype(np.int64)


# ---------------------------------------------------------------- layer helpers
def _gate_marginals(
    p: np.ndarray, top_k: int, n_nodes: int, max_nodes: int, ep: int,
    n_tokens: int, rng: np.random.Generator, rao_blackwell: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monte-Carlo marginals of the gate: pairs per expert (Rao-Blackwellised),
    P(token uses node), P(token uses GPU) (plain counts)."""
    E = p.size
    _check_gate(E, top_k, n_nodes, max_nodes)
    p32 = (p / p.max()).astype(np.float32)
    pi = np.zeros(E)
    node_hits = np.zeros(n_nodes)
    gpu_hits = np.zeros(ep)
    for lo in range(0, n_tokens, _MC_CHUNK):
        t = min(_MC_CHUNK, n_tokens - lo)
        gate = _Gate(_scores(p32, t, rng), top_k, n_nodes, max_nodes)
        experts = gate.experts()
        if rao_blackwell:
            pi += gate.inclusion_prob(p32).sum(axis=0, dtype=np.float64)
        else:
            pi += np.bincount(experts.ravel(), minlength=E)
        rows = np.arange(t)[:, None]
        hit = np.zeros((t, ep), dtype=bool)
        hit[rows, experts // (E // ep)] = True
        gpu_hits += hit.sum(axis=0)
        hit = np.zeros((t, n_nodes), dtype=bool)
        hit[rows, experts // (E // n_nodes)] = True
        node_hits += hit.sum(axis=0)
    pi *= top_k / pi.sum()   # remove the (tiny) estimation drift of the total
    return pi, node_hits / n_tokens, gpu_hits / n_tokens


def _place_replicas(pi: np.ndarray, ep: int, redundant: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """EPLB-style greedy replication and placement (see module docstring)."""
    E = pi.size
    per_rank = E // ep
    home = np.arange(E) // per_rank
    replicas = np.ones(E, dtype=np.int64)
    ranks: list[list[int]] = [[int(h)] for h in home]
    if redundant == 0:
        return replicas, [np.array(r) for r in ranks]
    # Replica counts: repeatedly split the hottest per-replica load.
    for _ in range(redundant):
        replicas[int(np.argmax(pi / replicas))] += 1
    share = pi / replicas
    load = np.zeros(ep)
    np.add.at(load, home, share)
    slots = np.full(ep, math.ceil(redundant / ep))
    extra = [e for e in np.argsort(-share, kind="stable") for _ in range(replicas[e] - 1)]
    for e in extra:
        # Least-loaded GPU with a free slot, preferring one without this expert.
        order = np.lexsort((load, np.isin(np.arange(ep), ranks[e])))
        g = int(next(g for g in order if slots[g] > 0))
        slots[g] -= 1
        load[g] += share[e]
        ranks[e].append(g)
    return replicas, [np.array(r) for r in ranks]


# ---------------------------------------------------------------- analytic helper
@functools.lru_cache(maxsize=512)
def _first_sample(cfg: RoutingConfig, layer: int) -> RoutingSample:
    """Micro-batch 0's sample of ``layer``, the one both load factors below read (the time factor over
    the first 8 layers, the memory factor over a rank's MoE layers), drawn once for both. Read, never
    written."""
    return RoutingSampler(cfg).sample(layer, 0)


@functools.lru_cache(maxsize=256)
def expected_max_load_factor(cfg: RoutingConfig, n_samples: int = 8) -> float:
    """Mean over sampled layers of max/mean per-rank expert load.

    For the analytic engine: multiply the balanced expert-GEMM time by this.
    Each sample uses a different layer (so a different Zipf shuffle). Cached.
    """
    if cfg.ep <= 1:
        return 1.0
    return float(np.mean([_first_sample(cfg, layer).imbalance for layer in range(n_samples)]))


@functools.lru_cache(maxsize=256)
def memory_load_factor(cfg: RoutingConfig, layers: int = 1) -> float:
    """The most loaded EP rank's expert tokens summed over ``layers`` MoE layers, over the mean.

    For memory, which adds up what a rank keeps over all its layers: under Zipf skew each layer's
    popular experts fall on other ranks (every layer is shuffled), so a rank's total evens out as its
    layers add up; a given histogram routes every layer alike, so the same rank is the most loaded in
    each and the factor stays the one-layer max/mean. (Time is paced per layer instead:
    :func:`expected_max_load_factor`.)"""
    if cfg.ep <= 1 or layers < 1:
        return 1.0
    total = sum(_first_sample(cfg, layer).recv_pairs.astype(np.float64) for layer in range(layers))
    mean = float(np.mean(total))
    return float(np.max(total)) / mean if mean > 0 else 1.0
