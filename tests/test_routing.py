"""MoE expert-load sampling (simulator/des/routing.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simulator.des.routing import (
    RoutingConfig,
    RoutingSampler,
    expected_max_load_factor,
    route_tokens,
)

V3 = dict(tokens=4096, n_experts=256, top_k=8, ep=64, gpus_per_node=8, max_nodes=4)


def v3(**kw) -> RoutingSampler:
    return RoutingSampler(RoutingConfig(**{**V3, **kw}))


def mean_imbalance(sampler: RoutingSampler, layers: int = 6) -> float:
    return float(np.mean([sampler.sample(li, 0).imbalance for li in range(layers)]))


# ---------------------------------------------------------------- gate
def _reference_gate(scores: np.ndarray, k: int, n_groups: int, topk_groups: int) -> set[int]:
    """Plain transcription of the group-limited rule for one token."""
    per = scores.size // n_groups
    g = scores.reshape(n_groups, per)
    kk = max(1, k // topk_groups)
    gscore = np.sort(g, axis=1)[:, -kk:].sum(axis=1)
    keep = np.argsort(gscore)[-topk_groups:]
    masked = np.full_like(scores, -np.inf).reshape(n_groups, per)
    masked[keep] = g[keep]
    return set(np.argsort(masked.ravel())[-k:].tolist())


def test_gate_matches_reference_transcription():
    rng_p = np.random.default_rng(1)
    p = rng_p.random(64) ** 3
    p /= p.sum()
    n = 200
    got = route_tokens(p, n, 6, np.random.default_rng(5), n_groups=8, topk_groups=3)
    x = np.random.default_rng(5).standard_exponential((n, 64), dtype=np.float32)
    scores = np.log((p / p.max()).astype(np.float32)) - np.log(x)  # log p + Gumbel
    for t in range(n):
        assert set(got[t].tolist()) == _reference_gate(scores[t], 6, 8, 3)


def test_gate_respects_node_limit_and_picks_distinct_experts():
    p = np.random.default_rng(2).pareto(1.0, 256) + 1e-3
    experts = route_tokens(p / p.sum(), 5000, 8, np.random.default_rng(0), n_groups=8, topk_groups=4)
    assert experts.shape == (5000, 8)
    assert all(len(set(row)) == 8 for row in experts.tolist())
    nodes_per_token = np.array([len(set(row)) for row in (experts // 32).tolist()])
    assert nodes_per_token.max() <= 4
    # Unlimited routing does use more than 4 nodes sometimes.
    free = route_tokens(p / p.sum(), 5000, 8, np.random.default_rng(0))
    assert max(len(set(row)) for row in (free // 32).tolist()) > 4


def test_gate_never_picks_zero_popularity_experts():
    p = np.zeros(32)
    p[:10] = 1.0
    experts = route_tokens(p, 1000, 4, np.random.default_rng(0))
    assert experts.max() < 10


def test_top1_gate_follows_popularity():
    p = np.arange(1, 9, dtype=float)
    p /= p.sum()
    experts = route_tokens(p, 40000, 1, np.random.default_rng(3))
    freq = np.bincount(experts.ravel(), minlength=8) / 40000
    np.testing.assert_allclose(freq, p, atol=0.01)


# ---------------------------------------------------------------- samples
def test_balanced_v3_is_nearly_balanced():
    s = v3()
    for layer in range(3):
        assert s.sample(layer, 0).imbalance < 1.1


def test_conservation_and_shapes():
    s = v3(skew="zipf", zipf_s=1.0, redundant=32)
    x = s.sample(3, 7)
    total_pairs = V3["tokens"] * V3["ep"] * V3["top_k"]  # every token on every rank picks k experts
    assert x.expert_pairs.sum() == total_pairs
    assert x.recv_pairs.sum() == total_pairs
    assert x.recv_pairs.shape == (64,) and x.ib_send.shape == (64, 8)
    assert np.all(x.recv_tokens <= x.recv_pairs)
    own = np.arange(64) // 8
    assert np.all(x.ib_send[np.arange(64), own] == 0)
    assert np.all(x.ib_send <= V3["tokens"])
    lr = s.layer(3)
    assert lr.pi.sum() == pytest.approx(8.0)
    assert lr.replicas.sum() == 256 + 32
    # Node limit: a token touches at most M nodes, so on average too.
    assert lr.q.sum() <= 4 + 1e-9


def test_ib_volume_matches_node_marginals():
    s = v3()
    q = s.layer(0).q
    x = s.sample(0, 0)
    # Each rank sends ~ tokens x q_j to each of the 7 remote nodes.
    assert x.ib_send.sum(axis=1).mean() == pytest.approx(4096 * q[0] * 7, rel=0.02)


def test_deterministic_per_seed_layer_microbatch():
    a, b = v3(skew="zipf"), v3(skew="zipf")
    np.testing.assert_array_equal(a.sample(2, 5).recv_pairs, b.sample(2, 5).recv_pairs)
    assert not np.array_equal(a.sample(2, 5).recv_pairs, a.sample(2, 6).recv_pairs)
    # Zipf: the hot expert moves between layers.
    assert np.argmax(a.popularity(0)) != np.argmax(a.popularity(1))


def test_skew_orders_imbalance():
    bal = mean_imbalance(v3())
    z10 = mean_imbalance(v3(skew="zipf", zipf_s=1.0))
    z12 = mean_imbalance(v3(skew="zipf", zipf_s=1.2))
    assert bal < z10 < z12


def test_redundant_experts_reduce_max_load():
    plain = v3(skew="zipf", zipf_s=1.0)
    eplb = v3(skew="zipf", zipf_s=1.0, redundant=64)
    for layer in range(3):
        assert eplb.sample(layer, 0).recv_pairs.max() < plain.sample(layer, 0).recv_pairs.max()
    # Replicas spread over distinct GPUs, within the per-GPU slot budget.
    lr = eplb.layer(0)
    counts = np.bincount(np.concatenate([r[1:] for r in lr.replica_rank]), minlength=64)
    assert counts.max() <= 1
    assert all(len(set(r.tolist())) == len(r) for r in lr.replica_rank)


@pytest.mark.parametrize("cfg", [
    dict(tokens=4096, n_experts=8, top_k=2, ep=2, redundant=6),  # 3 slots a GPU for 8 experts' copies
    dict(tokens=4096, n_experts=8, top_k=2, ep=2, redundant=6, skew="zipf", zipf_s=1.0),
    dict(tokens=4096, n_experts=256, top_k=8, ep=8, redundant=64, skew="zipf", zipf_s=1.0),
])
def test_every_pair_lands_on_a_rank_when_a_gpu_holds_two_replicas(cfg):
    """Redundant experts can put two copies of one expert on one GPU (few ranks, many spare slots):
    that GPU computes both copies' share, so the ranks still receive tokens x top-k pairs in all."""
    s = RoutingSampler(RoutingConfig(**cfg))
    total_pairs = cfg["tokens"] * cfg["ep"] * cfg["top_k"]
    doubled = 0
    for layer in range(4):
        lr = s.layer(layer)
        doubled += sum(len(set(r.tolist())) < len(r) for r in lr.replica_rank)
        for mb in range(3):
            assert s.sample(layer, mb).recv_pairs.sum() == total_pairs
    assert doubled  # the placement this test is about does occur here


