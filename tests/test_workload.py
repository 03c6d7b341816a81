"""Parameter and FLOP accounting against the published figures."""

import pytest

from simulator.config import PlanConfig
from simulator.scenario import list_models, load_model
from simulator.workload import Shape, layer_ops, param_counts, train_flops_per_token

B = 1e9


@pytest.mark.parametrize(
    "name,total,tol",
    [("deepseek-v3", 671, 0.01), ("deepseek-v2", 236, 0.01), ("deepseek-v2-lite", 15.7, 0.01),
     ("deepseekmoe-16b", 16.4, 0.01), ("deepseekmoe-145b", 144.6, 0.01)],
)
def test_total_params(name, total, tol):
    assert param_counts(load_model(name)).total / B == pytest.approx(total, rel=tol)


@pytest.mark.parametrize(
    "name,activated",
    # DeepSeek-V2/V3 papers count activated parameters without the input-embedding lookup.
    [("deepseek-v3", 37), ("deepseek-v2", 21), ("deepseek-v2-lite", 2.4)],
)
def test_activated_params_v2_v3_convention(name, activated):
    assert param_counts(load_model(name)).activated_excl_embedding / B == pytest.approx(activated, rel=0.03)


@pytest.mark.parametrize("name,activated", [("deepseekmoe-16b", 2.8), ("deepseekmoe-145b", 22.2)])
def test_activated_params_deepseekmoe_convention(name, activated):
    assert param_counts(load_model(name)).activated / B == pytest.approx(activated, rel=0.03)


def test_v3_mtp_module_size():
    # README_WEIGHTS: 11.5B unique MTP parameters (excluding shared embedding/head).
    assert param_counts(load_model("deepseek-v3")).mtp / B == pytest.approx(11.5, rel=0.03)


@pytest.mark.parametrize(
    "name,tflops_per_4k",
    [("deepseekmoe-16b", 74.4), ("deepseekmoe-145b", 585.6), ("llama2-7b", 187.9), ("deepseek-7b", 183.5)],
)
def test_train_flops_deepseekmoe_paper(name, tflops_per_4k):
    f = train_flops_per_token(load_model(name), 4096) * 4096 / 1e12
    assert f == pytest.approx(tflops_per_4k, rel=0.03)


def test_backward_splits_gemm_flops_evenly():
    m = load_model("deepseek-v3")
    lo = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, precision="fp8"), 4096))
    gemm = lambda ops: sum(o.flops for o in ops if o.kind in ("gemm", "grouped_gemm") and not o.recompute)  # noqa: E731
    assert gemm(lo.B) == pytest.approx(gemm(lo.F))
    assert gemm(lo.W) == pytest.approx(gemm(lo.F))
    # Causal attention backward is 2.5x forward (flash-attention's five matmuls vs two).
    att = lambda ops: sum(o.flops for o in ops if o.kind == "attention" and not o.recompute)  # noqa: E731
    assert att(lo.B) == pytest.approx(2.5 * att(lo.F))


def test_recompute_adds_forward_work_to_backward():
    m = load_model("deepseek-v3")
    none = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, recompute="none"), 4096))
    sel = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, recompute="selective"), 4096))
    full = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, recompute="full"), 4096))
    flops = lambda lo: sum(o.flops for o in lo.B)  # noqa: E731
    assert flops(none) < flops(sel) < flops(full)
    assert none.activation_bytes > sel.activation_bytes > 0


def test_fp8_dispatch_half_the_bytes_of_bf16():
    m = load_model("deepseek-v3")
    f8 = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, precision="fp8"), 4096))
    b16 = layer_ops(m, "moe", Shape.of(PlanConfig(ep=64, precision="bf16"), 4096))
    d = lambda lo: next(o.comm_bytes for o in lo.F if o.comm == "dispatch")  # noqa: E731
    assert d(f8) == pytest.approx(d(b16) / 2 * (1 + 4 / 128), rel=1e-6)


