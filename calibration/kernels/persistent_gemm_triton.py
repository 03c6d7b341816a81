"""A persistent Triton GEMM: a grid of N programs, each looping over output tiles.

Used by :mod:`calibration.kernels.sm_budget` to run a GEMM on N SMs. Program
``pid`` computes tiles ``pid, pid + N, pid + 2N, ...`` of ``C = A @ B.T``
(A [M, K], B [N, K]), so the grid size, not the problem size, sets how many
SMs work. As in :mod:`grouped_gemm_triton`, the interpreter's BF16 dot is
avoided with ``UPCAST`` under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3)
INTERPRETER_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)


@triton.jit
def _persistent_gemm_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K, NUM_PROGS,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_n = tl.cdiv(N, BLOCK_N)
    num_tiles = tl.cdiv(M, BLOCK_M) * tiles_n
    for tile in range(pid, num_tiles, NUM_PROGS):
        pid_m = tile // tiles_n
        pid_n = tile % tiles_n
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(a_ptr + rm[:, None].to(tl.int64) * stride_am + (k0 + rk)[None, :] * stride_ak,
                        mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
            b = tl.load(b_ptr + rn[None, :].to(tl.int64) * stride_bn + (k0 + rk)[:, None] * stride_bk,
                        mask=(rn[None, :] < N) & ((k0 + rk)[:, None] < K), other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        tl.store(c_ptr + rm[:, None].to(tl.int64) * stride_cm + rn[None, :] * stride_cn,
                 acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def persistent_gemm(a, b, programs: int, out=None, config=None):
    """C [M, N] = A [M, K] @ B [N, K].T with a grid of ``programs`` persistent programs."""
    interpreting = os.environ.get("TRITON_INTERPRET", "") == "1"
    cfg = dict(config or (INTERPRETER_CONFIG if interpreting else GPU_CONFIG))
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"persistent_gemm: A has K={k} but B has K={b.shape[1]}")
    if programs < 1:
        raise ValueError("persistent_gemm: needs at least one program")
    if out is None:
        out = torch.empty((m, n), device=a.device, dtype=torch.bfloat16)
    _persistent_gemm_kernel[(programs,)](
        a, b, out, m, n, k, programs,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], UPCAST=interpreting,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