def test_pairs_per_rank_adds_each_replica_on_a_shared_gpu():
    """A hand-made placement: expert 0 has three copies, two of them on GPU 1; expert 1 one copy on GPU 1."""
    from simulator.des.routing import LayerRouting, _pairs_per_rank

    cfg = RoutingConfig(tokens=1, n_experts=2, top_k=1, ep=2, redundant=2)
    one = np.ones(2)
    lr = LayerRouting(one / 2, one / 2, np.ones(1), one, np.array([3, 1]), [np.array([0, 1, 1]), np.array([1])])
    # 7 pairs for expert 0: 3, 2, 2 over its copies (the remainder to the first); 5 for expert 1.
    np.testing.assert_array_equal(_pairs_per_rank(np.array([7, 5]), lr, cfg), [3, 2 + 2 + 5])


def test_histogram_respected_in_expectation():
    w = np.linspace(1.0, 4.0, 64)
    s = RoutingSampler(RoutingConfig(tokens=2048, n_experts=64, top_k=1, ep=8,
                                     skew="histogram", histogram=tuple(w)))
    mean = np.mean([s.sample(0, mb).expert_pairs for mb in range(50)], axis=0)
    np.testing.assert_allclose(mean / mean.sum(), w / w.sum(), rtol=0.08)
    # Top-k > 1: more weight still means more load.
    s8 = RoutingSampler(RoutingConfig(tokens=2048, n_experts=64, top_k=8, ep=8,
                                      skew="histogram", histogram=tuple(w)))
    pi = s8.layer(0).pi
    assert np.corrcoef(pi, w)[0, 1] > 0.95


def test_uniform_histogram_equals_balanced():
    s = RoutingSampler(RoutingConfig(**{**V3, "skew": "histogram", "histogram": (1.0,) * 256}))
    np.testing.assert_allclose(s.layer(0).pi, 8 / 256)


