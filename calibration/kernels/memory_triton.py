"""Fused Triton kernels for the memory-bound ops between the GEMMs: one read, one write each.

A training stack runs RMSNorm, SwiGLU and DeepSeek's FP8 1x128 quantization (with the transpose the
weight-gradient GEMM needs) as one kernel each: the simulator's memory op is that kernel, its bytes
one read of the inputs and one write of the outputs (:func:`calibration.kernels.memory_bound.op_bytes`).
torch's eager versions run them as chains of kernels through float32 intermediates (RMSNorm in five,
the quantization in several), which is not what a training step pays. These kernels time the fused
form beside the eager one; the faster becomes the profile row.

* :func:`rmsnorm`: one program per row, the whole row in registers (hidden sizes up to 32K).
* :func:`swiglu`: ``silu(g) * u`` over ``[m, 2n] -> [m, n]``, element-wise.
* :func:`quantize`: per [BLOCK_M, 128] tile: each row's amax over its 128 values, scale = amax / 448,
  the FP8 values and one float32 scale per row and tile; ``rowwise`` writes ``x``'s layout ([M, K],
  scales [M, K/128]), ``colwise`` the transpose's ([K, M], scales [K, M/128]: tiles of 128 along M),
  both from one read of each [128, 128] tile when both are asked for (``fp8_quant_transpose``).

Same scale convention and outputs as :mod:`calibration.kernels.fp8` (``x ~= q * scale``), so the
checks compare them with the float64 dequantized reference. Under ``TRITON_INTERPRET=1`` they run on
the CPU for correctness only (tests/test_triton_kernels.py), the FP8 cast itself then done by torch;
there the quantization equals torch's value for value. On a GPU Triton's float32 division may differ
from torch's in the last bit and flip a rounding, which the harness's tolerance allows.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

BLOCK = 128  # the 1x128 scaling tile
E4M3_MAX = 448.0


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, y_ptr, N, stride_x, stride_y, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rms = tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    tl.store(y_ptr + row * stride_y + cols, (x / rms * w).to(y_ptr.dtype.element_ty), mask=mask)


def rmsnorm(x, w, eps: float = 1e-6, out=None):
    """y = x / rms(x) * w over the last dimension of x [M, N], one fused pass."""
    m, n = x.shape
    if not x.is_contiguous():
        raise ValueError("rmsnorm: x must be contiguous")
    block = triton.next_power_of_2(n)
    if block > 32768:
        raise ValueError(f"rmsnorm: hidden size {n} over 32768")
    out = torch.empty_like(x) if out is None else out
    # Warps by row width: the row (and the weight) stay in registers, 32 floats a thread at 16K with 16 warps.
    warps = 16 if block >= 16384 else 8 if block >= 4096 else 4
    _rmsnorm_kernel[(m,)](x, w, out, n, x.stride(0), out.stride(0), eps, BLOCK_N=block, num_warps=warps)
    return out


@triton.jit
def _swiglu_kernel(gu_ptr, y_ptr, N, BLOCK_N: tl.constexpr):
    # One row block per program: contiguous columns (vectorised loads), the row's base in int64.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    g = tl.load(gu_ptr + row * (2 * N) + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * (2 * N) + N + cols, mask=mask, other=0.0).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def swiglu(gu, out=None, block: int = 1024):
    """silu(g) * u for gu = [g | u] of shape [M, 2N] (contiguous) -> [M, N], one fused pass."""
    m, n2 = gu.shape
    if n2 % 2 or not gu.is_contiguous():
        raise ValueError("swiglu: needs a contiguous [M, 2N] input")
    n = n2 // 2
    out = torch.empty((m, n), device=gu.device, dtype=gu.dtype) if out is None else out
    _swiglu_kernel[(m, triton.cdiv(n, block))](gu, out, n, BLOCK_N=block, num_warps=4)
    return out


@triton.jit
def _quant_kernel(x_ptr, q_ptr, s_ptr, qt_ptr, st_ptr, M, K, stride_xm,
                  BLOCK_M: tl.constexpr, ROWWISE: tl.constexpr, COLWISE: tl.constexpr):
    # One [BLOCK_M, 128] tile of x [M, K] (BLOCK_M = 128 when COLWISE: the transpose's tiles run along M).
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = pid_k * 128 + tl.arange(0, 128)
    x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :]).to(tl.float32)
    if ROWWISE:  # x's layout: one scale per row and 128 K values
        amax = tl.maximum(tl.max(tl.abs(x), axis=1), 1e-12)
        scale = amax / 448.0
        q = tl.clamp(x / scale[:, None], -448.0, 448.0)
        tl.store(q_ptr + rm[:, None].to(tl.int64) * K + rk[None, :], q.to(q_ptr.dtype.element_ty))
        tl.store(s_ptr + rm.to(tl.int64) * (K // 128) + pid_k, scale)
    if COLWISE:  # the transpose [K, M]: one scale per K row and 128 M values (this tile's column)
        amax_t = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12)
        scale_t = amax_t / 448.0
        qt = tl.clamp(x / scale_t[None, :], -448.0, 448.0)
        tl.store(qt_ptr + rk[None, :].to(tl.int64) * M + rm[:, None], qt.to(qt_ptr.dtype.element_ty))
        tl.store(st_ptr + rk.to(tl.int64) * (M // 128) + pid_m, scale_t)


def quantize(x, rowwise: bool = True, colwise: bool = False):
    """FP8 1x128 quantization of x [M, K] in one pass: (q, s) for ``rowwise``, (qt, st) for ``colwise``
    (the transpose, tiles along M), both (q, s, qt, st) when both are asked for. K (and M when
    ``colwise``) must be multiples of 128."""
    m, k = x.shape
    if k % BLOCK or (colwise and m % BLOCK) or not (rowwise or colwise):
        raise ValueError(f"quantize: needs K (and M for the transpose) a multiple of {BLOCK}; got {m}x{k}")
    if not x.is_contiguous():
        raise ValueError("quantize: x must be contiguous")
    # Under the interpreter the kernel writes the scaled values in float32 and torch casts them: the
    # interpreter's own FP8 cast rounds wrongly (124.3 -> 64 seen with Triton 3.9); on a GPU the kernel
    # casts (cvt.rn, round to nearest even, as torch does).
    f8 = torch.float32 if os.environ.get("TRITON_INTERPRET", "") == "1" else torch.float8_e4m3fn
    q = torch.empty((m, k), device=x.device, dtype=f8) if rowwise else x.new_empty(1, dtype=f8)
    s = torch.empty((m, k // BLOCK), device=x.device, dtype=torch.float32) if rowwise else x.new_empty(1, dtype=torch.float32)
    qt = torch.empty((k, m), device=x.device, dtype=f8) if colwise else x.new_empty(1, dtype=f8)
    st = (torch.empty((k, m // BLOCK), device=x.device, dtype=torch.float32) if colwise
          else x.new_empty(1, dtype=torch.float32))
    block_m = BLOCK if colwise else 32
    grid = (triton.cdiv(m, block_m), k // BLOCK)
    if not colwise and m % block_m:
        raise ValueError(f"quantize: M={m} must be a multiple of {block_m}")
    _quant_kernel[grid](x, q, s, qt, st, m, k, x.stride(0), BLOCK_M=block_m, ROWWISE=rowwise, COLWISE=colwise,
                        num_warps=8 if colwise else 4)
    if f8 is torch.float32:
        q, qt = q.to(torch.float8_e4m3fn), qt.to(torch.float8_e4m3fn)
    if rowwise and colwise:
        return q, s, qt, st
    return (q, s) if rowwise else (qt, st)


__all__ = ["rmsnorm", "swiglu", "quantize"]
