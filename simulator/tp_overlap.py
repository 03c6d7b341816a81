"""Tensor-parallel communication overlap as Transformer Engine's userbuffers run it.

With sequence parallelism, each transformer layer all-gathers its input before the
column-parallel GEMMs (QKV, FC1) and reduce-scatters after the row-parallel ones (proj,
FC2), and mirrors that in backward. Megatron-LM's ``--tp-comm-overlap`` hands these
collectives to Transformer Engine's *userbuffers*, which hides each one behind a GEMM of
the same layer. Hiding is not free: the GEMM is cut into chunks, or runs beside a
communication kernel that holds SMs. TE's defaults (``initialize_ub`` /
``get_default_config`` in ``transformer_engine/pytorch/module/base.py``, TE 1.x-2.x) are:

- **ring_exchange** (QKV and FC1 forward, proj and FC2 data-gradient): the all-gather
  becomes TP-1 point-to-point steps on the copy engines (``num_sm`` 1, no SM margin);
  the GEMM runs as ``num_splits = tp`` chunks of m/tp rows, one per step.
- **pipeline** (proj and FC2 forward): the GEMM runs as ``num_splits = 4`` chunks;
  each chunk's reduce-scatter overlaps the next chunk, so the last one's is exposed.
  The reduce-scatter kernel holds ``num_sm = 16`` SMs and ``set_sm_margin`` keeps the
  GEMM off them.
- **bulk** (QKV and FC1 data- and weight-gradient): one GEMM on all SMs but 16 while a
  whole collective (the re-gather of the input, or the reduce-scatter of the input
  gradient) runs beside it.

The proj and FC2 weight-gradient GEMMs are not part of a userbuffers overlap.

This module only says how each GEMM executes (chunks, SMs withheld); the op timer
times the chunks from the profile, and the engines keep the rule that an overlapped
collective shows only where it outlasts the GEMMs of its pass.
"""

from __future__ import annotations

UB_COMM_SMS = 16  # TE default num_sm for pipeline and bulk overlaps (set_sm_margin on)
PIPELINE_SPLITS = 4  # TE default num_splits for pipeline overlaps

# Our GEMM op name -> the TE layer that owns it (Megatron's TE linear layers).
TE_LAYER = {"attn.qkv": "qkv", "attn.o_proj": "proj", "mlp.up": "fc1", "mlp.down": "fc2"}

# (TE layer, pass) -> TE's default overlap method. Passes: fprop (forward, and its recompute),
# dgrad (backward for input), wgrad (backward for weights).
METHOD = {
    ("qkv", "fprop"): "ring_exchange", ("fc1", "fprop"): "ring_exchange",
    ("proj", "dgrad"): "ring_exchange", ("fc2", "dgrad"): "ring_exchange",
    ("proj", "fprop"): "pipeline", ("fc2", "fprop"): "pipeline",
    ("qkv", "dgrad"): "bulk", ("qkv", "wgrad"): "bulk", ("fc1", "dgrad"): "bulk", ("fc1", "wgrad"): "bulk",
}

# Reduce-scatters that follow a pipelined GEMM: their last chunk is exposed.
PIPELINED_REDUCE_SCATTER = ("attn.tp_reducescatter", "mlp.tp_reducescatter")


def gemm_execution(name: str, pass_: str, tp: int) -> tuple[int, int]:
    """(chunks, SMs withheld) for one GEMM pass under TE's default userbuffers overlap.

    ``name`` is the GEMM's op name without the pass suffix; (1, 0) when the GEMM takes no
    part in an overlap."""
    layer = TE_LAYER.get(name)
    method = METHOD.get((layer, pass_)) if layer else None
    if method == "ring_exchange":
        return tp, 0
    if method == "pipeline":
        return PIPELINE_SPLITS, UB_COMM_SMS
    if method == "bulk":
        return 1, UB_COMM_SMS
    return 1, 0


def collective_chunks(name: str) -> int:
    """Chunks of a TP collective whose last chunk no GEMM hides (1: fully overlappable)."""
    base = name.removesuffix(".recompute")
    return PIPELINE_SPLITS if base in PIPELINED_REDUCE_SCATTER else 1