def test_expected_max_load_factor_cached_and_ordered():
    base = dict(tokens=4096, n_experts=256, top_k=8, ep=64, gpus_per_node=8, max_nodes=4)
    bal = expected_max_load_factor(RoutingConfig(**base), n_samples=4)
    z = expected_max_load_factor(RoutingConfig(**base, skew="zipf", zipf_s=1.0), n_samples=4)
    assert 1.0 < bal < 1.1 < z
    hits = expected_max_load_factor.cache_info().hits
    assert expected_max_load_factor(RoutingConfig(**base), n_samples=4) == bal
    assert expected_max_load_factor.cache_info().hits == hits + 1  # served from the cache
    assert expected_max_load_factor(RoutingConfig(**{**base, "ep": 1})) == 1.0


def test_a_layer_is_built_once_and_sampled_many_times(monkeypatch):
    # The Monte-Carlo marginals of a layer are the costly part; each micro-batch's sample reuses
    # them (the per-sample time is in benchmarks/bench_des.py, not asserted here).
    s = v3(skew="zipf", zipf_s=1.0, redundant=32)
    built = []
    real = s._build_layer
    monkeypatch.setattr(s, "_build_layer", lambda layer: built.append(layer) or real(layer))
    samples = [s.sample(0, mb) for mb in range(20)]
    assert built == [0]
    assert len({round(x.imbalance, 9) for x in samples}) > 1  # micro-batches differ: a real sample each


def test_samplers_that_differ_only_in_tokens_share_their_layers():
    # A plan search varies the micro-batch and CP, hence the tokens sampled; a layer's marginals and
    # placement do not depend on them and are built once for all those samplers.
    a = v3(skew="zipf", zipf_s=1.0, redundant=32)
    b = RoutingSampler(dataclasses.replace(a.cfg, tokens=2 * a.cfg.tokens))
    assert a.layer(3) is b.layer(3)
    assert b.sample(3, 0).recv_pairs.sum() == 2 * a.sample(3, 0).recv_pairs.sum()


def test_config_validation():
    with pytest.raises(ValueError, match="skew"):
        RoutingConfig(**V3, skew="pareto")
    with pytest.raises(ValueError, match="ep"):
        RoutingConfig(tokens=1, n_experts=256, top_k=8, ep=48, gpus_per_node=8)
    with pytest.raises(ValueError, match="histogram"):
        RoutingConfig(**V3, skew="histogram", histogram=(1.0, 2.0))


@pytest.mark.parametrize("n_groups,topk_groups,k", [(1, 0, 4), (4, 2, 4), (8, 3, 6), (8, 1, 3)])
def test_rao_blackwell_marginals_match_pick_counts(n_groups, topk_groups, k):
    from simulator.des.routing import _Gate, _scores

    p = np.random.default_rng(4).random(32) ** 2
    p32 = (p / p.max()).astype(np.float32)
    rng = np.random.default_rng(9)
    n = 40960
    picks = np.zeros(32)
    rb = np.zeros(32)
    for _ in range(n // 4096):
        gate = _Gate(_scores(p32, 4096, rng), k, n_groups, topk_groups)
        picks += np.bincount(gate.experts().ravel(), minlength=32)
        rb += gate.inclusion_prob(p32).sum(axis=0, dtype=np.float64)
    picks /= n
    rb /= n
    se = np.sqrt(picks * (1 - picks) / n) + 1e-4
    assert np.all(np.abs(picks - rb) < 5 * se)
    assert rb.sum() == pytest.approx(k, rel=5e-3)


def test_memory_sums_a_ranks_layers_so_shuffled_skew_evens_out():
    """Memory holds a rank's expert activations summed over its layers. Zipf skew shuffles the popular
    experts per layer, so the most loaded rank's total over 8 layers is far less skewed than one layer;
    a histogram routes every layer alike, so the factor stays the one-layer one."""
    from simulator.des.routing import memory_load_factor

    args = dict(tokens=4096, n_experts=256, top_k=8, ep=64, gpus_per_node=8, max_nodes=4)
    one = memory_load_factor(RoutingConfig(**args, skew="zipf", zipf_s=1.0), layers=1)
    eight = memory_load_factor(RoutingConfig(**args, skew="zipf", zipf_s=1.0), layers=8)
    assert 1.0 < eight < 0.6 * one
    hist = tuple(float(i % 16 == 0) * 9 + 1 for i in range(256))
    h1 = memory_load_factor(RoutingConfig(**args, skew="histogram", histogram=hist), layers=1)
    h8 = memory_load_factor(RoutingConfig(**args, skew="histogram", histogram=hist), layers=8)
    assert h8 == pytest.approx(h1, rel=0.05) and h1 > 1.5


def test_both_engines_size_skewed_memory_alike():
    from simulator.api import predict
    from simulator.scenario import load_scenario

    sc = load_scenario("deepseek-v3", ("plan.routing=zipf", "plan.zipf_s=1.0"))
    a, d = predict(sc), predict(sc, engine="des")
    assert a.peak_memory_gib == pytest.approx(d.peak_memory_gib, rel=0.10)
    assert a.fits_in_memory == d.fits_in_memory
