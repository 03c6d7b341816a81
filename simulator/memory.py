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
"""

from __future__ import annotations

from dataclasses import dataclass

from .workload import BYTES

GIB = 1024**3


@dataclass(frozen=True)
class MemoryBreakdown:
    params: float
    grads: float
    optimizer: float
    activations: float
    transient: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.transient

    def gib(self) -> dict[str, float]:
        return {
            "params": self.params / GIB,
            "grads": self.grads / GIB,
            "optimizer": self.optimizer / GIB,
            "activations": self.activations / GIB,
            "transient": self.transient / GIB,
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