def test_selective_recompute_keeps_the_activation_functions_input_not_its_output():
    """Under selective recomputation the SwiGLU output (the down projection's input) is rebuilt in backward
    from the SwiGLU input, which is kept (DeepSeek-V3 sec 3.3.3); the norms' outputs (the projections'
    inputs) are rebuilt from the norms' inputs. A LLaMA-2 7B layer at TP1 with flash attention keeps, per
    token: the two norm inputs (2h each in BF16), q, k, v, the attention output (2h, 4h, 2h) and the
    softmax statistics (4 bytes a head), and the SwiGLU input (2 x I in BF16): 12h + 4 heads + 4I bytes.
    Without recomputation the QKV and up projections' inputs (2h each) and the down projection's (2I) too."""
    from simulator.scenario import load_scenario
    from simulator.workload import Shape, layer_ops

    for recompute, per_token in (("selective", lambda h, a, i: 12 * h + 4 * a + 4 * i),
                                 ("none", lambda h, a, i: 16 * h + 4 * a + 6 * i)):
        sc = load_scenario("llama2-7b", (f"plan.recompute={recompute}", "plan.tp=1"))
        m = sc.model
        assert m.mlp == "swiglu" and m.n_kv_heads == m.heads and m.hidden_dropout == 0
        shape = Shape.of(sc.plan, sc.training.seq_len)
        lo = layer_ops(m, "dense", shape)
        assert lo.activation_bytes == shape.tokens * per_token(m.hidden, m.heads, m.dense_intermediate)


def test_a_rank_running_mtp_away_from_the_embedding_keeps_a_copy_of_it():
    """V3's MTP module embeds with the main embedding and predicts with the main head (sec 2.2). Under
    DualPipe the end ranks hold both ends of the model and share them; under 1F1B the last rank holds the
    head and the MTP module but not the embedding, so it keeps a copy: 129,280 x 7,168 parameters more."""
    from simulator.api import predict
    from simulator.scenario import load_scenario
    from simulator.workload import shared_weight_copies

    m = load_scenario("deepseek-v3").model
    table = m.vocab * m.hidden
    assert shared_weight_copies(m, ["head", "mtp", "mtp_head"], 1) == table
    assert shared_weight_copies(m, ["embed", "moe", "head", "mtp", "mtp_head"], 1) == 0
    assert shared_weight_copies(m, ["mtp_head"], 2) == table / 2  # a copy of the head, TP-sharded
    assert shared_weight_copies(m, ["moe", "moe"], 1) == 0
    dual = predict(load_scenario("deepseek-v3"))
    f1b = predict(load_scenario("deepseek-v3", ("plan.schedule=1f1b",)))
    assert ["embed"] == f1b.stages[0].layers[0][:1] and "mtp" in f1b.stages[-1].layers[0]
    bf16 = 2
    from simulator.analytic import Evaluator, resolve_profile, stage_units
    from simulator.workload import Shape

    sc = f1b.scenario
    ev = Evaluator(sc, resolve_profile(sc, None))
    shape = Shape.of(sc.plan, sc.training.seq_len)
    units = tuple(stage_units(sc, ev, shape)[-1])
    pd, pe = ev.stage_memory(sc, units, shape)[:2]
    assert f1b.stages[-1].memory.params == pytest.approx(bf16 * (pd + pe + table))
    assert all(st.memory.params > 0 for st in dual.stages)


def test_full_recompute_checkpoints_blocks_not_the_head_or_embedding():
    """Full recomputation keeps a block's input and rebuilds the rest before its backward; the output head
    and loss are not checkpointed (they keep what they keep anyway) and the embedding keeps nothing. The
    block run again holds, for that moment, everything it keeps without recomputation."""
    from simulator.scenario import load_scenario
    from simulator.workload import kept_for_backward, recompute_transient

    sc = load_scenario("deepseek-v3", ("plan.recompute=full",))
    m, shape = sc.model, Shape.of(sc.plan, sc.training.seq_len)
    block_input = shape.tokens * m.hidden * 2
    for kind, kept in (("moe", block_input), ("dense", block_input), ("mtp", 2 * block_input), ("embed", 0.0)):
        assert kept_for_backward(m, kind, shape, layer_ops(m, kind, shape)) == kept
    head = layer_ops(m, "head", shape)
    assert kept_for_backward(m, "head", shape, head) == head.activation_bytes > block_input
    none = Shape.of(load_scenario("deepseek-v3", ("plan.recompute=none",)).plan, sc.training.seq_len)
    assert recompute_transient(m, "moe", shape) == layer_ops(m, "moe", none).activation_bytes
    assert recompute_transient(m, "head", shape) == recompute_transient(m, "moe", none) == 0.0


