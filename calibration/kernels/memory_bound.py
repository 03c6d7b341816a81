"""Memory-bound ops, each with an explicit byte count.

In DeepSeek's own training profile the ops between the GEMMs are a large share
of the time: FP8 quantization (with the transpose the backward needs), RMSNorm,
SwiGLU, the permute that sorts tokens by expert before the grouped GEMM and the
unpermute that brings them back (weighting the top-k outputs), residual adds.
Their time is bytes over bandwidth, so each row stores ``bytes``: the *fewest*
bytes the op must move (each input read once, each output written once), and
``gbps`` = bytes / median time. A fused kernel approaches the copy bandwidth; an
eager chain of torch ops scores lower, because it moves intermediates the
count leaves out. The simulator multiplies its own byte count for the op by
1 / gbps, so either way the time comes out as measured. Where Triton runs, our fused kernels
(:mod:`calibration.kernels.memory_triton`) are timed beside the eager chains and the faster is the
row; the simulator prices its one-kernel ops from eager rows only where no device-copy row can.

Ops (profile ``op`` names are the leaf names the simulator's workload gives
its memory ops, so that ``Profile.memory_gbps(name, bytes)`` finds them;
shapes [m, n] BF16, ``k`` = top-k):

=======================  =========================================================
``norm``                 RMSNorm y = x / rms(x) * w   read 2mn + 2n, write 2mn
``residual``             y = x + r                    read 4mn, write 2mn
``act``                  SwiGLU y = silu(g) * u, [m, 2n] -> [m, n]: read 4mn, write 2mn
``quant``                x -> FP8 x, 1x128 tiles along n: read 2mn, write mn + 4mn/128
``quant_t``              x -> FP8 x^T, 1x128 tiles along m: same bytes as ``quant``
``fp8_quant_transpose``  both of the above from one read: read 2mn, write 2mn + scales
``permute``              gather the m*k (token, expert) rows in expert order:
                         read 2mkn + 8mk (indices), write 2mkn
``unpermute``            weighted sum of each token's k expert rows:
                         read 2mkn + 12mk (weights, indices), write 2mn
``*``                    device copy (the generic row): read 2mn, write 2mn
=======================  =========================================================

A gather reads each source row once per output row (k times per token), which
is what ``permute`` counts, matching the simulator's 2 x rows x hidden.
"""

from __future__ import annotations

from calibration.kernels import fp8 as q8
from calibration.kernels.common import (
    TOL,
    Context,
    Measured,
    check_close,
    randn,
    row_fields,
    run_variants,
    sig,
)

QUANT_TOL = 0.06  # E4M3 keeps 3 mantissa bits: ~3% relative rounding error in norm


