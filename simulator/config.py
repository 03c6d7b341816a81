"""Typed, frozen configuration: model, cluster, plan, training, cost.

A *scenario* answers five separate questions, kept as five inputs (as in
Calculon): what is trained (:class:`ModelConfig`), on what hardware
(:class:`ClusterConfig`), how it is split across GPUs (:class:`PlanConfig`),
on how much data (:class:`TrainingConfig`) and at what price
(:class:`CostConfig`). Objects are frozen and validated when built from plain
data (:func:`build`), so everything downstream can trust them and cache on them.
Each invalid value raises :class:`~simulator.errors.ConfigError` naming the
field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .bubble import SCHEDULES
from .errors import ConfigError
from .layout import num_stages


def hash_once(cls):
    """Keep a frozen config's hash after its first use (the dataclass's own, of every field, computed once): the
    analytic engine keys its caches on the model and the cluster, and a plan search hashed DeepSeek-V3's model
    ~100,000 times and its cluster ~65,000 (0.9 and 0.7 us each: 5 % of a search worker's time). The kept
    value is dropped when the object is pickled (a string's hash differs from process to process), so a
    config sent to another process hashes afresh there."""
    by_fields = cls.__hash__

    def __hash__(self) -> int:
        try:
            return self.__dict__["_hash"]
        except KeyError:
            h = by_fields(self)
            object.__setattr__(self, "_hash", h)
            return h

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


ATTENTIONS = ("mla", "mha", "gqa", "mqa")
MLPS = ("swiglu", "gelu", "relu2", "relu")
PRECISIONS = ("bf16", "fp16", "fp8")
FP8_RECIPES = ("blockwise", "tensorwise", "delayed")
RECOMPUTE = ("none", "selective", "full")
ATTENTION_KERNELS = ("flash", "cudnn", "fa2", "unfused")
LOSS_KERNELS = ("fused", "unfused")
DUALPIPE_SENDS = ("in_pair", "after_pair")  # PlanConfig.dualpipe_sends
CP_COMMS = ("ring", "allgather")
ROUTING = ("balanced", "zipf", "histogram")
DISPATCHERS = ("deepep", "alltoall")
EP_OVERLAPS = ("auto", "on", "off")


@dataclass(frozen=True)
class NSAConfig:
    """Native Sparse Attention (arXiv 2502.11089): three branches per query.

    Compression attends to block summaries (block ``compress_block``, stride
    ``compress_stride``); selection attends to ``selected_blocks`` blocks of
    ``select_block`` tokens; a sliding window covers the last ``window`` tokens.
    Defaults: the paper's sec 4.1 settings (../shared/anchors/models.json NSA-27B-backbone.nsa:
    l=32, d=16, l'=64, n=16, w=512).
    """

    compress_block: int = 32
    compress_stride: int = 16
    select_block: int = 64
    selected_blocks: int = 16
    window: int = 512

    def validate(self) -> None:
        _positive(self, "model.nsa", ("compress_block", "compress_stride", "select_block", "selected_blocks", "window"))
        _within(self, "model.nsa", {f: SEQ_LEN for f in ("compress_block", "compress_stride", "select_block", "window")})
        _within(self, "model.nsa", {"selected_blocks": (1, SEQ_LEN[1], "blocks")})
        if self.compress_stride > self.compress_block:
            raise ConfigError("model.nsa.compress_stride", f"{self.compress_stride} exceeds compress_block="
                              f"{self.compress_block} (blocks would leave gaps)", f"1..{self.compress_block}")


@hash_once
@dataclass(frozen=True)
class ModelConfig:
    """A transformer's architecture: dense, MoE (DeepSeekMoE), MLA or GQA/MHA."""

    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    attention: str = "mha"
    kv_heads: int = 0  # 0 = heads (MHA)
    head_dim: int = 0  # 0 = hidden / heads
    # Multi-head latent attention (DeepSeek-V2/V3); q_lora_rank 0 = plain q projection.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    nsa: NSAConfig | None = None
    sliding_window: int = 0  # 0 = full attention
    sliding_window_every: int = 1  # 1: every layer windowed; 2: every other layer
    mlp: str = "swiglu"
    dense_intermediate: int = 0
    # DeepSeekMoE: fine-grained routed experts plus always-on shared experts.
    n_routed_experts: int = 0
    n_shared_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    first_k_dense: int = 0
    # Group-limited routing as config.json gives it (n_group, topk_group): validated and kept, but not what
    # the cost model routes by. Its groups are V3's nodes (8 groups = the 8 nodes of EP64), and the limit
    # that shapes the all-to-all is the one on nodes, ``max_nodes_per_token`` (V3 sec 2.1.2: "at most M nodes").
    n_expert_groups: int = 1
    topk_groups: int = 1
    max_nodes_per_token: int = 0  # node-limited routing M; 0 = unlimited
    mtp_depth: int = 0  # multi-token-prediction modules (V3: 1)
    tied_embeddings: bool = False
    # Dropout probabilities during training (DeepSeek, Llama 3: 0; Megatron-LM's defaults: 0.1 each).
    # Their cost: a mask written forward and read backward; on the materialized s x s scores of
    # unfused attention that is a kernel of its own (see workload._unfused_core).
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.attention == "mla"

    @property
    def n_kv_heads(self) -> int:
        if self.attention == "mqa":
            return 1
        return self.kv_heads or self.heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.dim_per_head

    @property
    def v_dim(self) -> int:
        return self.v_head_dim if self.is_mla else self.dim_per_head

    @property
    def n_moe_layers(self) -> int:
        return self.layers - self.first_k_dense if self.is_moe else 0

    @property
    def n_dense_layers(self) -> int:
        return self.layers - self.n_moe_layers

    def validate(self) -> None:
        _positive(self, "model", ("layers", "hidden", "heads", "vocab"))
        _nonnegative(self, "model", ("kv_heads", "head_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                     "qk_rope_head_dim", "v_head_dim", "dense_intermediate", "n_routed_experts",
                                     "n_shared_experts", "experts_per_token", "moe_intermediate", "first_k_dense",
                                     "max_nodes_per_token", "mtp_depth", "sliding_window"))
        _within(self, "model", {"layers": LAYERS, "hidden": WIDTH, "heads": HEADS, "vocab": VOCAB})
        _within(self, "model", {"mtp_depth": MTP_MODULES, "sliding_window_every": LAYERS,
                                "n_expert_groups": (1, EXPERTS[1], "groups")})
        _within(self, "model", {f: WIDTH for f in ("head_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                                   "qk_rope_head_dim", "v_head_dim", "dense_intermediate",
                                                   "moe_intermediate")}, zero_means="not used")
        _within(self, "model", {"kv_heads": HEADS}, zero_means="as many as heads")
        _within(self, "model", {"n_routed_experts": EXPERTS, "n_shared_experts": EXPERTS, "experts_per_token": EXPERTS},
                zero_means="none")
        _within(self, "model", {"max_nodes_per_token": (1, GPUS[1], "nodes")}, zero_means="unlimited")
        _within(self, "model", {"sliding_window": SEQ_LEN}, zero_means="full attention")
        if self.nsa is not None:
            self.nsa.validate()
        if not 1 <= self.topk_groups <= max(1, self.n_expert_groups):
            raise ConfigError("model.topk_groups", f"{self.topk_groups} out of range",
                              f"1..n_expert_groups={self.n_expert_groups}")
        _choice("model.attention", self.attention, ATTENTIONS)
        _choice("model.mlp", self.mlp, MLPS)
        if self.is_mla:
            for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                if getattr(self, f) <= 0:
                    raise ConfigError(f"model.{f}", f"must be > 0 for attention 'mla', got {getattr(self, f)}")
        elif self.hidden % self.heads and not self.head_dim:
            raise ConfigError("model.head_dim", f"hidden {self.hidden} is not divisible by heads {self.heads}", "set head_dim")
        if self.attention == "gqa" and self.kv_heads and self.heads % self.kv_heads:
            raise ConfigError("model.kv_heads", f"{self.kv_heads} does not divide heads={self.heads}", "a divisor of heads")
        if self.is_moe:
            for f in ("experts_per_token", "moe_intermediate"):
                if getattr(self, f) <= 0:
                    raise ConfigError(f"model.{f}", f"must be > 0 for an MoE model, got {getattr(self, f)}")
            if self.experts_per_token > self.n_routed_experts:
                raise ConfigError(
                    "model.experts_per_token",
                    f"{self.experts_per_token} exceeds n_routed_experts={self.n_routed_experts}",
                    f"1..{self.n_routed_experts}",
                )
            if not 0 <= self.first_k_dense <= self.layers:
                raise ConfigError("model.first_k_dense", f"{self.first_k_dense} out of range", f"0..{self.layers}")
            if self.first_k_dense and self.dense_intermediate <= 0:
                raise ConfigError("model.dense_intermediate", "must be > 0 when first_k_dense > 0")
        elif self.dense_intermediate <= 0:
            raise ConfigError("model.dense_intermediate", "must be > 0 for a dense model")
        if self.n_expert_groups < 1 or (self.is_moe and self.n_routed_experts % self.n_expert_groups):
            raise ConfigError("model.n_expert_groups", f"{self.n_expert_groups} must divide n_routed_experts", "a divisor of n_routed_experts")
        if self.sliding_window < 0 or self.sliding_window_every < 1:
            raise ConfigError("model.sliding_window", "must be >= 0 (and sliding_window_every >= 1)")
        if self.mtp_depth < 0:
            raise ConfigError("model.mtp_depth", f"{self.mtp_depth} is negative", "0 or more")
        for f in ("attention_dropout", "hidden_dropout"):
            v = getattr(self, f)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"model.{f}", f"{v} is not a probability", "0 <= p < 1")


@hash_once
@dataclass(frozen=True)
class GPUConfig:
    """One accelerator's datasheet: peaks, memory, SMs."""

    name: str
    sms: int
    hbm_gib: float
    hbm_gbps: float
    bf16_tflops: float
    fp8_tflops: float = 0.0  # 0 = no FP8 tensor cores
    fp16_tflops: float = 0.0  # 0 = same as bf16
    # SM clocks. Compute-bound kernels run in proportion to the SM clock, and a board at its power
    # limit lowers it: a training step keeps the tensor cores busy for seconds, a benchmark that idles
    # between kernels does not. ``peak_clock_mhz``: the clock behind the datasheet peaks;
    # ``sustained_clock_mhz``: the clock the board holds under sustained load (H800: ~1600 MHz under a
    # continuously running compute-bound kernel, DeepSeek; a training step is taken to hold the same).
    # Both 0 (not known): profile rates are taken as measured. Given, they correct the compute-bound rows
    # of the profile tables measured in short bursts (``burst_tables``) by sustained / peak
    # (Profile.at_sustained_clock).
    peak_clock_mhz: float = 0.0
    sustained_clock_mhz: float = 0.0
    source: str = ""

    def peak_tflops(self, dtype: str) -> float:
        if dtype == "fp8":
            return self.fp8_tflops or self.bf16_tflops
        if dtype == "fp16":
            return self.fp16_tflops or self.bf16_tflops
        if dtype == "fp32":
            # TF32 tensor cores run at half the BF16 rate on A100/H100 (anchors/kernels_and_links.json
            # gpu_specs.H100_SXM5: tf32_dense_TFLOPS 494.7, bf16_dense_TFLOPS 989.4)
            return self.bf16_tflops / 2
        return self.bf16_tflops

    def validate(self) -> None:
        _positive(self, "cluster.gpu", ("sms", "hbm_gib", "hbm_gbps", "bf16_tflops"))
        _nonnegative(self, "cluster.gpu", ("fp8_tflops", "fp16_tflops"))
        _within(self, "cluster.gpu", {"sms": SMS, "hbm_gib": HBM_GIB, "hbm_gbps": BANDWIDTH_GBPS, "bf16_tflops": TFLOPS})
        _within(self, "cluster.gpu", {"fp8_tflops": TFLOPS, "fp16_tflops": TFLOPS}, zero_means="not given")
        _nonnegative(self, "cluster.gpu", ("peak_clock_mhz", "sustained_clock_mhz"))
        _within(self, "cluster.gpu", {"peak_clock_mhz": CLOCK_MHZ, "sustained_clock_mhz": CLOCK_MHZ}, zero_means="not known")
        if self.sustained_clock_mhz and not self.peak_clock_mhz:
            raise ConfigError("cluster.gpu.peak_clock_mhz", "0 while sustained_clock_mhz is given",
                              "the SM clock behind the datasheet peaks (H800/H100 SXM: 1830)")
        if self.sustained_clock_mhz > self.peak_clock_mhz > 0:
            raise ConfigError("cluster.gpu.sustained_clock_mhz", f"{format_number(self.sustained_clock_mhz)} exceeds "
                              f"peak_clock_mhz={format_number(self.peak_clock_mhz)}",
                              f"0 (not known) or 1 .. {format_number(self.peak_clock_mhz)} MHz")

    @property
    def sustained_clock_fraction(self) -> float:
        """Sustained / peak SM clock: what a burst-measured compute rate keeps under training load (1.0: not known)."""
        return self.sustained_clock_mhz / self.peak_clock_mhz if self.sustained_clock_mhz else 1.0


@hash_once
@dataclass(frozen=True)
class ClusterConfig:
    """GPUs, nodes and links. Bandwidths are usable GB/s per GPU per direction."""

    name: str
    gpu: GPUConfig
    num_gpus: int
    gpus_per_node: int = 8
    # H800 figures (anchors/kernels_and_links.json gpu_specs.H800_SXM5: nvlink_achievable_GBps 160,
    # V3 report sec 3.2.2 and DeepEP README; one CX7 400 Gb/s NIC ~ 50 GB/s, V3 sec 3.2.2 'IB (50 GB/s)').
    nvlink_gbps: float = 160.0
    ib_gbps: float = 50.0
    # Fixed cost of one transfer. NVLink: nccl-tests send/recv between two H100 over NVLink takes
    # ~3 us for the smallest messages (NVIDIA/nccl#1487; NVIDIA's kiskra-nvidia in nccl-tests#333:
    # "just over 3 microseconds" on B200). IB: no published H800/H100 figure found; 5 us is an
    # assumption, and it barely matters: both set to 0 move V3 by 0.01 % and Llama 3 405B by 0.09 %.
    nvlink_latency_us: float = 3.0
    ib_latency_us: float = 5.0
    profile: str = ""  # calibration profile name or path; "" = roofline only
    source: str = ""

    @property
    def nodes(self) -> int:
        return max(1, self.num_gpus // self.gpus_per_node)

    def validate(self) -> None:
        self.gpu.validate()
        _positive(self, "cluster", ("num_gpus", "gpus_per_node", "nvlink_gbps", "ib_gbps"))
        _nonnegative(self, "cluster", ("nvlink_latency_us", "ib_latency_us"))
        _within(self, "cluster", {"num_gpus": GPUS, "gpus_per_node": GPUS, "nvlink_gbps": BANDWIDTH_GBPS,
                                  "ib_gbps": BANDWIDTH_GBPS,
                                  "nvlink_latency_us": LATENCY_US, "ib_latency_us": LATENCY_US})
        if self.num_gpus > self.gpus_per_node and self.num_gpus % self.gpus_per_node:
            raise ConfigError(
                "cluster.num_gpus",
                f"{self.num_gpus} is not a whole number of {self.gpus_per_node}-GPU nodes",
                f"a multiple of {self.gpus_per_node}",
            )


@dataclass(frozen=True)
class PlanConfig:
    """How one training step is split over the GPUs.

    ``tp * pp * dp * cp`` equals the GPU count; expert parallelism ``ep`` lives
    inside a stage's ``tp * cp * dp`` GPUs, regrouped for the experts as in Megatron-Core's
    expert grid (MoE parallel folding) and DeepSeek-V3 (EP64 inside DP128).
    ``micro_batch`` is in sequences per micro-batch per pipeline replica.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 0  # 0 = whatever makes tp*pp*dp*cp equal the GPU count
    cp: int = 1
    ep: int = 1
    etp: int = 1  # expert tensor parallelism: only 1 is modeled (experts whole, EP over the tp*cp*dp ranks)
    vpp: int = 1
    schedule: str = "1f1b"
    micro_batch: int = 1
    zero: int = 1
    recompute: str = "none"
    precision: str = "bf16"
    # How FP8 GEMM inputs are scaled and cast (workload._Builder.quantize): blockwise (DeepSeek-V3's 1x128 /
    # 128x128 tiles), tensorwise (Transformer Engine's current scaling) or delayed (TE's delayed scaling).
    fp8_recipe: str = "blockwise"
    sp: bool = False
    comm_sms: int = 20  # SMs given to all-to-all kernels (DeepSeek-V3: 20 of 132)
    # auto: overlapped under dualpipe(v), exposed otherwise; on: also Megatron-LM's forward-backward
    # pairs of an interleaved (or unpipelined 1F1B) steady state; off.
    ep_overlap: Literal["auto", "on", "off"] = "auto"  # a switch: YAML's true/yes/on read as on
    # MoE token dispatcher. deepep: DeepEP-style kernels (V3 sec 3.2.2): a token crosses IB once per
    # distinct remote node and NVLink once per distinct GPU, FP8 on the wire under FP8 training.
    # alltoall: Megatron-Core's MoEAlltoAllTokenDispatcher: one row per (token, expert) pair
    # (num_out_tokens = tokens x top-k), one NCCL all-to-all over the EP group in BF16, and a second
    # permutation (sort by local expert) on each side when a rank holds several experts.
    dispatcher: str = "deepep"
    fp8_activation_cache: bool = True  # cache MoE inputs in FP8 (V3 Sec. 3.3.3)
    tp_comm_overlap: bool = False  # TP collectives hidden behind GEMMs (Megatron --tp-comm-overlap)
    # Gradient reduction overlapped with the backward tail (DDP buckets, Megatron --overlap-grad-reduce);
    # False: one collective after the whole pipeline, as Megatron-LM's 2021 local DDP did. ZeRO-0/1 only:
    # under ZeRO-2/3 every micro-batch's sharded gradients are reduced as its backward makes them.
    grad_reduce_overlap: bool = True
    layer_split: str = "balanced"  # balanced: stages cut to even out time; uniform: equal layer counts
    moment_dtype: str = "fp32"  # AdamW moments (V3 keeps them in BF16, sec 3.3.3)
    grad_dtype: str = "fp32"  # gradient accumulation buffer, reduced across data parallel as it is
    # Core attention kernel. Fused kernels keep the s x s scores on chip (FlashAttention, 2022) and
    # differ only in speed, timed from the profile's rows for that library: flash (the profile's
    # default rows: FlashAttention-3 on Hopper), cudnn (cuDNN's fused attention, which Transformer
    # Engine selects on Hopper when both are available) or fa2 (FlashAttention-2). unfused: scores
    # materialized, softmax as its own memory-bound kernel (Megatron-LM before FlashAttention).
    attention_kernel: str = "flash"
    # Cross-entropy over the logits: fused (Transformer Engine's Triton kernels: an online-softmax
    # pass and a pass that writes the BF16 gradient in place during forward; backward scales it) or
    # unfused (Megatron-Core's VocabParallelCrossEntropy: FP32 upcast, max, subtract, exp, sum and
    # divide as separate kernels, the FP32 softmax saved; backward multiplies it and casts to BF16).
    loss_kernel: str = "fused"
    # How context parallelism gathers K and V. ring: each GPU passes its chunk around the ring while the
    # attention on the chunk it holds runs (ring attention; Transformer Engine's p2p), so only what outlasts
    # that attention shows. allgather: all K and V are gathered before the attention and the gradients
    # reduce-scattered after it, on the critical path ("the all-gather communication latency is exposed in
    # the critical path", Llama 3 sec 3.3.2). Both move the same bytes.
    cp_comm: str = "ring"
    # When a DualPipe(V) F&B pair whose halves overlap sends its two P2P messages (the forward's output
    # downstream, the backward's input gradient upstream). in_pair: on the communication stream inside
    # the pair, before its last attention weight gradients, as DeepSeek-V3's Figure 4 draws it ("both
    # all-to-all and PP communication can be fully hidden"). after_pair: once the pair's compute has
    # ended, as the open-source deepseek-ai/DualPipe issues them, so a hop can sit on the critical path
    # once a pair. Other schedules, and pairs that run their halves one after the other, ignore it.
    dualpipe_sends: str = "in_pair"
    routing: str = "balanced"
    zipf_s: float = 1.0
    expert_histogram: tuple[float, ...] = ()
    # EPLB-style replicas of the hottest experts (DES routing spreads their tokens). Each GPU holds
    # ceil(R / ep) replica slots: their weights, gradients and moments count in memory and their
    # gradients in the expert data-parallel traffic; the sync of a replica with its original is not modeled.
    redundant_experts: int = 0
    seed: int = 0

    def validate(self) -> None:
        _positive(self, "plan", ("tp", "pp", "cp", "ep", "etp", "vpp", "micro_batch"))
        if not 0 <= self.seed < 2**32:
            raise ConfigError("plan.seed", f"{_digits(self.seed)} is out of range", f"0 .. {2**32 - 1}")
        _choice("plan.schedule", self.schedule, SCHEDULES)
        _choice("plan.recompute", self.recompute, RECOMPUTE)
        _choice("plan.precision", self.precision, PRECISIONS)
        _choice("plan.fp8_recipe", self.fp8_recipe, FP8_RECIPES)
        _choice("plan.routing", self.routing, ROUTING)
        _choice("plan.ep_overlap", self.ep_overlap, EP_OVERLAPS)
        _choice("plan.dispatcher", self.dispatcher, DISPATCHERS)
        _choice("plan.layer_split", self.layer_split, ("balanced", "uniform"))
        _choice("plan.moment_dtype", self.moment_dtype, ("fp32", "bf16"))
        _choice("plan.grad_dtype", self.grad_dtype, ("fp32", "bf16", "fp16"))
        _choice("plan.attention_kernel", self.attention_kernel, ATTENTION_KERNELS)
        _choice("plan.loss_kernel", self.loss_kernel, LOSS_KERNELS)
        _choice("plan.cp_comm", self.cp_comm, CP_COMMS)
        _choice("plan.dualpipe_sends", self.dualpipe_sends, DUALPIPE_SENDS)
        if self.ep_overlap == "on" and self.schedule not in ("dualpipe", "dualpipev"):
            # Megatron-LM's batch-level overlap pairs the 1F1B steady state (TransformerConfig checks).
            if self.schedule == "zb1p":
                raise ConfigError("plan.ep_overlap", "on needs forward-backward pairs, which zb1p has none of",
                                  "off, auto; or schedule 1f1b (pp 1), interleaved, dualpipe, dualpipev")
            if self.schedule == "1f1b" and self.pp > 1:
                raise ConfigError("plan.ep_overlap", f"on with 1f1b needs pp 1 (got {self.pp}): Megatron-LM "
                                  "requires virtual stages when pp > 1", "off, auto; or schedule interleaved")
            if self.recompute == "full":
                raise ConfigError("plan.ep_overlap", "on under 1f1b/interleaved cannot run full recompute "
                                  "(Megatron-LM refuses it)", "off, auto; or recompute none, selective")
        if self.zero not in (0, 1, 2, 3):
            raise ConfigError("plan.zero", f"{self.zero} is not a ZeRO stage", "0, 1, 2, 3")
        if self.comm_sms < 0:
            raise ConfigError("plan.comm_sms", f"{self.comm_sms} is negative", "0 or more SMs")
        _nonnegative(self, "plan", ("zipf_s", "dp"))
        if any(not (_number(w) and w >= 0) for w in self.expert_histogram) \
                or (self.expert_histogram and not sum(self.expert_histogram) > 0):
            raise ConfigError("plan.expert_histogram", "weights must be finite numbers >= 0, not all zero",
                              "one load weight per routed expert")
        if self.redundant_experts < 0:
            raise ConfigError("plan.redundant_experts", f"{self.redundant_experts} is negative", ">= 0")
        if self.etp != 1:
            # Megatron's --expert-tensor-parallel-size splits each expert's GEMMs and adds collectives
            # inside the expert block; the workload keeps experts whole (Megatron's etp=1).
            raise ConfigError("plan.etp", f"{self.etp}: expert tensor parallelism is not modeled", "1")

    @property
    def overlaps_ep(self) -> bool:
        if self.ep_overlap == "auto":
            return self.schedule in ("dualpipe", "dualpipev")
        return self.ep_overlap == "on"


@dataclass(frozen=True)
class PhaseConfig:
    """One phase of a training run (pre-training, context extension, ...).

    Tokens come either from ``tokens`` or from ``steps`` x batch x sequence.
    ``batch_ramp_from`` and ``batch_ramp_tokens`` describe a linear batch-size
    ramp at the start of the phase (DeepSeek-V3: 3072 -> 15360 sequences over the
    first 469B tokens). ``plan`` overrides fields of the scenario's plan.
    ``column`` names the column of the published cost table the phase belongs to
    (default: its own name): V3's Table 1 prices both YaRN stages together as
    "context extension", so its two phases share one column and one published figure.
    """

    name: str
    seq_len: int
    global_batch: int
    tokens: float = 0.0
    steps: int = 0
    batch_ramp_from: int = 0
    batch_ramp_tokens: float = 0.0
    plan: tuple[tuple[str, Any], ...] = ()
    published_gpu_hours: float = 0.0
    gpu_hours: float = 0.0  # given directly when the phase is not simulated (e.g. post-training)
    source: str = ""
    column: str = ""

    @property
    def total_tokens(self) -> float:
        return self.tokens or self.steps * self.global_batch * self.seq_len

    def validate(self) -> None:
        f = f"training.phases[{self.name}]"
        _positive(self, f, ("seq_len", "global_batch"))
        _within(self, f, {"seq_len": SEQ_LEN, "global_batch": BATCH})
        _nonnegative(self, f, ("tokens", "steps", "published_gpu_hours", "gpu_hours"))
        _within(self, f, {"tokens": TOKENS}, zero_means="from steps")
        if not self.tokens and self.steps and self.total_tokens > TOKENS[1]:  # steps x batch x seq_len
            raise ConfigError(f"{f}.steps", f"{_digits(self.steps)} steps make {self.total_tokens:.3g} tokens",
                              f"at most {format_number(TOKENS[1])} tokens")
        _within(self, f, {"published_gpu_hours": GPU_HOURS, "gpu_hours": GPU_HOURS})
        _check_ramp(f, self.batch_ramp_from, self.batch_ramp_tokens, self.total_tokens)


@dataclass(frozen=True)
class TrainingConfig:
    """What one step sees (sequence length, global batch) and how much data in all."""

    seq_len: int = 4096
    global_batch: int = 1024
    tokens: float = 1e12
    batch_ramp_from: int = 0
    batch_ramp_tokens: float = 0.0
    phases: tuple[PhaseConfig, ...] = ()

    def validate(self) -> None:
        _positive(self, "training", ("seq_len", "global_batch", "tokens"))
        _within(self, "training", {"seq_len": SEQ_LEN, "global_batch": BATCH})
        _within(self, "training", {"tokens": TOKENS})
        _check_ramp("training", self.batch_ramp_from, self.batch_ramp_tokens, self.tokens)
        for ph in self.phases:
            ph.validate()


@dataclass(frozen=True)
class CostConfig:
    usd_per_gpu_hour: float = 2.0  # DeepSeek-V3 Table 1 assumes $2 per H800 GPU-hour

    def validate(self) -> None:
        _nonnegative(self, "cost", ("usd_per_gpu_hour",))
        _within(self, "cost", {"usd_per_gpu_hour": USD_PER_GPU_HOUR})


@dataclass(frozen=True)
class Scenario:
    """Model + cluster + plan + training + cost, checked together."""

    name: str
    model: ModelConfig
    cluster: ClusterConfig
    plan: PlanConfig
    training: TrainingConfig
    cost: CostConfig = field(default_factory=CostConfig)
    description: str = ""

    @property
    def dp(self) -> int:
        return self.plan.dp or self.cluster.num_gpus // (self.plan.tp * self.plan.pp * self.plan.cp)

    @property
    def dp_expert(self) -> int:
        """Replicas of each routed expert: the expert-data-parallel group. A pipeline stage's
        TP x CP x DP GPUs are regrouped as EP x expert-DP for the experts (Megatron-Core's expert
        grid, expert TP 1), so the group is ``tp * cp * dp / ep`` wide; dense models: ``dp``."""
        if not self.model.is_moe:
            return self.dp
        return max(1, self.dp * self.plan.cp * self.plan.tp // self.plan.ep)

    @property
    def ep_overlapped(self) -> bool:
        """Whether the MoE all-to-all hides behind another micro-batch's compute: the plan asks for
        it (``plan.overlaps_ep``) and there is an all-to-all (an MoE model with EP > 1)."""
        return self.plan.overlaps_ep and self.model.is_moe and self.plan.ep > 1

    @property
    def microbatches(self) -> int:
        """Micro-batches per pipeline replica per step."""
        return self.training.global_batch // (self.dp * self.plan.micro_batch)

    def validate(self) -> "Scenario":
        return self.validate_parts()._check_together()

    def validate_parts(self) -> "Scenario":
        """Each part checked alone (its fields, their ranges), not the plan against the rest: a scenario whose
        plan a search will replace (``api.load_for_search``) may hold one that does not fit its GPU count."""
        for part in (self.model, self.cluster, self.plan, self.training, self.cost):
            part.validate()
        return self

    def validate_plan(self) -> "Scenario":
        """:meth:`validate` for a scenario whose model, cluster, training and cost were already checked:
        its plan alone, then the plan against the rest. A plan search varies only the plan, and checking
        the unchanged parts again cost most of the time it took to enumerate its candidates."""
        self.plan.validate()
        return self._check_together()

    def _check_together(self) -> "Scenario":
        """What no part can check alone: the plan against the model, the cluster and the training."""
        m, c, p, t = self.model, self.cluster, self.plan, self.training
        n = c.num_gpus
        denom = p.tp * p.pp * p.cp
        if n % denom:
            raise ConfigError(
                "plan", f"tp*pp*cp = {p.tp}*{p.pp}*{p.cp} = {denom} does not divide cluster.num_gpus={n}",
                "parallel sizes whose product divides the GPU count",
            )
        if p.dp and p.tp * p.pp * p.dp * p.cp != n:
            raise ConfigError(
                "plan.dp", f"tp*pp*dp*cp = {p.tp * p.pp * p.dp * p.cp} != cluster.num_gpus={n}",
                f"dp={n // denom} (or 0 to derive it)",
            )
        dp = self.dp
        if m.is_moe:
            if m.n_routed_experts % p.ep:
                raise ConfigError(
                    "plan.ep", f"{p.ep} does not divide model.n_routed_experts={m.n_routed_experts}",
                    "a divisor of " + str(m.n_routed_experts),
                )
            stage = p.tp * p.cp * dp  # the GPUs of one pipeline stage, regrouped as ep x expert-dp
            if stage % p.ep:
                raise ConfigError("plan.ep", f"{p.ep} does not divide tp*cp*dp={stage}", f"a divisor of {stage}")
            most = m.n_routed_experts * (p.ep - 1)  # beyond this every rank holds every expert
            if p.redundant_experts > most:
                raise ConfigError("plan.redundant_experts", f"{p.redundant_experts} exceeds what ep={p.ep} can hold",
                                  f"0 .. {most} (n_routed_experts x (ep - 1))")
        elif p.ep != 1:
            raise ConfigError("plan.ep", f"{p.ep} given for a dense model", "1")
        elif p.redundant_experts:
            raise ConfigError("plan.redundant_experts", f"{p.redundant_experts} given for a dense model", "0")
        # Unfused attention with a sliding window computes the whole s x s square and masks it afterwards
        # (Transformer Engine's UnfusedDotProductAttention builds the window into a full mask), as it does
        # for the causal mask: workload._unfused_core costs the square either way.
        if p.attention_kernel == "unfused" and p.cp > 1:
            # Megatron-LM's context parallelism runs inside Transformer Engine's fused attention
            # (DotProductAttention's cp_group); the unfused core is the whole s x s square on one GPU.
            raise ConfigError("plan.attention_kernel", f"'unfused' with cp={p.cp}: context parallelism needs a "
                              "fused attention kernel", "flash, cudnn, fa2; or cp 1")
        if p.attention_kernel == "unfused" and (m.is_mla or m.nsa is not None):
            raise ConfigError("plan.attention_kernel", "'unfused' is modeled for plain attention only (not MLA or NSA)",
                              "flash, cudnn, fa2")
        if m.heads % p.tp:
            raise ConfigError("plan.tp", f"{p.tp} does not divide model.heads={m.heads}", "a divisor of heads")
        from .workload import model_units  # workload imports this module

        stages = num_stages(p.schedule, p.pp, p.vpp)
        # A balanced split may give the embedding, the output head or an MTP unit a stage of its own (Llama 3's
        # first chunk holds only the embedding, its last only the head: arXiv 2407.21783 sec 3.3.2); a uniform
        # split cuts transformer blocks only, the embedding and head riding on the end stages.
        cuttable = len(model_units(m)) if p.layer_split == "balanced" else m.layers
        if stages > cuttable:
            what = "model.layers" if p.layer_split == "uniform" else "the model's layers, embedding, head and MTP units"
            raise ConfigError("plan.pp", f"{stages} pipeline stages exceed {what} ({cuttable})",
                              f"at most {cuttable} stages")
        if p.pp == 1 and p.schedule not in ("none", "1f1b"):
            raise ConfigError("plan.schedule", f"{p.schedule!r} needs pp > 1", "none or 1f1b with pp=1")
        if p.pp > 1 and p.schedule == "none":
            raise ConfigError("plan.schedule", "'none' with pp > 1", "1f1b, interleaved, zb1p, dualpipe, dualpipev")
        if p.schedule == "interleaved" and p.vpp < 2:
            raise ConfigError("plan.vpp", f"{p.vpp} with the interleaved schedule", "2 or more virtual stages")
        if p.schedule != "interleaved" and p.vpp != 1:
            raise ConfigError("plan.vpp", f"{p.vpp} with schedule {p.schedule!r}: only interleaved uses virtual stages",
                              "1, or schedule interleaved")
        if t.global_batch % (dp * p.micro_batch):
            raise ConfigError(
                "plan.micro_batch",
                f"micro_batch {p.micro_batch} x dp {dp} does not divide training.global_batch={t.global_batch}",
                "a micro-batch size that divides global_batch/dp = " + _fmt_div(t.global_batch, dp),
            )
        mbs = self.microbatches
        if mbs > MICROBATCHES_MAX:
            raise ConfigError(
                "plan.micro_batch",
                f"{mbs} micro-batches per pipeline replica (training.global_batch / (dp x micro_batch) = "
                f"{t.global_batch} / ({dp} x {p.micro_batch}))",
                f"at most {MICROBATCHES_MAX}: a larger micro_batch or a smaller global_batch",
            )
        # DualPipe's reference asserts an even rank count and an even number of at least 2*pp chunks;
        # DualPipeV's only asks for at least 2*pp (schedules.validate_schedule_args mirrors both).
        if p.schedule == "dualpipe" and p.pp % 2:
            raise ConfigError("plan.pp", f"{p.pp} is odd; dualpipe needs an even pp", "an even number, or dualpipev")
        if p.schedule in ("dualpipe", "dualpipev"):
            need = 2 * p.pp
            if mbs < need or (mbs % 2 and p.schedule == "dualpipe"):
                what = "an even number of at least" if p.schedule == "dualpipe" else "at least"
                raise ConfigError(
                    "plan.micro_batch",
                    f"{p.schedule} needs {what} 2*pp={need} micro-batches, got {mbs}",
                    "a smaller micro_batch or a larger global_batch",
                )
        if p.schedule == "interleaved" and mbs % p.pp:
            raise ConfigError(
                "plan.micro_batch", f"interleaved needs micro-batches ({mbs} = training.global_batch / (dp x "
                f"micro_batch) = {t.global_batch} / ({dp} x {p.micro_batch})) divisible by pp={p.pp}",
                "a micro_batch, GPU count (dp) or pp that makes that count a multiple of pp",
            )
        if p.cp > 1 and t.seq_len % (2 * p.cp):
            raise ConfigError("plan.cp", f"{p.cp} does not split training.seq_len={t.seq_len} into 2*cp chunks", "a cp with seq_len % (2*cp) == 0")
        if p.comm_sms >= c.gpu.sms:
            raise ConfigError("plan.comm_sms", f"{p.comm_sms} leaves no SMs for compute on a {c.gpu.sms}-SM GPU", f"0..{c.gpu.sms - 1}")
        if p.routing == "histogram" and len(p.expert_histogram) != m.n_routed_experts:
            raise ConfigError(
                "plan.expert_histogram", f"{len(p.expert_histogram)} weights given", f"{m.n_routed_experts} weights, one per routed expert"
            )
        if p.precision == "fp8" and not c.gpu.fp8_tflops:
            raise ConfigError("plan.precision", f"fp8 on {c.gpu.name}, which has no FP8 tensor cores", "bf16 or fp16")
        return self


def _fmt_div(a: int, b: int) -> str:
    return str(a // b) if b and a % b == 0 else f"{a}/{b} (not whole)"


def _number(value: Any) -> bool:
    """A finite int or float (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(obj: Any, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (_number(value) and value > 0):
            raise ConfigError(f"{prefix}.{name}", f"must be a positive finite number, got {value!r}")


def _nonnegative(obj: Any, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (_number(value) and value >= 0):
            raise ConfigError(f"{prefix}.{name}", f"must be a finite number >= 0, got {value!r}")


# Ranges of the physical inputs. Positivity and finiteness alone let through values such as
# cluster.nvlink_gbps=1e-300: every number finite, but a transfer then takes 1e290 s, the step
# overflows to inf, and the DES, whose clock counts whole nanoseconds (des/clock.py), cannot turn inf
# into an integer; cost.usd_per_gpu_hour=1e308 overflowed the run's price the same way. Each range is
# wide enough that no real or plausible future device, link or run falls outside it (the shipped
# values sit three or more decades inside both ends), and narrow enough that the result stays a
# finite float: a lower end bounds a duration (bytes / bandwidth, FLOPs / peak), an upper end a
# product (latency x messages, tokens x GPU-hours x price). Every input at its worst end together
# gives a DeepSeek-V3 step of ~2e7 s (2e16 ns) and a run of ~1e23 USD, far inside a float's 1.8e308
# (tests/test_config_errors.py runs both ends in both engines). A value outside is refused when the
# scenario is loaded, naming the field and the range. Each is (lo, hi, unit), both ends allowed.
BANDWIDTH_GBPS = (1e-3, 1e7, "GB/s")  # 1 MB/s (a slow WAN link) .. 10 PB/s; today: IB 12-100, NVLink 900, HBM 8000
TFLOPS = (1e-3, 1e7, "TFLOP/s")  # 1 GFLOP/s (a CPU core) .. 10 EFLOP/s per GPU; today: ~1000 BF16, ~5000 FP8
HBM_GIB = (1e-3, 1e7, "GiB")  # 1 MiB .. 10 PiB per GPU; today: 40-288 GiB
CLOCK_MHZ = (1.0, 1e5, "MHz")  # 1 MHz .. 100 GHz; today: 1410 (A100) .. 1980 (Hopper boost)
LATENCY_US = (0.0, 1e6, "us")  # none .. 1 s per message; today: ~1-10 us
TOKENS = (1.0, 1e18, "tokens")  # one token .. 1e18 (~70,000x DeepSeek-V3's 14.8T)
GPU_HOURS = (0.0, 1e15, "GPU-hours")  # published or given phase costs; V3's whole run: 2.788e6
USD_PER_GPU_HOUR = (0.0, 1e6, "USD")  # free .. $1M per GPU-hour; today: ~$1-10

# Ranges of the whole-number sizes, for the same reason and one more: the engines walk some of them
# one by one (layers into stages, MTP modules, micro-batches through the schedule), so a size such as
# model.layers=1e15 was not refused and never answered. Each upper end is two or more decades past
# the largest shipped value and keeps one analytic prediction within seconds.
LAYERS = (1, 10_000, "layers")  # today: 12 (MoE 2B) .. 126 (Llama 3 405B)
MTP_MODULES = (0, 1_000, "modules")  # today: 0 or 1 (DeepSeek-V3)
WIDTH = (1, 10_000_000, "")  # hidden, intermediate, LoRA-rank and head sizes; today: 64 .. 53,248
HEADS = (1, 100_000, "heads")  # today: 16 .. 128
VOCAB = (1, 1_000_000_000, "tokens")  # today: 32,000 .. 151,936
EXPERTS = (1, 1_000_000, "experts")  # routed experts and how many a token picks; today: 8 .. 256
SEQ_LEN = (1, 1_000_000_000, "tokens")  # today: 2,048 .. 131,072
BATCH = (1, 1_000_000_000, "sequences")  # global batch and the ramp's start; today: 16 .. 15,360
GPUS = (1, 100_000_000, "GPUs")  # per cluster (also per node); today: 8 .. 16,384
SMS = (1, 1_000_000, "SMs")  # per GPU; today: 108 .. 132
# Micro-batches per pipeline replica and step: the schedules list every one of them, in both engines
# (a DualPipe step of 100,000 takes the analytic engine ~9 s). Today: 1 .. 15,360 (search over V3).
MICROBATCHES_MAX = 100_000


def format_number(x: float) -> str:
    """A number as one would type it: 0, 0.5, 160, 1e-3, 1e7, 2.5e-300 (not 0.001 or 1e+07)."""
    if x and not 1e-2 <= abs(x) < 1e5:
        mantissa, exponent = f"{x:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:g}"


def _digits(x: float) -> str:
    """All of a value's digits, briefly: 1e-300, 1e308, 20000000, 123456789.5 (not 1e-09, 1e+308, 20000000.0);
    a whole number past 16 digits, which was typed as a float (1e160) and holds that float's binary noise, as 1e160."""
    if isinstance(x, int) and abs(x) >= 10**16:
        return format_number(float(x))
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text.removesuffix(".0")


def _within(obj: Any, prefix: str, ranges: dict[str, tuple[float, float, str]], zero_means: str = "") -> None:
    """Refuse a value outside its physical range (see the ranges above) with the range in the message;
    ``zero_means``: 0 is also allowed, and means that (an FP8 peak of 0: no FP8 tensor cores)."""
    for name, (lo, hi, unit) in ranges.items():
        value = getattr(obj, name)
        if zero_means and value == 0:
            continue
        if not lo <= value <= hi:
            allowed = f"{format_number(lo)} .. {format_number(hi)} {unit}".rstrip() + (f", or 0 ({zero_means})" if zero_means and lo > 0 else "")
            raise ConfigError(f"{prefix}.{name}", f"{_digits(value)} is out of range", allowed)


def _check_ramp(prefix: str, ramp_from: int, ramp_tokens: float, tokens: float) -> None:
    """A batch-size ramp starts at a batch size >= 0 (0: none; it may start above the global batch, so
    a user who lowers the batch keeps the preset's ramp) and spans at most the tokens there are."""
    if not (_number(ramp_from) and 0 <= ramp_from <= BATCH[1]):
        raise ConfigError(f"{prefix}.batch_ramp_from", f"{ramp_from!r} out of range",
                          f"0 (no ramp) or a batch size 1 .. {format_number(BATCH[1])} sequences")
    if not (_number(ramp_tokens) and 0 <= ramp_tokens <= tokens):
        raise ConfigError(f"{prefix}.batch_ramp_tokens", f"{ramp_tokens!r} out of range", f"0..tokens={tokens:g}")


def _choice(fieldname: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        note = " (a YAML file reads true/yes/on as on, false/no/off as off)" if value in ("on", "off") else ""
        raise ConfigError(fieldname, f"unknown value {value!r}{note}", ", ".join(allowed))


# --------------------------------------------------------------------------- building from plain data


def build(cls: type, data: Any, where: str) -> Any:
    """Build a frozen config dataclass from a mapping, checking names and types.

    Unknown keys and values of the wrong type raise ConfigError naming
    ``where.key``. Nested dataclasses and tuples are built recursively.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field", ", ".join(sorted(known)))
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    missing = [
        f.name for f in fields(cls)
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}", "required field is missing")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            elem = args[0] if args else Any
            if elem is Any or len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(elem, v, f"{where}[{i}]") if elem is not Any else v for i, v in enumerate(value))
            return tuple(value)
        if isinstance(value, dict) and args and typing.get_origin(args[0]) is tuple:  # field -> value pairs
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise ConfigError(f"{where}.{bad[0]}", "field names must be text")
            return tuple(sorted(value.items()))
        raise ConfigError(where, f"expected a list, got {value!r}"[:200])
    if origin is Literal:  # a named switch: YAML 1.1 booleans and their words mean on / off
        words = {"true": "on", "yes": "on", "on": "on", "false": "off", "no": "off", "off": "off"}
        if isinstance(value, bool) and "on" in args:
            return "on" if value else "off"
        if isinstance(value, str) and words.get(value.lower()) in args:
            return words[value.lower()]
        return value if isinstance(value, str) else str(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(where, f"expected true or false, got {value!r}", "true, false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(where, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else _bad_int(where, value)
            except ValueError:
                pass
        raise ConfigError(where, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(where, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans
            return "on" if value else "off"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(where, f"expected a string, got {value!r}")
    return value


def _bad_int(where: str, value: Any) -> int:
    raise ConfigError(where, f"expected an integer, got {value!r}")


def to_dict(obj: Any) -> Any:
    """Plain-data form of a config (for JSON, YAML and cache keys)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        if obj and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in obj):
            return {k: to_dict(v) for k, v in obj}
        return [to_dict(x) for x in obj]
    return obj