def test_mla_keeps_its_latents_for_the_norms_backward_unless_recomputed():
    """Without recomputation an MLA layer keeps each latent twice: the RMSNorm's input (BF16) for the norm's
    backward, and the normed latent the up-projection's weight gradient reads (in FP8 under V3's activation
    cache). V3's selective recomputation keeps only the second and rebuilds the norm from it (sec 3.4.1)."""
    import dataclasses

    from simulator.scenario import load_scenario

    def grown(recompute: str, field: str) -> float:
        sc = load_scenario("deepseek-v3", (f"plan.recompute={recompute}",))
        m, shape = sc.model, Shape.of(sc.plan, sc.training.seq_len)
        wider = dataclasses.replace(m, **{field: getattr(m, field) + 64})
        return layer_ops(wider, "moe", shape).activation_bytes - layer_ops(m, "moe", shape).activation_bytes

    tokens = 4096  # V3: one 4K-token sequence a micro-batch
    for field in ("q_lora_rank", "kv_lora_rank"):
        assert grown("selective", field) > 0
        assert grown("none", field) - grown("selective", field) == pytest.approx(tokens * 64 * 2)


@pytest.mark.parametrize("sp", [False, True])
def test_embedding_and_output_head_run_their_tensor_parallel_collectives(sp):
    """Megatron-LM's VocabParallelEmbedding all-reduces the looked-up rows (reduce-scatters them under sequence
    parallelism, all-gathering the gradient back); its column-parallel output layer all-reduces its input
    gradient (under sequence parallelism it all-gathers its input and reduce-scatters the gradient, keeping
    only the shard, as do the final norm's saved input). Neither is checkpointed: full recomputation reruns
    none of them."""
    from simulator.scenario import load_scenario

    sc = load_scenario("llama2-7b", ("plan.tp=2", f"plan.sp={str(sp).lower()}", "plan.recompute=full"))
    m, shape = sc.model, Shape.of(sc.plan, sc.training.seq_len)
    share = shape.tokens * m.hidden * 2 / 2  # (tp - 1) / tp of one BF16 hidden state

    def tp_bytes(ops):
        return sum(op.comm_bytes for op in ops if op.comm == "tp")

    embed, head = layer_ops(m, "embed", shape), layer_ops(m, "head", shape)
    assert tp_bytes(embed.F) == pytest.approx(share if sp else 2 * share)
    assert tp_bytes(embed.B) == pytest.approx(share if sp else 0.0)
    assert tp_bytes(head.F) == pytest.approx(share if sp else 0.0)
    assert tp_bytes(head.B) == pytest.approx(2 * share if sp else 2 * share)  # sp: the reduce-scatter and the regather
    assert not any(op.recompute for op in embed.all_ops() + head.all_ops())
    solo = layer_ops(m, "head", Shape.of(load_scenario("llama2-7b", ("plan.tp=1",)).plan, sc.training.seq_len))
    assert tp_bytes(solo.all_ops()) == 0


def _casts(lo, gemm: str) -> dict[str, float]:
    """Bytes the FP8 casts feeding ``gemm`` move, by phase."""
    out = {"F": 0.0, "B": 0.0, "W": 0.0}
    for ph in out:
        out[ph] = sum(o.bytes for o in getattr(lo, ph) if o.kind == "memory" and o.name.startswith(gemm + "."))
    return out


