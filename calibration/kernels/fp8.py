"""DeepSeek's fine-grained FP8 scaling: 1x128 activation tiles, 128x128 weight blocks.

FP8 E4M3 holds values up to 448 with 3 mantissa bits, so a whole tensor cannot
share one scale without outliers crushing everything else. DeepSeek-V3 scales
*activations* per 1x128 tile (one scale per row per 128 consecutive K values)
and *weights* per 128x128 block; a GEMM multiplies FP8 tiles on the tensor
cores and applies the two scales to each 128-wide partial sum in FP32.

Here: quantizers producing (fp8 tensor, float32 dequantization scales), their
inverses, and the "quantize with transpose" the backward pass needs (the
activation is used K-major in the forward GEMM and M-major in the weight-
gradient GEMM, so both layouts are produced from one BF16 read).

Scale convention: ``x ~= q * scale`` with ``scale = amax / 448`` per tile.
"""

from __future__ import annotations

BLOCK = 128
E4M3_MAX = 448.0


def _fp8_dtype():
    import torch

    return torch.float8_e4m3fn


def quantize_1x128(x):
    """x [M, K] (K % 128 == 0) -> (q fp8 [M, K], scale float32 [M, K//128])."""
    import torch

    m, k = x.shape
    if k % BLOCK:
        raise ValueError(f"quantize_1x128: K={k} is not a multiple of {BLOCK}")
    xb = x.float().reshape(m, k // BLOCK, BLOCK)
    amax = xb.abs().amax(dim=-1).clamp_min(1e-12)
    scale = amax / E4M3_MAX
    q = (xb / scale.unsqueeze(-1)).clamp(-E4M3_MAX, E4M3_MAX).to(_fp8_dtype()).reshape(m, k)
    return q, scale.to(torch.float32)


def dequantize_1x128(q, scale):
    m, k = q.shape
    return (q.float().reshape(m, k // BLOCK, BLOCK) * scale.float().unsqueeze(-1)).reshape(m, k)


def quantize_128x128(w):
    """w [N, K] (K % 128 == 0) -> (q fp8 [N, K], scale float32 [ceil(N/128), K//128]).

    N need not be a multiple of 128: the last block row is partial (V3's fused
    q/kv down-projection has N = 2112 = 16.5 x 128).
    """
    import torch

    n, k = w.shape
    if k % BLOCK:
        raise ValueError(f"quantize_128x128: K={k} is not a multiple of {BLOCK}")
    nb = -(-n // BLOCK)
    wf = w.float()
    if nb * BLOCK != n:
        wf = torch.cat([wf, wf.new_zeros(nb * BLOCK - n, k)])
    wb = wf.reshape(nb, BLOCK, k // BLOCK, BLOCK)
    amax = wb.abs().amax(dim=(1, 3)).clamp_min(1e-12)
    scale = amax / E4M3_MAX
    q = (wb / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(_fp8_dtype()).reshape(nb * BLOCK, k)[:n]
    return q.contiguous(), scale.to(torch.float32)


def dequantize_128x128(q, scale):
    n, k = q.shape
    full = scale.float().repeat_interleave(BLOCK, dim=0)[:n].repeat_interleave(BLOCK, dim=1)
    return q.float() * full


def quantize_tensorwise(x):
    """One scale for the whole tensor: (q fp8, scale float32 scalar tensor)."""
    import torch

    amax = x.float().abs().amax().clamp_min(1e-12)
    scale = (amax / E4M3_MAX).to(torch.float32)
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(_fp8_dtype()), scale


def quantize_transpose_1x128(x):
    """Both layouts of a BF16 activation [M, K], each with 1x128 tile scales.

    Returns (q [M, K], s [M, K//128], qt [K, M], st [K, M//128]); needs M and K
    multiples of 128. ``qt`` is the quantized transpose (tiles run along M).
    """
    q, s = quantize_1x128(x)
    qt, st = quantize_1x128(x.t())
    return q, s, qt, st


def quant_transpose_bytes(m: int, k: int, in_bytes: int = 2) -> int:
    """Fewest bytes moved by quantize-with-transpose: read BF16 once, write two FP8 copies + scales."""
    return m * k * in_bytes + 2 * m * k + 4 * (m * (k // BLOCK) + k * (m // BLOCK))


def quantize_rowwise(x):
    """One scale per row of x [R, K] (reduction over K): (q fp8, scale float32 [R])."""
    import torch

    amax = x.float().abs().amax(dim=-1).clamp_min(1e-12)
    scale = (amax / E4M3_MAX).to(torch.float32)
    return (x.float() / scale.unsqueeze(-1)).clamp(-E4M3_MAX, E4M3_MAX).to(_fp8_dtype()), scale
