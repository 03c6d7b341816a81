"""The work of one training step, as ops per layer.

Every layer of the model becomes a list of :class:`Op` for one micro-batch on
one GPU, separately for the three passes a pipeline schedule moves around:
forward (``F``), backward-for-input (``B``) and backward-for-weights (``W``).
An op carries its FLOPs, the HBM bytes it moves, its dtype and shape (so the op
timer can look its speed up in a calibration profile), and, for communication,
the bytes it puts on each link.

Layer kinds: ``embed`` (token embedding), ``dense`` (attention + dense FFN),
``moe`` (attention + DeepSeekMoE: gate, dispatch, grouped expert GEMMs, shared
experts, combine), ``head`` (final norm, output projection, loss) and ``mtp``
(DeepSeek-V3's multi-token-prediction module: projection + one block; its
head is a separate ``head`` unit). Each op also names its DualPipe *block*:
``attn``, ``dispatch``, ``mlp`` or ``combine``, the four pieces a chunk is cut
into so that one micro-batch's communication hides behind another's compute.

Layers of one kind are identical, so ops are built once per kind (cached on the
frozen configs) and multiplied by counts: the hot path of plan search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

from .config import ModelConfig, PlanConfig, hash_once
from .tp_overlap import collective_chunks, gemm_execution

BYTES = {"fp8": 1.0, "bf16": 2.0, "fp16": 2.0, "fp32": 4.0}
FP8_SCALE_OVERHEAD = 4.0 / 128  # one FP32 scale per 1x128 tile (V3 sec 3.3.2)


class Op(NamedTuple):
    """One kernel (or one collective) of one pass over one micro-batch on one GPU.

    Immutable, hashed and compared by value (the op timer keys its cache on it). A named tuple, not a
    frozen dataclass: a search builds ~180,000 of them for DeepSeek-V3 (six chunks of its space), and a
    frozen dataclass sets each of its 23 fields through ``object.__setattr__`` (3.0 us an op against
    0.7 us, 14 % of a search worker's time). Copy with changes through ``op._replace(...)``."""

    name: str
    kind: str  # gemm | grouped_gemm | attention | memory | comm
    phase: str  # F | B | W
    block: str  # attn | dispatch | mlp | combine | other
    flops: float = 0.0
    bytes: float = 0.0  # HBM bytes read + written
    dtype: str = "bf16"
    m: float = 0.0
    n: float = 0.0
    k: float = 0.0
    groups: int = 0
    seq: int = 0
    heads: int = 0
    qk_dim: int = 0
    v_dim: int = 0
    comm: str = ""  # dispatch | combine | tp | cp
    comm_bytes: float = 0.0
    transport: str = ""  # dispatch/combine: deepep (DeepEP kernels) or nccl (one NCCL all-to-all)
    library: str = ""  # attention: whose profile rows time it ("" = the default flash rows; cudnn, fa2)
    recompute: bool = False  # forward work redone in backward
    # How the kernel runs beside TP communication (simulator.tp_overlap): a GEMM cut into ``splits``
    # chunks of m/splits rows, on all SMs but ``sm_margin``; a TP collective in ``splits`` chunks
    # whose last one no GEMM hides.
    splits: int = 1
    sm_margin: int = 0
    # FP8 GEMMs: how their operands are scaled, "blockwise" (1x128 / 128x128 tiles) or "tensorwise" (one
    # scale per tensor, however it was chosen); the timer says when the profile measured another.
    scaling: str = ""


@dataclass(frozen=True)
class LayerOps:
    kind: str
    F: tuple[Op, ...]
    B: tuple[Op, ...]
    W: tuple[Op, ...]
    params: float  # parameters of this unit held on this GPU (after TP/EP sharding)
    params_expert: float = 0.0  # of which routed-expert parameters (sharded by EP)
    activation_bytes: float = 0.0  # saved for backward per micro-batch (see memory.py)

    def all_ops(self) -> tuple[Op, ...]:
        return self.F + self.B + self.W


@hash_once  # a shape keys every layer, stage and rank cache: 81,000 lookups of 4,300 shapes in six chunks of V3's space
@dataclass(frozen=True)
class Shape:
    """What the ops of one micro-batch on one GPU depend on (a cache key)."""

    tokens: int  # tokens per micro-batch on this GPU before TP (micro_batch * seq / cp)
    seq: int  # sequence length
    micro_batch: int
    tp: int
    cp: int
    ep: int
    sp: bool
    precision: str
    recompute: str
    fp8_cache: bool
    imbalance: float = 1.0  # max/mean tokens per EP rank (routing skew)
    attention_kernel: str = "flash"
    dispatcher: str = "deepep"
    tp_overlap: bool = False  # TE userbuffers TP overlap (needs sequence parallelism)
    loss_kernel: str = "fused"
    redundant: int = 0  # EPLB-style replicas over the EP group (their weights live on the GPUs too)
    fp8_recipe: str = "blockwise"  # how FP8 GEMM inputs are scaled and cast (see _Builder.quantize)

    @staticmethod
    def of(plan: PlanConfig, seq: int, imbalance: float = 1.0) -> "Shape":
        return Shape(
            tokens=plan.micro_batch * seq // plan.cp,
            seq=seq,
            micro_batch=plan.micro_batch,
            tp=plan.tp,
            cp=plan.cp,
            ep=plan.ep,
            sp=plan.sp and plan.tp > 1,  # Megatron sequence parallelism only inside a TP group
            precision=plan.precision,
            recompute=plan.recompute,
            fp8_cache=plan.fp8_activation_cache,
            imbalance=imbalance,
            attention_kernel=plan.attention_kernel,
            dispatcher=plan.dispatcher,
            tp_overlap=plan.tp_comm_overlap and plan.sp and plan.tp > 1,
            loss_kernel=plan.loss_kernel,
            redundant=plan.redundant_experts,
            # Only FP8 GEMMs read the recipe: other precisions share one cache entry whatever it says.
            fp8_recipe=plan.fp8_recipe if plan.precision == "fp8" else "blockwise",
        )


# --------------------------------------------------------------------------- parameters


def attention_params(m: ModelConfig) -> float:
    h = m.hidden
    if m.is_mla:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = h * m.q_lora_rank + m.q_lora_rank * m.heads * qk if m.q_lora_rank else h * m.heads * qk
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * m.heads * (m.qk_nope_head_dim + m.v_head_dim)
        o = m.heads * m.v_head_dim * h
        norms = m.q_lora_rank + m.kv_lora_rank
        return q + kv + o + norms
    d = m.dim_per_head
    p = h * (m.heads + 2 * m.n_kv_heads) * d + m.heads * d * h
    if m.nsa is not None:
        # NSA keeps independent K/V per branch (compression, selection, window) and a gate MLP.
        p += 2 * h * 2 * m.n_kv_heads * d + h * 3 * m.heads
    return p


def ffn_params(m: ModelConfig, width: int) -> float:
    mats = 3 if m.mlp == "swiglu" else 2
    return mats * m.hidden * width


def expert_params(m: ModelConfig) -> float:
    return ffn_params(m, m.moe_intermediate)


@dataclass(frozen=True)
class ParamCounts:
    total: float
    activated: float
    embedding: float
    head: float
    mtp: float
    mtp_activated: float

    @property
    def activated_excl_embedding(self) -> float:
        """Activated parameters without the input-embedding lookup: the DeepSeek-V2/V3 papers'
        convention (V3 36.7B per README_WEIGHTS, V2 21B, V2-Lite 2.4B). The DeepSeekMoE paper
        counts the embedding too (16B: 2.8B), which is ``activated``."""
        return self.activated - self.embedding


def param_counts(m: ModelConfig) -> ParamCounts:
    """Total and activated parameters of the main model (MTP counted separately).

    Activated = what one token touches: attention, dense FFNs, shared experts,
    top-k routed experts, gates, embedding and head (the convention of the
    DeepSeek papers: V3 37B, V2 21B, DeepSeekMoE 16B 2.8B).
    """
    h = m.hidden
    emb = m.vocab * h
    head = 0.0 if m.tied_embeddings else m.vocab * h
    norms = 2 * h
    attn = attention_params(m) + norms
    dense_layer = attn + ffn_params(m, m.dense_intermediate)
    if m.is_moe:
        gate = m.n_routed_experts * h
        moe_total = attn + gate + (m.n_routed_experts + m.n_shared_experts) * expert_params(m)
        moe_active = attn + gate + (m.experts_per_token + m.n_shared_experts) * expert_params(m)
    else:
        moe_total = moe_active = 0.0
    body_total = m.n_dense_layers * dense_layer + m.n_moe_layers * moe_total
    body_active = m.n_dense_layers * dense_layer + m.n_moe_layers * moe_active
    final_norm = h
    total = emb + head + body_total + final_norm
    active = emb + head + body_active + final_norm
    # MTP module (V3 sec 2.2): projection 2h->h, two norms, one block (MoE when the model is MoE);
    # embedding and head are shared with the main model.
    mtp_block_total = moe_total if m.is_moe else dense_layer
    mtp_block_active = moe_active if m.is_moe else dense_layer
    mtp = m.mtp_depth * (2 * h * h + 3 * h + mtp_block_total)
    mtp_active = m.mtp_depth * (2 * h * h + 3 * h + mtp_block_active)
    return ParamCounts(total, active, emb, head, mtp, mtp_active)


# --------------------------------------------------------------------------- FLOP conventions


def attention_pairs_per_token(m: ModelConfig, seq: int, causal: bool, layer: int = 0) -> float:
    """Average number of keys each query attends to (per head)."""
    if m.nsa is not None:
        n = m.nsa
        avg_pos = seq / 2 if causal else seq
        compressed = max(0.0, (avg_pos - n.compress_block) / n.compress_stride + 1)
        selected = min(avg_pos, n.selected_blocks * n.select_block)
        window = min(avg_pos, n.window)
        return compressed + selected + window
    if m.sliding_window and layer % m.sliding_window_every == 0:
        w = min(m.sliding_window, seq)
        return (w - w * w / (2 * seq)) if causal else w
    return seq / 2 if causal else seq


def train_flops_per_token(m: ModelConfig, seq: int) -> float:
    """Training FLOPs per token in the DeepSeekMoE paper's convention.

    Forward + backward (3x the forward matmul FLOPs) of every activated weight
    except the input embedding (a lookup), the output head included, and
    attention counted over the whole sequence (no causal halving). MTP excluded.
    Reproduces the paper's per-4K-token figures (16B 74.4T, 145B 585.6T,
    LLaMA2-7B 187.9T, DeepSeek 7B 183.5T) within 3%.
    """
    pc = param_counts(m)
    matmul_params = pc.activated - pc.embedding - _norm_params(m)
    if m.tied_embeddings:
        matmul_params += pc.embedding  # the tied head is still a matmul
    attn = sum(
        2 * 2 * m.heads * attention_pairs_per_token(m, seq, causal=False, layer=i) * (m.qk_head_dim + m.v_dim) / 2
        for i in range(m.layers)
    )
    return 6 * matmul_params + 3 * attn


def _norm_params(m: ModelConfig) -> float:
    per_layer = 2 * m.hidden + ((m.q_lora_rank + m.kv_lora_rank) if m.is_mla else 0)
    return m.layers * per_layer + m.hidden


# --------------------------------------------------------------------------- op builders


class _Builder:
    """Accumulates F/B/W ops for one layer unit."""

    def __init__(self, shape: Shape, m: ModelConfig):
        self.s = shape
        self.m = m
        self.F: list[Op] = []
        self.B: list[Op] = []
        self.W: list[Op] = []
        self.act = 0.0
        self.gemm_dtype = "fp8" if shape.precision == "fp8" else ("fp16" if shape.precision == "fp16" else "bf16")
        self.act_bytes = BYTES["bf16"]

    # -- GEMM: forward y = x W; backward dX = dY W^T (B), dW = x^T dY (W)
    def gemm(self, name: str, block: str, m: float, n: float, k: float, dtype: str | None = None,
             recompute: bool = False, save_input: bool = True, gathered: bool = False) -> None:
        """``gathered``: the input is the sequence-parallel all-gather of a TP-sharded tensor; Megatron
        saves the shard and all-gathers it again in backward, so only m/tp rows stay in memory."""
        dt = dtype or self.gemm_dtype
        b = BYTES[dt]
        flops = 2.0 * m * n * k
        io = b * (m * k + k * n) + BYTES["bf16"] * m * n

        def op(suffix: str, phase: str, pass_: str, nbytes: float, mnk: tuple, rec: bool = False) -> Op:
            # Under TE's userbuffers TP overlap (simulator.tp_overlap) a pass may run in chunks of
            # m/splits rows, each re-reading the whole weight, and beside SMs held by communication.
            splits, margin = gemm_execution(name, pass_, self.s.tp) if self.s.tp_overlap else (1, 0)
            return Op(name + suffix, "gemm", phase, block, flops, nbytes + (splits - 1) * b * k * n, dt, *mnk,
                      recompute=rec, splits=splits, sm_margin=margin, scaling=self.scaling(dt))

        self.F.append(op("", "F", "fprop", io, (m, n, k)))
        self.B.append(op(".dgrad", "B", "dgrad", io, (m, k, n)))
        # Wgrad reads the input and the output gradient and writes the k x n weight gradient into an
        # FP32 buffer (Megatron-LM's main_grad, which gradient_accumulation_fusion accumulates into
        # in the GEMM epilogue; V3 keeps "gradients (used for batch size accumulation)" in FP32, sec 3.3.1).
        # Counted as one FP32 write whatever plan.grad_dtype (the dtype gradients are reduced in).
        self.W.append(op(".wgrad", "W", "wgrad", b * (m * k + m * n) + 4 * k * n, (k, n, m)))
        if recompute:
            self.B.append(op(".recompute", "B", "fprop", io, (m, n, k), rec=True))
        if dt == "fp8":
            self.quantize(name, block, m * k, m * n)
        if save_input:
            if gathered and self.s.sp:  # Shape.sp implies tp > 1
                m = m / self.s.tp
            self.act += m * k * self.cached_bytes(dt)

    def grouped(self, name: str, block: str, groups: int, m_per_group: float, n: float, k: float,
                save_input: bool = True) -> None:
        dt = self.gemm_dtype
        b = BYTES[dt]
        mt = groups * m_per_group
        flops = 2.0 * mt * n * k
        io = b * (mt * k + groups * k * n) + BYTES["bf16"] * mt * n
        sc = self.scaling(dt)
        self.F.append(Op(name, "grouped_gemm", "F", block, flops, io, dt, m_per_group, n, k, groups, scaling=sc))
        self.B.append(Op(name + ".dgrad", "grouped_gemm", "B", block, flops, io, dt, m_per_group, k, n, groups,
                         scaling=sc))
        if self.s.recompute == "full":
            self.B.append(Op(name + ".recompute", "grouped_gemm", "B", block, flops, io, dt, m_per_group, n, k, groups,
                             recompute=True, scaling=sc))
        self.W.append(Op(name + ".wgrad", "grouped_gemm", "W", block, flops, io, dt, k, n, m_per_group, groups,
                         scaling=sc))
        if dt == "fp8":
            self.quantize(name, block, mt * k, mt * n)
        if save_input:
            self.act += mt * k * self.cached_bytes(dt)

    def scaling(self, dt: str) -> str:
        """How an FP8 GEMM's operands are scaled under the plan's recipe ("" for other dtypes): the per-tensor
        recipes differ in how they choose the scale, not in the GEMM kernel."""
        if dt != "fp8":
            return ""
        return "blockwise" if self.s.fp8_recipe == "blockwise" else "tensorwise"

    def quantize(self, name: str, block: str, x: float, dy: float) -> None:
        """The casts that feed one FP8 GEMM of ``x`` input and ``dy`` output-gradient elements (BF16 in).

        Hopper's FP8 tensor cores take only the TN layout, so Wgrad (x^T dy) needs transposed FP8 copies
        of both tensors besides the row-wise ones Fprop and Dgrad read. How they are made depends on
        ``plan.fp8_recipe``:

        - ``blockwise``, DeepSeek-V3's workflow: the input is quantized in 1x128 tiles for Fprop and the
          output gradient for Dgrad; for Wgrad both are "read out, dequantized, transposed, re-quantized
          into 128x1 tiles" (V3 sec 3.5.2, sec 3.3). Each pass writes FP8 and its scales; it reads BF16,
          but for the kept input, which is read back as kept (FP8 with its scales under the FP8 cache).
        - ``delayed`` (Transformer Engine's DelayedScaling): one kernel per tensor writes the row-wise and
          the transposed copy from a scale fixed in advance, and records the amax for later steps on the
          way (TE's Float8Quantizer: one ``nvte_quantize_v2`` with both usages): read 2, write 1 + 1.
        - ``tensorwise`` (TE's Float8CurrentScaling): the scale comes from the tensor itself, so a
          first kernel reads it for its amax (``nvte_compute_amax``) before the same cast
          (transformer_engine/pytorch/csrc/quantizer.cpp, Float8CurrentScalingQuantizer::quantize_impl).

        The per-tensor recipes make both copies in the pass that makes the tensor (forward, backward), so
        nothing is cast in W. Weights are cast once a step (TE caches them over the micro-batches): not
        counted here."""
        if self.s.fp8_recipe == "blockwise":
            q = 2 + 1 + FP8_SCALE_OVERHEAD
            self.F.append(Op(name + ".quant", "memory", "F", block, 0, x * q, "bf16"))
            self.B.append(Op(name + ".dgrad.quant", "memory", "B", block, 0, dy * q, "bf16"))
            # The stored input is read back as kept (FP8 and its scales, where activations are cached in FP8).
            self.W.append(Op(name + ".wgrad.quant_t", "memory", "W", block, 0,
                             x * (self.cached_bytes("fp8") + 1 + FP8_SCALE_OVERHEAD) + dy * q, "bf16"))
            return
        for phase, prefix, n in (("F", name, x), ("B", name + ".dgrad", dy)):
            ops = self.F if phase == "F" else self.B
            if self.s.fp8_recipe == "tensorwise":
                ops.append(Op(prefix + ".amax", "memory", phase, block, 0, 2 * n, "bf16"))
            ops.append(Op(prefix + ".fp8_quant_transpose", "memory", phase, block, 0, (2 + 1 + 1) * n, "bf16"))

    @property
    def tp_share(self) -> float:
        """What one TP collective of the micro-batch's hidden states moves per GPU: (tp-1)/tp of them in BF16
        (a ring all-gather or reduce-scatter; an all-reduce moves twice this)."""
        s = self.s
        return s.tokens * self.m.hidden * BYTES["bf16"] * (s.tp - 1) / s.tp

    def cached_bytes(self, dt: str) -> float:
        """Bytes per element of a GEMM input kept for backward: FP8 with its scales where the plan caches
        activations in FP8 (V3 sec 3.3.3) and the GEMM runs in FP8, else the activation dtype."""
        if dt != "fp8" or not self.s.fp8_cache:
            return self.act_bytes
        # Per-tensor recipes keep one scale for the whole tensor; blockwise one per 1x128 tile.
        return BYTES["fp8"] * (1 + (FP8_SCALE_OVERHEAD if self.s.fp8_recipe == "blockwise" else 0.0))

    def swiglu_input_bytes(self, elements: float) -> float:
        """What the activation function keeps for backward: its input. Under selective recomputation its
        output (the down projection's input) is rebuilt from it in backward instead of kept, and the input
        is cached in FP8 where the plan caches activations so (DeepSeek-V3 sec 3.3.3: "we cache the inputs
        of the SwiGLU operator and recompute its output in the backward pass. These activations are also
        stored in FP8"); without recomputation autograd keeps the BF16 input."""
        if self.s.recompute == "selective":
            return elements * self.cached_bytes(self.gemm_dtype)
        return elements * self.act_bytes

    def memory(self, name: str, block: str, nbytes: float, backward_factor: float = 2.0,
               recompute: bool = False, saves: float = 0.0) -> None:
        """An elementwise/reduction op: forward moves nbytes, backward ~2x (reads grad + input)."""
        self.F.append(Op(name, "memory", "F", block, 0, nbytes, "bf16"))
        if backward_factor:
            self.B.append(Op(name + ".bwd", "memory", "B", block, 0, nbytes * backward_factor, "bf16"))
        if recompute:
            self.B.append(Op(name + ".recompute", "memory", "B", block, 0, nbytes, "bf16", recompute=True))
        self.act += saves

    def comm(self, name: str, block: str, kind: str, nbytes_f: float, nbytes_b: float,
             checkpointed: bool = True) -> None:
        """A forward collective and its backward mirror (either may be 0: none). Under full recomputation
        the forward of a checkpointed block (collectives included: Megatron-LM checkpoints whole layers)
        runs again before backward; the embedding and the output head are not checkpointed."""
        chunks = collective_chunks(name) if (kind == "tp" and self.s.tp_overlap) else 1
        if nbytes_f:
            self.F.append(Op(name, "comm", "F", block, comm=kind, comm_bytes=nbytes_f, splits=chunks))
        if nbytes_b:
            self.B.append(Op(name + ".bwd", "comm", "B", block, comm=kind, comm_bytes=nbytes_b))
        if checkpointed and nbytes_f and self.s.recompute == "full":
            self.B.append(Op(name + ".recompute", "comm", "B", block, comm=kind, comm_bytes=nbytes_f, recompute=True,
                             splits=chunks))

    def regather(self, name: str, block: str, nbytes: float) -> None:
        """Sequence parallelism keeps only the TP shard of a gathered GEMM input, so backward
        all-gathers it again for the weight gradient (Megatron-LM, Korthikanti et al. 2022)."""
        if self.s.sp:
            self.B.append(Op(name, "comm", "B", block, comm="tp", comm_bytes=nbytes))

    def done(self, kind: str, params: float, params_expert: float = 0.0) -> LayerOps:
        return LayerOps(kind, tuple(self.F), tuple(self.B), tuple(self.W), params, params_expert, self.act)


def _attention(bld: _Builder, layer: int) -> float:
    """Norm + attention projections + core attention + residual. Returns params on this GPU."""
    m, s = bld.m, bld.s
    T = s.tokens  # tokens of this micro-batch on this GPU (whole sequence chunk under CP)
    tp = s.tp
    Ts = T / tp if s.sp else T  # tokens per GPU outside the TP region (sequence parallel)
    h = m.hidden
    heads = m.heads // tp
    act2 = BYTES["bf16"]
    sel = s.recompute == "selective"
    full = s.recompute == "full"
    bld.memory("attn.norm", "attn", 2 * Ts * h * act2, recompute=sel or full, saves=Ts * h * act2)
    if tp > 1:
        bld.comm("attn.tp_allgather", "attn", "tp", bld.tp_share, bld.tp_share)
        bld.regather("attn.tp_regather", "attn", bld.tp_share)
    if m.is_mla:
        qk = m.qk_head_dim
        # V3 recomputes the MLA up-projections in backward (sec 3.4.1): 'selective' here.
        if m.q_lora_rank:
            bld.gemm("attn.q_down", "attn", T, m.q_lora_rank, h, recompute=full, save_input=not (sel or full),
                     gathered=True)
            # Without recomputation the norm keeps its input for its backward beside the normed latent
            # q_up keeps (the RMSNorm backward needs x); recomputed, the one saved latent rebuilds both.
            bld.memory("attn.q_norm", "attn", 2 * T * m.q_lora_rank * act2, recompute=sel or full,
                       saves=0.0 if (sel or full) else T * m.q_lora_rank * act2)
            bld.gemm("attn.q_up", "attn", T, heads * qk, m.q_lora_rank, recompute=sel or full, save_input=True)
        else:
            bld.gemm("attn.q_proj", "attn", T, heads * qk, h, recompute=full, save_input=not (sel or full),
                     gathered=True)
        # Same normed input as the query projection above: saved once, there.
        bld.gemm("attn.kv_down", "attn", T, m.kv_lora_rank + m.qk_rope_head_dim, h, recompute=full,
                 save_input=False)
        bld.memory("attn.kv_norm", "attn", 2 * T * m.kv_lora_rank * act2, recompute=sel or full,
                   saves=0.0 if (sel or full) else T * m.kv_lora_rank * act2)
        bld.gemm("attn.kv_up", "attn", T, heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank,
                 recompute=sel or full, save_input=True)
        bld.memory("attn.rope", "attn", 2 * T * (heads + 1) * m.qk_rope_head_dim * act2, recompute=sel or full)
        q_bytes = T * heads * qk * act2
        kv_bytes = T * heads * (qk + m.v_head_dim) * act2
    else:
        d = m.dim_per_head
        kvh = max(1, m.n_kv_heads // tp)
        bld.gemm("attn.qkv", "attn", T, (heads + 2 * kvh) * d, h, recompute=full, save_input=not (sel or full),
                 gathered=True)
        bld.memory("attn.rope", "attn", 2 * T * (heads + kvh) * d * act2, recompute=full)
        q_bytes = T * heads * d * act2
        kv_bytes = T * kvh * 2 * d * act2
        if m.nsa is not None:
            # Same input as attn.qkv (saved there).
            bld.gemm("attn.nsa_kv", "attn", T, 2 * 2 * kvh * d, h, recompute=full, save_input=False)
            bld.gemm("attn.nsa_gate", "attn", T, 3 * heads, h, dtype="bf16", recompute=full, save_input=False)
    if s.attention_kernel == "unfused":
        _unfused_core(bld, heads, full, sel)
    else:
        _flash_core(bld, heads, layer, q_bytes, kv_bytes, full)
        vd = m.v_dim
        if m.is_mla and (sel or full):
            # Up-projections recomputed (V3 sec 3.4.1): q, k, v are rebuilt from the saved latents,
            # so only the attention output and the softmax statistics stay.
            bld.act += T * heads * vd * act2 + T * heads * 4
        else:
            bld.act += q_bytes + kv_bytes + T * heads * vd * act2 + T * heads * 4  # q, k, v, out, softmax stats
    if s.cp > 1:
        # Ring attention: each GPU passes its K/V chunk around the ring (cp-1 hops) in forward,
        # and K/V plus their gradients in backward.
        bld.comm("attn.cp_ring", "attn", "cp", kv_bytes * (s.cp - 1), 2 * kv_bytes * (s.cp - 1))
    # Its input is the core's output, already counted as saved by the flash core above.
    bld.gemm("attn.o_proj", "attn", T, h, heads * m.v_dim, recompute=full, save_input=s.attention_kernel == "unfused")
    if tp > 1:
        bld.comm("attn.tp_reducescatter", "attn", "tp", bld.tp_share, bld.tp_share)
    _residual(bld, "attn.residual", "attn", Ts)
    return attention_params(m) / tp + 2 * h


def _flash_core(bld: _Builder, heads: int, layer: int, q_bytes: float, kv_bytes: float, full: bool) -> None:
    """Fused (flash-style) core attention: causal, the s x s scores never leave the SMs.

    Under CP each GPU holds seq/cp queries and sees all keys through the ring exchange, so its share
    of the query-key pairs is 1/cp.
    """
    m, s = bld.m, bld.s
    T = s.tokens
    pairs = attention_pairs_per_token(m, s.seq, causal=True, layer=layer)
    qk, vd = m.qk_head_dim, m.v_dim
    fwd = 2.0 * T * heads * pairs * (qk + vd)
    io = q_bytes + kv_bytes + T * heads * vd * BYTES["bf16"]
    library = "" if s.attention_kernel == "flash" else s.attention_kernel
    common = dict(seq=s.seq, heads=heads, qk_dim=qk, v_dim=vd, library=library)
    bld.F.append(Op("attn.core", "attention", "F", "attn", fwd, io, "bf16", **common))
    # Backward FLOPs = 2.5x forward: the FlashAttention benchmarks' convention (five matmuls against
    # two; calibration/profiles/sources/published_measurements.json "flop_conventions"), in which the
    # profile's bwd TFLOP/s rows are stated. The 2.5x on the HBM bytes has no measurement behind it;
    # it enters only the timer's bound max(flops / rate, bytes / HBM bandwidth).
    bld.B.append(Op("attn.core.bwd", "attention", "B", "attn", 2.5 * fwd, 2.5 * io, "bf16", **common))
    if full:
        bld.B.append(Op("attn.core.recompute", "attention", "B", "attn", fwd, io, "bf16", recompute=True, **common))


def _unfused_core(bld: _Builder, heads: int, full: bool, sel: bool = False) -> None:
    """Core attention as Megatron-LM ran it before FlashAttention (arXiv 2205.14135, 2022).

    Two batched GEMMs around a materialized score matrix: S = Q K^T over the whole s x s square (the
    causal mask is applied afterwards, so no work is skipped), a fused scale-mask-softmax kernel that
    reads S and writes P, then O = P V. Backward: dP = dO V^T and dV = P^T dO, the softmax backward
    (reads P and dP, writes dS), dQ = dS K and dK = dS^T Q. The s x s tensors (16-bit, per head and
    sequence) make these ops memory-bound for small head dims; P is saved for backward.

    With attention dropout (Megatron-LM's default 0.1), P goes through a dropout kernel of its own
    before O = P' V: it reads P and writes P' and a 1-byte mask; backward reads dP' and the mask and
    writes dP. P, the mask and P' are then all saved: the 5 a s^2 b bytes per layer of Korthikanti et
    al. 2022 (arXiv 2205.05198, sec 4.1). Selective recomputation (the same paper, sec 5) drops exactly
    these s x s tensors and reruns the core in backward from the saved Q, K and V.
    """
    m, s = bld.m, bld.s
    b, seq = s.tokens // s.seq, s.seq
    d, dv = m.qk_head_dim, m.v_dim
    a2 = BYTES["bf16"]
    bh = b * heads
    S = bh * seq * seq * a2  # one score-shaped tensor
    q = bh * seq * d * a2
    v = bh * seq * dv * a2
    qk_flops = 2.0 * bh * seq * seq * d
    pv_flops = 2.0 * bh * seq * seq * dv
    dropout = m.attention_dropout > 0
    fwd = [
        Op("attn.scores", "gemm", "F", "attn", qk_flops, 2 * q + S, "bf16", seq, seq, d),
        Op("attn.softmax", "memory", "F", "attn", 0, 2 * S, "bf16"),
    ]
    if dropout:
        fwd.append(Op("attn.dropout", "memory", "F", "attn", 0, 2.5 * S, "bf16"))
    fwd.append(Op("attn.context", "gemm", "F", "attn", pv_flops, S + 2 * v, "bf16", seq, dv, seq))
    bld.F.extend(fwd)
    bld.B.extend([
        Op("attn.context.dgrad", "gemm", "B", "attn", pv_flops, 2 * v + S, "bf16", seq, seq, dv),
        Op("attn.context.vgrad", "gemm", "B", "attn", pv_flops, S + 2 * v, "bf16", seq, dv, seq),
    ])
    if dropout:
        bld.B.append(Op("attn.dropout.bwd", "memory", "B", "attn", 0, 2.5 * S, "bf16"))
    bld.B.extend([
        Op("attn.softmax.bwd", "memory", "B", "attn", 0, 3 * S, "bf16"),
        Op("attn.scores.dgrad", "gemm", "B", "attn", qk_flops, S + 2 * q, "bf16", seq, d, seq),
        Op("attn.scores.kgrad", "gemm", "B", "attn", qk_flops, S + 2 * q, "bf16", seq, d, seq),
    ])
    if full or sel:
        bld.B.extend(op._replace(name=op.name + ".recompute", phase="B", recompute=True) for op in fwd)
    if sel:
        bld.act += 2 * q + v  # Q, K, V kept; the s x s tensors are rebuilt in backward
    elif not full:
        bld.act += (2.5 * S if dropout else S) + 2 * q + v  # P (and mask, P'), Q, K, V kept for backward


def _residual(bld: _Builder, name: str, block: str, tokens: float) -> None:
    """Residual add (reads two activations, writes one). With hidden dropout, Megatron-LM's fused
    bias-dropout-add also writes a 1-byte mask that backward reads and that stays saved until then."""
    h = bld.m.hidden
    mask = tokens * h if bld.m.hidden_dropout > 0 else 0.0
    bld.memory(name, block, 3 * tokens * h * BYTES["bf16"] + mask, backward_factor=1.0, saves=mask)


def _dense_ffn(bld: _Builder, width: int, prefix: str = "mlp") -> float:
    m, s = bld.m, bld.s
    T, tp = s.tokens, s.tp
    Ts = T / tp if s.sp else T
    h = m.hidden
    act2 = BYTES["bf16"]
    sel = s.recompute == "selective"
    full = s.recompute == "full"
    w = width / tp
    bld.memory(f"{prefix}.norm", "mlp", 2 * Ts * h * act2, recompute=sel or full, saves=Ts * h * act2)
    if tp > 1:
        bld.comm(f"{prefix}.tp_allgather", "mlp", "tp", bld.tp_share, bld.tp_share)
        bld.regather(f"{prefix}.tp_regather", "mlp", bld.tp_share)
    gated = m.mlp == "swiglu"
    bld.gemm(f"{prefix}.up", "mlp", T, (2 if gated else 1) * w, h, recompute=full, save_input=not (sel or full),
             gathered=True)
    inner = T * w * act2
    bld.memory(f"{prefix}.act", "mlp", (3 if gated else 2) * inner, recompute=sel or full,
               saves=bld.swiglu_input_bytes((2 if gated else 1) * T * w))
    bld.gemm(f"{prefix}.down", "mlp", T, h, w, recompute=full, save_input=not sel)  # sel: rebuilt from the above
    if tp > 1:
        bld.comm(f"{prefix}.tp_reducescatter", "mlp", "tp", bld.tp_share, bld.tp_share)
    _residual(bld, f"{prefix}.residual", "mlp", Ts)
    return ffn_params(m, width) / tp + h


def expected_distinct(total_bins: int, balls: int, bins_per_target: int) -> float:
    """Expected number of distinct targets hit when ``balls`` distinct experts out of
    ``total_bins`` are chosen uniformly and each target holds ``bins_per_target`` experts."""
    targets = total_bins // bins_per_target
    if balls >= total_bins:
        return float(targets)
    miss = math.comb(total_bins - bins_per_target, balls) / math.comb(total_bins, balls)
    return targets * (1.0 - miss)


# How each plan.dispatcher moves tokens: DeepEP kernels, or one NCCL all-to-all (Megatron-Core).
DISPATCH_TRANSPORT = {"deepep": "deepep", "alltoall": "nccl"}


def dispatch_traffic(m: ModelConfig, ep: int, gpus_per_node: int, dispatcher: str = "deepep") -> tuple[float, float]:
    """Per token: (copies sent over IB, copies sent over NVLink) by one GPU's dispatch.

    DeepEP-style node-limited routing (V3 sec 2.1.2, 3.2.2): a token goes once over
    IB to each distinct *remote node* holding one of its experts (at most M nodes),
    then is forwarded over NVLink to each GPU in that node that holds one of them.
    With EP inside one node, tokens go straight over NVLink once per distinct GPU.

    Megatron-Core's all-to-all dispatcher (``dispatcher="alltoall"``) deduplicates
    nothing: the permuted tensor has one row per (token, expert) pair and each row
    whose expert lives on another rank is sent to it, over NVLink when that rank is in
    the node, over IB otherwise (EP ranks taken contiguous, ``gpus_per_node`` per node).
    Experts are assumed routed uniformly (balanced); skew is applied separately.
    """
    E, k = m.n_routed_experts, m.experts_per_token
    if ep <= 1:
        return 0.0, 0.0
    if dispatcher == "alltoall":
        in_node = min(ep, gpus_per_node)
        return k * (ep - in_node) / ep, k * (in_node - 1) / ep
    per_gpu = E // ep
    if ep <= gpus_per_node:
        gpus_hit = expected_distinct(E, k, per_gpu)
        return 0.0, gpus_hit * (ep - 1) / ep
    nodes = ep // gpus_per_node
    per_node = E // nodes
    nodes_hit = expected_distinct(E, k, per_node)
    if m.max_nodes_per_token:
        nodes_hit = min(nodes_hit, float(m.max_nodes_per_token))
    remote_nodes = nodes_hit * (nodes - 1) / nodes
    # Inside each reached node the token fans out to the GPUs holding its experts there.
    experts_per_node_hit = k / nodes_hit
    gpus_per_node_hit = expected_distinct(per_node, max(1, round(experts_per_node_hit)), per_gpu)
    nvlink = nodes_hit * max(gpus_per_node_hit - 1.0 / gpus_per_node, 0.0)
    return remote_nodes, nvlink


def _moe_ffn(bld: _Builder, gpus_per_node: int) -> tuple[float, float]:
    m, s = bld.m, bld.s
    T, tp = s.tokens, s.tp
    Tl = T / tp if tp > 1 else T  # tokens entering the MoE block on this GPU (SP-sharded under TP)
    h = m.hidden
    act2 = BYTES["bf16"]
    sel = s.recompute == "selective"
    full = s.recompute == "full"
    ep = s.ep
    E, k = m.n_routed_experts, m.experts_per_token
    local_experts = E // ep
    # The pre-MLP norm feeds the router and the dispatch: it belongs to the attention side of the layer, as
    # in Megatron-LM's ``attn`` schedule node (attention -> layernorm -> router -> dispatch preprocess).
    bld.memory("moe.norm", "attn", 2 * Tl * h * act2, recompute=sel or full, saves=Tl * h * act2)
    bld.gemm("moe.gate", "attn", Tl, E, h, dtype="bf16", save_input=not (sel or full))
    # Routing over the FP32 affinities (Tl x E): the sigmoid reads the gate's logits and writes the
    # scores, top-k (with the balancing bias) reads them again: three passes of 4 bytes per entry.
    bld.memory("moe.route", "attn", Tl * E * 4 * 3, backward_factor=1.0)
    # Tokens received per GPU: every GPU sends Tl*k assignments spread over ep ranks,
    # so each receives Tl*k on average; the most loaded rank gets imbalance x that.
    recv = Tl * k * s.imbalance
    transport = DISPATCH_TRANSPORT[s.dispatcher]
    nccl = transport == "nccl"
    # Megatron's all-to-all dispatcher moves BF16 hidden states (FP8 recipes quantize inside the experts).
    dt_disp = "fp8" if s.precision == "fp8" and not nccl else "bf16"
    ib_copies, nvl_copies = dispatch_traffic(m, ep, gpus_per_node, s.dispatcher)
    tok_disp = h * (BYTES[dt_disp] + (FP8_SCALE_OVERHEAD if dt_disp == "fp8" else 0))
    tok_comb = h * BYTES["bf16"]
    if ep > 1:
        # Forward: dispatch FP8 (or BF16), combine BF16. Backward mirrors: the gradient before the
        # down-projection travels dispatch-wise in FP8, the combine-wise one in BF16 (V3 sec 3.3.3).
        bld.F.append(Op("moe.dispatch", "comm", "F", "dispatch", comm="dispatch",
                        comm_bytes=Tl * s.imbalance * tok_disp, m=ib_copies, n=nvl_copies, transport=transport))
        bld.B.append(Op("moe.combine.bwd", "comm", "B", "dispatch", comm="dispatch",
                        comm_bytes=Tl * s.imbalance * tok_disp, m=ib_copies, n=nvl_copies, transport=transport))
        if full:  # the checkpointed forward dispatches again
            bld.B.append(bld.F[-1]._replace(name="moe.dispatch.recompute", phase="B", recompute=True))
    bld.memory("moe.permute", "dispatch", 2 * recv * h * (BYTES[dt_disp] if dt_disp == "fp8" else act2))
    if nccl and ep > 1 and local_experts > 1:
        # What arrives is ordered by source rank; sort_chunks_by_idxs regroups it by local expert.
        bld.memory("moe.sort_chunks", "dispatch", 2 * recv * h * act2, backward_factor=1.0)
    inter = m.moe_intermediate
    gated = m.mlp == "swiglu"
    bld.grouped("moe.experts.up", "mlp", local_experts, recv / local_experts, (2 if gated else 1) * inter, h)
    inner = recv * inter * act2
    bld.memory("moe.experts.act", "mlp", (3 if gated else 2) * inner, recompute=sel or full,
               saves=bld.swiglu_input_bytes((2 if gated else 1) * recv * inter))
    bld.grouped("moe.experts.down", "mlp", local_experts, recv / local_experts, h, inter, save_input=not sel)
    if nccl and ep > 1 and local_experts > 1:
        bld.memory("moe.unsort_chunks", "combine", 2 * recv * h * act2, backward_factor=1.0)
    bld.memory("moe.unpermute", "combine", 2 * recv * h * act2 + Tl * k * h * act2)
    if m.n_shared_experts:
        Is = m.n_shared_experts * inter
        bld.gemm("moe.shared.up", "mlp", Tl, (2 if gated else 1) * Is, h, recompute=full,
                 save_input=False)  # same input as the gate: saved once
        bld.memory("moe.shared.act", "mlp", (3 if gated else 2) * Tl * Is * act2, recompute=sel or full,
                   saves=bld.swiglu_input_bytes((2 if gated else 1) * Tl * Is))
        bld.gemm("moe.shared.down", "mlp", Tl, h, Is, recompute=full, save_input=not sel)
    if ep > 1:
        bld.F.append(Op("moe.combine", "comm", "F", "combine", comm="combine",
                        comm_bytes=Tl * s.imbalance * tok_comb, m=ib_copies, n=nvl_copies, transport=transport))
        bld.B.append(Op("moe.dispatch.bwd", "comm", "B", "combine", comm="combine",
                        comm_bytes=Tl * s.imbalance * tok_comb, m=ib_copies, n=nvl_copies, transport=transport))
        if full:
            bld.B.append(bld.F[-1]._replace(name="moe.combine.recompute", phase="B", recompute=True))
    _residual(bld, "moe.residual", "combine", Tl)
    shared = m.n_shared_experts * expert_params(m) / tp
    # des.routing gives each GPU ceil(R / ep) replica slots: weights, gradients and optimizer state alike.
    routed = (local_experts + -(-s.redundant // ep)) * expert_params(m)
    return shared + E * h + h + routed, routed


def _loss_traffic(logits: float, kernel: str) -> tuple[float, float, float]:
    """(forward bytes, backward / forward, bytes saved for backward) of the cross-entropy over
    ``logits`` BF16 logits, counted kernel by kernel (reads plus writes).

    fused (Transformer Engine ``parallel_cross_entropy``): ``online_softmax_kernel`` reads the logits,
    ``cross_entropy_kernel`` reads them again and writes the gradient in their place; backward's
    ``element_mul_kernel`` scales that gradient by the loss gradient (read and write).
    unfused (Megatron-Core ``VocabParallelCrossEntropy``): ``.float()`` (read BF16, write FP32), max
    (read), in-place subtract (read, write), ``exp`` (read, write), sum (read), ``div_`` (read,
    write), the FP32 softmax saved; backward ``mul_`` (read, write) and autograd's cast of the FP32
    gradient back to the BF16 input (read FP32, write BF16)."""
    b16, b32 = logits * 2, logits * 4
    if kernel == "unfused":
        fwd = (b16 + b32) + b32 + 2 * b32 + 2 * b32 + b32 + 2 * b32
        return fwd, (2 * b32 + b32 + b16) / fwd, b32
    fwd = b16 + 2 * b16
    return fwd, 2 * b16 / fwd, b16


# The Shape fields only routed experts read (_moe_ffn), at their defaults.
_NO_ROUTING = {"ep": 1, "imbalance": 1.0, "dispatcher": "deepep", "redundant": 0}


@lru_cache(maxsize=4096)
def routing_free(shape: Shape) -> Shape:
    """``shape`` with what only routed experts read (EP size, routing skew, dispatcher, redundant experts) at its
    defaults: a unit without routed experts (embedding, dense layer, heads) has the same ops under every one of
    them (tests/test_workload.py checks every preset model), so its ops and timings are kept once for all."""
    return replace(shape, **_NO_ROUTING)


def layer_ops(m: ModelConfig, kind: str, shape: Shape, gpus_per_node: int = 8, layer: int = 0) -> LayerOps:
    """Ops of one layer unit for one micro-batch on one GPU (built once per unit kind and shape; a unit without
    routed experts once for every EP size and routing, :func:`routing_free`)."""
    if kind not in ROUTED_UNITS:
        shape = routing_free(shape)
    return _layer_ops(m, kind, shape, gpus_per_node, layer)


@lru_cache(maxsize=4096)
def _layer_ops(m: ModelConfig, kind: str, shape: Shape, gpus_per_node: int = 8, layer: int = 0) -> LayerOps:
    """:func:`layer_ops`, built."""
    bld = _Builder(shape, m)
    T, tp = shape.tokens, shape.tp
    h = m.hidden
    act2 = BYTES["bf16"]
    tp_share = bld.tp_share
    if kind == "embed":
        bld.memory("embed.lookup", "attn", T * h * act2 * 2 / (tp if shape.sp else 1), backward_factor=2.0)
        if tp > 1:
            # The vocabulary-parallel lookup leaves each TP rank its own rows' embeddings: Megatron-LM's
            # VocabParallelEmbedding all-reduces them (reduce-scatters under sequence parallelism, whose
            # backward all-gathers the gradient).
            bld.comm("embed.tp_reduce", "attn", "tp", tp_share if shape.sp else 2 * tp_share,
                     tp_share if shape.sp else 0.0, checkpointed=False)
        return bld.done(kind, m.vocab * h / tp)
    if kind in ("head", "mtp_head"):
        V = m.vocab / tp
        Ts = T / tp if shape.sp else T
        bld.memory("head.norm", "mlp", 2 * Ts * h * act2, saves=Ts * h * act2)
        if tp > 1:
            # The output layer is column-parallel (vocabulary split over TP): under sequence parallelism its
            # input is all-gathered (and the input gradient reduce-scattered); without, the input gradient
            # is all-reduced (Megatron-LM's ColumnParallelLinear).
            bld.comm("head.tp_gather", "mlp", "tp", tp_share if shape.sp else 0.0,
                     tp_share if shape.sp else 2 * tp_share, checkpointed=False)
            bld.regather("head.tp_regather", "mlp", tp_share)
        # The output head stays in BF16 (V3 sec 3.3.1); the loss kernel decides what else is moved.
        bld.gemm("head.proj", "mlp", T, V, h, dtype="bf16", gathered=True)
        fwd, bwd_ratio, saved = _loss_traffic(T * V, shape.loss_kernel)
        bld.memory("head.loss", "mlp", fwd, backward_factor=bwd_ratio, saves=saved)
        # The MTP module shares the main head (V3 sec 2.2): its head holds no parameters of its own.
        return bld.done(kind, 0.0 if (m.tied_embeddings or kind == "mtp_head") else V * h)
    if kind == "mtp":
        bld.memory("mtp.norms", "attn", 4 * T * h * act2, saves=2 * T * h * act2)
        bld.gemm("mtp.proj", "attn", T, h, 2 * h)
        p = 2 * h * h / tp + 3 * h
        p += _attention(bld, layer)
        if m.is_moe:
            pm, pe = _moe_ffn(bld, gpus_per_node)
            return bld.done(kind, p + pm, pe)
        p += _dense_ffn(bld, m.dense_intermediate)
        return bld.done(kind, p)
    p = _attention(bld, layer)
    if kind == "dense":
        p += _dense_ffn(bld, m.dense_intermediate)
        return bld.done(kind, p)
    if kind == "moe":
        pm, pe = _moe_ffn(bld, gpus_per_node)
        return bld.done(kind, p + pm, pe)
    raise ValueError(f"unknown layer kind {kind!r}")


# Layer units whose tokens go through the routed experts (an MoE model's MTP module has an MoE layer too).
ROUTED_UNITS = frozenset(("moe", "mtp"))
# Layer units that are a transformer block (attention, then an FFN or MoE); embedding and heads are not.
LAYER_UNITS = frozenset(("dense", "moe", "mtp"))
# The main model's layers, numbered 0 .. layers-1 in model order (the MTP modules come after the head).
MAIN_LAYERS = frozenset(("dense", "moe"))


def model_units(m: ModelConfig) -> list[str]:
    """The model as an ordered list of layer units, as a pipeline sees them."""
    return list(_model_units(m))


@lru_cache(maxsize=64)  # hot path: every plan of a search splits the same model (Llama 3: 130 units)
def _model_units(m: ModelConfig) -> tuple[str, ...]:
    units = ["embed"]
    units += ["dense" if (not m.is_moe or i < m.first_k_dense) else "moe" for i in range(m.layers)]
    units += ["head"]
    for _ in range(m.mtp_depth):
        units += ["mtp", "mtp_head"]
    return tuple(units)


def hidden_state_bytes(m: ModelConfig, shape: Shape) -> float:
    """One hidden state of a micro-batch on a GPU, in BF16 (split over TP under sequence parallelism): what
    a pipeline stage sends the next one, and what a checkpointed block keeps of its input."""
    return shape.tokens / (shape.tp if shape.sp else 1) * m.hidden * BYTES["bf16"]


def kept_for_backward(m: ModelConfig, kind: str, shape: Shape, lo: LayerOps) -> float:
    """Bytes a layer unit keeps for backward per micro-batch, under the plan's recomputation.

    Full recomputation checkpoints the transformer layers (Megatron-LM's --recompute-granularity full):
    a block keeps only its input (the MTP block its two, the hidden state and the shifted tokens'
    embedding) and runs its forward again before its backward. The output head and its loss are not
    checkpointed and keep what they keep without it (the fused loss its logits' gradient); the
    embedding keeps nothing a backward needs (token ids). Otherwise the unit's own accounting holds."""
    if shape.recompute != "full" or kind in ("head", "mtp_head"):
        return lo.activation_bytes
    if kind == "embed":
        return 0.0
    return (2 if kind == "mtp" else 1) * hidden_state_bytes(m, shape)


def recompute_transient(m: ModelConfig, kind: str, shape: Shape, gpus_per_node: int = 8) -> float:
    """What full recomputation materialises at once: one block's forward run again before its backward
    keeps every activation that block keeps without recomputation (0 for the units that are not
    checkpointed, and without full recomputation)."""
    if shape.recompute != "full" or kind in ("embed", "head", "mtp_head"):
        return 0.0
    return layer_ops(m, kind, replace(shape, recompute="none"), gpus_per_node).activation_bytes


def shared_weight_copies(m: ModelConfig, held_units, tp: int) -> float:
    """Parameters a pipeline rank holds a second copy of, because a unit it runs uses the weights of a unit
    it does not hold. The MTP module embeds its shifted tokens with the main embedding and predicts with
    the main output head (V3 sec 2.2), and a tied head is the embedding. DualPipe puts the shallowest and
    deepest layers on one rank so that they "physically share" them (V3 sec 2.2); on any other layout the
    rank keeps a copy (Megatron-LM builds word embeddings on the last stage for a tied head or an MTP
    block, and all-reduces their gradients with the first stage's)."""
    units = set(held_units)
    table = m.vocab * m.hidden / tp  # an embedding table, or an untied output head, sharded over TP
    needs_embedding = "mtp" in units or (m.tied_embeddings and bool(units & {"head", "mtp_head"}))
    needs_head = not m.tied_embeddings and "mtp_head" in units and "head" not in units
    return table * (needs_embedding and "embed" not in units) + table * needs_head


@dataclass(frozen=True)
class PassTotals:
    """Sums over the ops of a unit by pass, for the analytic engine."""

    flops: dict = field(default_factory=dict)
