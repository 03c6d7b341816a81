"""Our Triton grouped GEMM for MoE experts, contiguous layout, BF16 or FP8 with block scales.

**Contiguous layout.** After routing, the tokens sent to this GPU's experts are
sorted by expert: rows ``[end[g-1], end[g])`` of ``A [M_total, K]`` belong to
expert ``g``, whose weight is ``B[g] [N, K]`` (K-contiguous, as DeepGEMM's "NT"
layout). The output is ``C [M_total, N]`` with ``C[r] = A[r] @ B[g(r)].T``.

**Tile schedule.** Each group's rows are cut into BLOCK_M tiles (a group's
last tile may be partial; no tile spans two groups). A small table maps each
program to (group, first row); like DeepGEMM's ``m_indices`` it is built with
the routing, before the GEMM, and is not part of the timed kernel
(:func:`build_schedule`). The grid is (tiles, N / BLOCK_N).

**FP8.** With ``a_scale`` [M_total, K/128] (1x128 activation tiles) and
``b_scale`` [G, N/128, K/128] (128x128 weight blocks), each BLOCK_K step
(BLOCK_K divides 128) multiplies FP8 tiles into an FP32 partial product and
adds it scaled by ``a_scale[row, kb] * b_scale[g, col // 128, kb]``, the
fine-grained scaling of DeepSeek-V3. Scales may have any strides (DeepGEMM
keeps activation scales M-major, which makes these loads contiguous).

**Interpreter.** Under ``TRITON_INTERPRET=1`` Triton's numpy interpreter gets
BF16 ``tl.dot`` wrong (seen with Triton 3.9: errors of 1e10 on unit-normal
data, while FP8 and FP32 dots are exact), so the wrapper sets ``UPCAST`` there
and the dot runs on FP32 copies of the BF16 tiles: the indexing, masking and
scaling logic is what the CPU tests check. On a GPU the BF16 dot is used.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

SCALE_BLOCK = 128

# Candidate launch configurations on a GPU (the runner keeps the fastest per shape).
GPU_CONFIGS = (
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3),
)
INTERPRETER_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


@triton.jit
def _grouped_gemm_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr,
    tile_group_ptr, tile_start_ptr, group_end_ptr,
    N, K,
    stride_am, stride_ak,
    stride_bg, stride_bn, stride_bk,
    stride_cm, stride_cn,
    stride_asm, stride_ask,
    stride_bsg, stride_bsn, stride_bsk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALED: tl.constexpr, UPCAST: tl.constexpr, SCALE_BLOCK: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.load(tile_group_ptr + pid_t)
    g_safe = tl.maximum(g, 0)
    m_start = tl.load(tile_start_ptr + pid_t)
    m_end = tl.load(group_end_ptr + g_safe)
    m_end = tl.where(g >= 0, m_end, m_start)  # padding tile: no rows

    rm = m_start + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mask_m = rm < m_end
    mask_n = rn < N

    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * stride_am + rk[None, :] * stride_ak
    b_ptrs = (b_ptr + g_safe.to(tl.int64) * stride_bg
              + rn[None, :].to(tl.int64) * stride_bn + rk[:, None] * stride_bk)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + rk) < K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if SCALED:
            kb = k0 // SCALE_BLOCK
            sa = tl.load(as_ptr + rm.to(tl.int64) * stride_asm + kb * stride_ask, mask=mask_m, other=0.0)
            sb = tl.load(bs_ptr + g_safe.to(tl.int64) * stride_bsg + (rn // SCALE_BLOCK) * stride_bsn
                         + kb * stride_bsk, mask=mask_n, other=0.0)
            acc += tl.dot(a, b) * sa[:, None] * sb[None, :]
        else:
            acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = c_ptr + rm[:, None].to(tl.int64) * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def build_schedule(group_ends: torch.Tensor, block_m: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tile_group, tile_start) int32 tables: one entry per BLOCK_M tile of each group."""
    ends = group_ends.detach().to("cpu", torch.int64)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    sizes = (ends - starts).clamp_min(0)
    tiles = (sizes + block_m - 1) // block_m
    tile_group = torch.repeat_interleave(torch.arange(len(ends)), tiles)
    first_tile = torch.cumsum(tiles, 0) - tiles
    local = torch.arange(int(tiles.sum())) - torch.repeat_interleave(first_tile, tiles)
    tile_start = starts[tile_group] + local * block_m
    if len(tile_group) == 0:  # keep one padding tile so the kernel always has a table
        tile_group, tile_start = torch.tensor([-1]), torch.tensor([0])
    dev = device if device is not None else group_ends.device
    return tile_group.to(dev, torch.int32), tile_start.to(dev, torch.int32)


def grouped_gemm(a, b, group_ends, *, a_scale=None, b_scale=None, out=None, schedule=None,
                 config=None, out_dtype=torch.bfloat16):
    """C = grouped A @ B[g].T in the contiguous layout (see module docstring).

    ``a`` [M_total, K] and ``b`` [G, N, K] are BF16 (no scales) or FP8 E4M3 with
    ``a_scale`` [M_total, K/128] and ``b_scale`` [G, N/128, K/128] float32.
    ``schedule`` is :func:`build_schedule`'s result for the config's BLOCK_M.
    """
    cfg = dict(config or (INTERPRETER_CONFIG if interpreting() else GPU_CONFIGS[0]))
    m_total, k = a.shape
    groups, n, k_b = b.shape
    if k_b != k:
        raise ValueError(f"grouped_gemm: A has K={k} but B has K={k_b}")
    scaled = a_scale is not None
    if scaled != (b_scale is not None):
        raise ValueError("grouped_gemm: give both a_scale and b_scale (FP8) or neither (BF16)")
    if scaled and SCALE_BLOCK % cfg["BLOCK_K"]:
        raise ValueError(f"grouped_gemm: BLOCK_K={cfg['BLOCK_K']} must divide the scale block {SCALE_BLOCK}")
    if out is None:
        out = torch.empty((m_total, n), device=a.device, dtype=out_dtype)
    if schedule is None:
        schedule = build_schedule(group_ends, cfg["BLOCK_M"], device=a.device)
    tile_group, tile_start = schedule
    dummy = a.new_empty(1, dtype=torch.float32) if not scaled else None
    as_ = a_scale if scaled else dummy
    bs_ = b_scale if scaled else dummy
    as_strides = (a_scale.stride(0), a_scale.stride(1)) if scaled else (0, 0)
    bs_strides = (b_scale.stride(0), b_scale.stride(1), b_scale.stride(2)) if scaled else (0, 0, 0)
    grid = (tile_group.numel(), triton.cdiv(n, cfg["BLOCK_N"]))
    _grouped_gemm_kernel[grid](
        a, b, out, as_, bs_, tile_group, tile_start, group_ends,
        n, k,
        a.stride(0), a.stride(1),
        b.stride(0), b.stride(1), b.stride(2),
        out.stride(0), out.stride(1),
        *as_strides, *bs_strides,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        SCALED=scaled, UPCAST=interpreting(), SCALE_BLOCK=SCALE_BLOCK,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