def op_bytes(op: str, m: int, n: int, k: int = 1) -> int:
    """Bytes moved by ``op`` on an [m, n] BF16 tensor (see the module table)."""
    scales = 4 * (m * n // q8.BLOCK)
    table = {
        "norm": 2 * m * n + 2 * n + 2 * m * n,
        "residual": 3 * 2 * m * n,
        "act": 2 * m * 2 * n + 2 * m * n,
        "quant": 2 * m * n + m * n + scales,
        "quant_t": 2 * m * n + m * n + scales,
        "fp8_quant_transpose": q8.quant_transpose_bytes(m, n),
        "permute": 2 * m * k * n + 8 * m * k + 2 * m * k * n,
        "unpermute": 2 * m * k * n + 12 * m * k + 2 * m * n,
        "*": 2 * 2 * m * n,
    }
    if op not in table:
        raise ValueError(f"memory_bound: unknown op {op!r}; allowed: {', '.join(table)}")
    return table[op]


def _rmsnorm(x, w, eps=1e-6):
    import torch
    import torch.nn.functional as F

    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def _swiglu(gu):
    import torch.nn.functional as F

    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


def _permute(x, experts, k):
    import torch

    order = torch.argsort(experts.flatten(), stable=True)
    return x.index_select(0, order // k), order


def _unpermute(y, inv, w):
    m, k = w.shape
    return (y.index_select(0, inv).view(m, k, -1) * w.unsqueeze(-1).to(y.dtype)).sum(1)


def _case(ctx: Context, s, i: int):
    """(call, args) for one input set of op ``s.op``."""
    import torch

    m, n, k = s.m, s.n, s.k
    bf = torch.bfloat16
    if s.op == "norm":
        return _rmsnorm, (randn((m, n), ctx, i + 1, bf), randn((n,), ctx, i + 2, bf))
    if s.op == "residual":
        return torch.add, (randn((m, n), ctx, i + 1, bf), randn((m, n), ctx, i + 2, bf))
    if s.op == "act":
        return _swiglu, (randn((m, 2 * n), ctx, i + 1, bf),)
    if s.op == "quant":
        return q8.quantize_1x128, (randn((m, n), ctx, i + 1, bf),)
    if s.op == "quant_t":
        return (lambda x: q8.quantize_1x128(x.t())), (randn((m, n), ctx, i + 1, bf),)
    if s.op == "fp8_quant_transpose":
        return q8.quantize_transpose_1x128, (randn((m, n), ctx, i + 1, bf),)
    if s.op == "permute":
        experts = torch.randint(0, 64, (m, k), generator=ctx.generator(i + 2)).to(ctx.device)
        return (lambda x, e: _permute(x, e, k)), (randn((m, n), ctx, i + 1, bf), experts)
    if s.op == "unpermute":
        inv = torch.randperm(m * k, generator=ctx.generator(i + 2)).to(ctx.device)
        w = torch.rand(m, k, generator=ctx.generator(i + 3)).to(ctx.device)
        return _unpermute, (randn((m * k, n), ctx, i + 1, bf), inv, w)
    if s.op == "*":
        return (lambda src, dst: dst.copy_(src)), (randn((m, n), ctx, i + 1, bf), randn((m, n), ctx, i + 2, bf))
    raise ValueError(f"memory_bound: unknown op {s.op!r}")


def _check(s, out, args, label) -> float:
    """Compare with a float64 computation of the op (exact ops must be exact)."""
    import torch

    x = args[0].double()
    if s.op == "norm":
        ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * args[1].double()
        return check_close(out, ref, TOL["bf16"], label)
    if s.op == "residual":
        return check_close(out, x + args[1].double(), TOL["bf16"], label)
    if s.op == "act":
        g, u = x.chunk(2, dim=-1)
        return check_close(out, g * torch.sigmoid(g) * u, TOL["bf16"], label)
    if s.op == "quant":
        return check_close(q8.dequantize_1x128(*out), x, QUANT_TOL, label)
    if s.op == "quant_t":
        return check_close(q8.dequantize_1x128(*out), x.t(), QUANT_TOL, label)
    if s.op == "fp8_quant_transpose":
        q, sc, qt, st = out
        e1 = check_close(q8.dequantize_1x128(q, sc), x, QUANT_TOL, label + " (x)")
        e2 = check_close(q8.dequantize_1x128(qt, st), x.t(), QUANT_TOL, label + " (x^T)")
        return max(e1, e2)
    if s.op == "permute":
        y, order = out
        return check_close(y, x[order // s.k], 0.0, label)
    if s.op == "unpermute":
        inv, w = args[1], args[2].double()
        ref = (x[inv].view(s.m, s.k, -1) * w.unsqueeze(-1)).sum(1)
        return check_close(out, ref, TOL["bf16"], label)
    if s.op == "*":
        return check_close(out, x, 0.0, label)
    raise ValueError(s.op)


# The ops our Triton kernels run fused (calibration.kernels.memory_triton), as (kernel, inputs) -> output
# in the eager call's form; the others (residual, permute, unpermute) are one or two kernels eagerly too.
FUSED_OPS = ("norm", "act", "quant", "quant_t", "fp8_quant_transpose")


def _fused(op: str):
    from calibration.kernels import memory_triton as mt

    return {
        "norm": lambda x, w: mt.rmsnorm(x, w),
        "act": mt.swiglu,
        "quant": lambda x: mt.quantize(x),
        "quant_t": lambda x: mt.quantize(x, rowwise=False, colwise=True),
        "fp8_quant_transpose": lambda x: mt.quantize(x, rowwise=True, colwise=True),
    }[op]


def _variant(ctx: Context, s, label: str, fused: bool = False) -> Measured:
    nbytes = op_bytes(s.op, s.m, s.n, s.k)
    cases = [_case(ctx, s, 10 * i) for i in range(ctx.n_buffers(nbytes))]
    if fused:
        kernel = _fused(s.op)
        cases = [(kernel, args) for _, args in cases]
    call, args = cases[0]
    err = _check(s, call(*args), args, label + (" (triton)" if fused else ""))
    return Measured(ctx.time(lambda c: c[0](*c[1]), cases), err)


def measure(ctx: Context, s) -> dict | None:
    """One ``memory_bound`` row for op ``s.op`` on [s.m, s.n] (top-k ``s.k``), or None: torch's eager
    implementation and, where Triton runs, our fused kernel; the faster is the row."""
    label = f"memory_bound {s.op} m={s.m} n={s.n}" + (f" k={s.k}" if s.k > 1 else "")
    variant = "copy_" if s.op == "*" else "torch-eager"
    variants = [(variant, lambda: _variant(ctx, s, label))]
    if s.op in FUSED_OPS and ctx.triton_mode in ("gpu", "interpreter"):
        variants.append(("triton-fused", lambda: _variant(ctx, s, label, fused=True)))
    res = run_variants(ctx, label, variants)
    if res is None:
        return None
    name, best, alts = res
    nbytes = op_bytes(s.op, s.m, s.n, s.k)
    row = {"op": s.op, "bytes": nbytes, "gbps": sig(nbytes / (best.timing.median_ms * 1e-3) / 1e9),
           "m": s.m, "n": s.n, "dtype": "bf16"}
    if s.k > 1:
        row["topk"] = s.k
    row.update(row_fields(name, best, alts))
    return row
