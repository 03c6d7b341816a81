"""Memory per GPU: parameters, gradients, optimizer states, activations.

Mixed-precision training keeps, per parameter held on a GPU: the BF16 weight
(2 B), a gradient buffer (``plan.grad_dtype``), and AdamW's FP32 master weight
plus two moments (``plan.moment_dtype``; DeepSeek-V3 keeps the moments in BF16).
ZeRO shards these over the data-parallel group: stage 1 the optimizer states,
stage 2 also the gradients, stage 3 also the weights. Routed experts are
replicated over ``tp*cp*dp/ep`` GPUs, not ``dp``, so their shards are larger.

Activations are what the forward pass saves for backward, per micro-batch and
stage (``LayerOps.activation_bytes``, recompute-aware), times the micro-batches
a schedule keeps in flight (1F1B: PP on the first rank; DualPipe: PP+1).

Communication buffers: DeepEP's high-throughput all-to-all stages tokens in
NVLink and RDMA buffers allocated once per process, whose size follows from
the EP size, the SMs it runs on and the hidden size (:func:`deepep_buffer_bytes`).
NCCL's own buffers, the CUDA context and allocator fragmentation are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .workload import BYTES

GIB = 1024**3


@dataclass(frozen=True)
class MemoryBreakdown:
    params: float
    grads: float
    optimizer: float
    activations: float
    transient: float
    comm_buffers: float = 0.0  # DeepEP's staging buffers (deepep_buffer_bytes), held for the whole run

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.transient + self.comm_buffers

    def gib(self) -> dict[str, float]:
        return {
            "params": self.params / GIB,
            "grads": self.grads / GIB,
            "optimizer": self.optimizer / GIB,
            "activations": self.activations / GIB,
            "transient": self.transient / GIB,
            "comm_buffers": self.comm_buffers / GIB,
            "total": self.total / GIB,
        }


def state_bytes(params_dense: float, params_expert: float, zero: int, dp_dense: int, dp_expert: int,
                grad_dtype: str, moment_dtype: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) in bytes for the parameters one GPU holds."""
    g = BYTES[grad_dtype]
    opt = 4 + 2 * BYTES[moment_dtype]  # FP32 master + two moments

    def shard(n_params: float, per: float, stage_from: int, group: int) -> float:
        return n_params * per / (group if zero >= stage_from else 1)

    weights = shard(params_dense, 2, 3, dp_dense) + shard(params_expert, 2, 3, dp_expert)
    grads = shard(params_dense, g, 2, dp_dense) + shard(params_expert, g, 2, dp_expert)
    optim = shard(params_dense, opt, 1, dp_dense) + shard(params_expert, opt, 1, dp_expert)
    return weights, grads, optim


# DeepEP's recommended configs for its normal (high-throughput) kernels, by EP size: (NVL chunked recv tokens,
# RDMA chunked send tokens, RDMA chunked recv tokens), for dispatch and for combine (deepseek-ai/DeepEP
# deep_ep/buffer.py, Buffer.get_dispatch_config / get_combine_config, commit 04b06f7).
_DEEPEP_DISPATCH = {2: (256, 6, 128), 4: (256, 6, 128), 8: (256, 6, 128), 16: (288, 20, 128), 24: (288, 32, 128),
                    32: (288, 32, 128), 64: (288, 28, 128), 128: (560, 32, 128), 144: (720, 12, 128),
                    160: (720, 12, 128)}
_DEEPEP_COMBINE = {2: (256, 6, 128), 4: (256, 6, 128), 8: (256, 6, 128), 16: (288, 28, 128), 24: (288, 20, 128),
                   32: (288, 20, 128), 64: (288, 20, 128), 128: (560, 12, 128), 144: (720, 8, 128),
                   160: (720, 8, 128)}
_NVL_PEERS = 8  # DeepEP's NUM_MAX_NVL_PEERS: GPUs one NVLink domain holds
_TOPK, _SCALES = 128, 128  # kNumMaxTopK, kNumMaxScales: per-token slots the buffers reserve
_SOURCE_META = 8  # sizeof(internode::SourceMeta): two ints


@lru_cache(maxsize=256)  # hot path: every rank kind of every MoE plan asks
def deepep_buffer_bytes(hidden: int, ep: int, num_sms: int) -> float:
    """Bytes of the NVLink and RDMA buffers DeepEP's normal kernels allocate on each GPU of an EP group.

    A framework sizes one buffer for both directions from DeepEP's hints: the larger of the dispatch and
    combine configs' ``get_nvl_buffer_size_hint`` and ``get_rdma_buffer_size_hint`` (DeepEP csrc/config.hpp;
    Megatron-LM's moe/fused_a2a.py and DeepEP's README ``get_buffer``), with ``hidden_bytes`` = hidden x 2
    (BF16; FP8 dispatch still reserves 2 bytes a channel). The buffers are per channel (``num_sms / 2``
    channels) and per peer: each NVLink peer (up to 8) gets a ring of ``nvl_recv`` tokens, and each RDMA
    peer node a send and a receive ring of ``rdma_recv`` tokens, every token slot carrying its hidden
    state, 128 top-k indices (int64) and weights (FP32) and 128 FP32 scales. Within one NVLink domain
    (EP <= 8) no RDMA buffer is made. An EP size DeepEP has no config for takes the next larger one's
    (above 160, the 160 one's). The V3 plan (EP64, 20 SMs, hidden 7168) holds 0.35 GiB for NVLink and
    0.34 GiB for RDMA."""
    if ep <= 1:
        return 0.0
    sizes = sorted(_DEEPEP_DISPATCH)
    key = next((k for k in sizes if k >= ep), sizes[-1])
    channels = num_sms // 2
    hidden_bytes = hidden * 2
    per_token = hidden_bytes + _TOPK * 8 + _TOPK * 4 + _SCALES * 4
    rdma_ranks = max(ep // _NVL_PEERS, 1)
    nvl_ranks = min(ep, _NVL_PEERS)
    nvl = rdma = 0
    for nvl_recv, rdma_send, rdma_recv in (_DEEPEP_DISPATCH[key], _DEEPEP_COMBINE[key]):
        n = channels * nvl_ranks * ((2 * rdma_ranks + 3) * 4 + nvl_recv * (per_token + _SOURCE_META))
        nvl = max(nvl, -(-n // 128) * 128)
        if ep > _NVL_PEERS:
            recv = -(-rdma_recv // rdma_send) * rdma_send  # Config() rounds the RDMA ring up to whole sends
            r = channels * rdma_ranks * ((_NVL_PEERS * 2 + 2) * 2 * 4 + recv * 2 * (per_token + _SOURCE_META + 16))
            rdma = max(rdma, -(-(r + 1048576) // 128) * 128)
    return float(nvl + rdma)