def test_each_fp8_recipe_casts_its_own_way():
    """Per linear of x input and dy output-gradient elements: DeepSeek-V3's blockwise workflow quantizes x
    and dy (BF16 in, FP8 and 1x128 scales out) and re-quantizes both transposed for Wgrad (x from the FP8
    copy it cached); Transformer
    Engine's delayed scaling writes both copies in one pass (read 2, write 1 + 1); current (tensorwise)
    scaling reads the tensor once more first, for its amax."""
    m = load_model("llama3-405b")
    shape = lambda recipe: Shape.of(PlanConfig(precision="fp8", fp8_recipe=recipe), 4096)  # noqa: E731
    ops = {r: layer_ops(m, "dense", shape(r)) for r in ("blockwise", "delayed", "tensorwise")}
    x, dy = 4096 * m.dense_intermediate, 4096 * m.hidden  # mlp.down's input and output gradient
    s = 4 / 128  # one FP32 scale per 128 values
    q = 2 + 1 + s
    # V3's Wgrad casts read the FP8 input it kept back ("read out, dequantized, transposed, re-quantized")
    # and the BF16 output gradient again.
    blockwise_w = x * (1 + s + 1 + s) + dy * q
    assert _casts(ops["blockwise"], "mlp.down") == pytest.approx({"F": q * x, "B": q * dy, "W": blockwise_w})
    assert _casts(ops["delayed"], "mlp.down") == pytest.approx({"F": 4 * x, "B": 4 * dy, "W": 0.0})
    assert _casts(ops["tensorwise"], "mlp.down") == pytest.approx({"F": 6 * x, "B": 6 * dy, "W": 0.0})
    amax = [o for o in ops["tensorwise"].F if o.name == "mlp.down.amax"]
    assert len(amax) == 1 and amax[0].bytes == pytest.approx(2 * x)
    # Per-tensor recipes keep one scale per tensor: the FP8 activations they cache carry no tile scales.
    assert ops["delayed"].activation_bytes < ops["blockwise"].activation_bytes
    assert ops["delayed"].activation_bytes == ops["tensorwise"].activation_bytes
    # The GEMMs say how their operands are scaled (the timer compares it with the profile's rows).
    scalings = {r: {o.scaling for o in lo.all_ops() if o.kind == "gemm" and o.dtype == "fp8"} for r, lo in ops.items()}
    assert scalings == {"blockwise": {"blockwise"}, "delayed": {"tensorwise"}, "tensorwise": {"tensorwise"}}


def test_the_fp8_recipe_leaves_bf16_training_alone():
    bf16 = [Shape.of(PlanConfig(precision="bf16", fp8_recipe=r), 4096) for r in ("blockwise", "tensorwise")]
    assert bf16[0] == bf16[1]
    lo = layer_ops(load_model("llama3-405b"), "dense", bf16[1])
    assert not [o for o in lo.all_ops() if o.scaling or "amax" in o.name or "quant" in o.name]


@pytest.mark.parametrize("name", list_models())
def test_a_unit_without_routed_experts_has_the_same_ops_under_every_ep_size_and_routing(name):
    """layer_ops keeps the ops of an embedding, a dense layer and the heads once for every EP size, routing skew,
    dispatcher and redundant-expert count (workload.routing_free), and the analytic engine times them once: that
    holds only while nothing but the routed experts reads those fields. Built afresh here for each."""
    import dataclasses

    from simulator.workload import _layer_ops, routing_free

    m = load_model(name)
    for kind in ("embed", "dense", "head", "mtp_head"):
        for tp, rc in ((1, "none"), (4, "full")):
            base = Shape.of(PlanConfig(tp=tp, sp=tp > 1, micro_batch=2, recompute=rc), 4096)
            want = _layer_ops.__wrapped__(m, kind, routing_free(base), 8, 1)
            for change in ({"ep": 8}, {"ep": 64, "imbalance": 1.7}, {"dispatcher": "alltoall"}, {"redundant": 32}):
                assert _layer_ops.__wrapped__(m, kind, dataclasses.replace(base, **change), 8, 1) == want, (kind, change)
    if m.is_moe:  # and the routed units do read them
        shape = Shape.of(PlanConfig(ep=8), 4096)
        assert layer_ops(m, "moe", shape) != layer_ops(m, "moe", dataclasses.replace(shape, imbalance=1.7))
