"""Dense GEMM, BF16 and FP8 with DeepSeek's fine-grained scaling.

``C [M, N] = A [M, K] @ B [N, K].T`` with B stored K-contiguous (a weight in
``nn.Linear`` layout). FLOPs = 2 M N K; the row's ``tflops`` is that over the
median time.

**FP8.** DeepSeek-V3 scales activations per 1x128 tile and weights per 128x128
block (see :mod:`calibration.kernels.fp8`). Whether torch's scaled matmul
accepts those block scales depends on the torch build and GPU, so it is
*detected* (:func:`probe_fp8`), never inferred from a version: each candidate
API (``torch.nn.functional.scaled_mm``, ``torch._scaled_mm``) and scale layout
is tried on a small problem and accepted only if it matches the float64
product of the dequantized inputs. If no blockwise form is accepted, FP8 is
timed through the tensorwise-scaled fast path (same FLOPs and operand bytes,
one scale per tensor) and the row's ``variant`` says so; the blockwise result
itself is then only available as the dequantize-per-block reference. On a GPU
our Triton kernel (a grouped GEMM with one group) runs the real blockwise
scheme beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from calibration.kernels import fp8 as q8
from calibration.kernels.common import (
    TOL,
    Context,
    KernelCheckError,
    Measured,
    VariantUnavailable,
    check_close,
    randn,
    row_fields,
    run_variants,
    sample_rows,
    sig,
)

CHECK_ROWS = 128


@dataclass
class Fp8Support:
    """What FP8 matmul forms this torch build accepts on this device (probed)."""

    tensorwise_api: str | None = None
    tensorwise: Callable | None = None  # (a_q, b_q [N,K], sa, sb) -> bf16 [M, N]
    blockwise_api: str | None = None
    # The accepted blockwise form, split so that scale layouts are prepared outside the timed call:
    # call(a_q, b_q, prep_a(a_s [M, K/128]), prep_b(b_s [N/128, K/128])) -> bf16 [M, N].
    blockwise_call: Callable | None = None
    prep_a: Callable | None = None
    prep_b: Callable | None = None
    tried: list[str] = field(default_factory=list)

    @property
    def blockwise(self) -> Callable | None:
        """(a_q, a_s, b_q, b_s) -> bf16, preparing the scale layouts on each call."""
        if self.blockwise_call is None:
            return None
        return lambda a, a_s, b, b_s: self.blockwise_call(a, b, self.prep_a(a_s), self.prep_b(b_s))

    def describe(self) -> str:
        return (f"fp8 blockwise: {self.blockwise_api or 'not accepted'}; "
                f"tensorwise: {self.tensorwise_api or 'not accepted'}")


def _private_scaled_mm(a, b, sa, sb):
    """torch._scaled_mm on (a [M,K], b [N,K]) with whatever scale shapes the caller passes."""
    import torch

    return torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)


def _tensorwise_candidates():
    import torch
    import torch.nn.functional as F

    out = []
    if hasattr(F, "scaled_mm") and hasattr(F, "ScalingType"):
        st = F.ScalingType
        out.append(("F.scaled_mm", lambda a, b, sa, sb: F.scaled_mm(
            a, b.t(), sa, st.TensorWise, sb, st.TensorWise, output_dtype=torch.bfloat16)))
    if hasattr(torch, "_scaled_mm"):
        out.append(("torch._scaled_mm", _private_scaled_mm))
    return out


def _blockwise_candidates():
    """(name, fn) pairs over APIs and the scale layouts they might want."""
    import torch
    import torch.nn.functional as F

    a_layouts = {
        "sa[M,K/128]": lambda s: s.contiguous(),
        "sa[M,K/128] M-major": lambda s: s.t().contiguous().t(),
    }
    b_layouts = {
        "sb[N/128,K/128]": lambda s: s.contiguous(),
        "sb.T[K/128,N/128]": lambda s: s.t(),
        "sb.T contiguous": lambda s: s.t().contiguous(),
    }
    apis = []
    if hasattr(F, "scaled_mm") and hasattr(F, "ScalingType") and hasattr(F.ScalingType, "BlockWise1x128"):
        st = F.ScalingType
        apis.append(("F.scaled_mm", lambda a, b, sa, sb: F.scaled_mm(
            a, b.t(), sa, st.BlockWise1x128, sb, st.BlockWise128x128, output_dtype=torch.bfloat16)))
    if hasattr(torch, "_scaled_mm"):
        apis.append(("torch._scaled_mm", _private_scaled_mm))
    return [(f"{api}:blockwise-1x128/128x128 ({an}, {bn})", call, af, bf)
            for api, call in apis for an, af in a_layouts.items() for bn, bf in b_layouts.items()]


def probe_fp8(device: Any, seed: int = 0) -> Fp8Support:
    """Find which FP8 scaled-matmul forms work here, checked against float64."""
    import torch

    support = Fp8Support()
    if not hasattr(torch, "float8_e4m3fn"):
        support.tried.append("torch has no float8_e4m3fn")
        return support
    g = torch.Generator().manual_seed(seed)
    m = n = k = 256
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(n, k, generator=g).to(device)
    # Tensorwise fast path.
    aq, sa = q8.quantize_tensorwise(a)
    bq, sb = q8.quantize_tensorwise(b)
    ref = (aq.double() * sa.double()) @ (bq.double() * sb.double()).t()
    for name, fn in _tensorwise_candidates():
        try:
            check_close(fn(aq, bq, sa, sb), ref, TOL["fp8"], f"probe {name}")
        except Exception as e:  # refused layout or wrong result: try the next form
            support.tried.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            continue
        support.tensorwise_api, support.tensorwise = f"{name}:tensorwise", fn
        break
    # Blockwise (DeepSeek) scaling.
    aq, a_s = q8.quantize_1x128(a)
    bq, b_s = q8.quantize_128x128(b)
    ref = q8.dequantize_1x128(aq, a_s).double() @ q8.dequantize_128x128(bq, b_s).double().t()
    for name, call, prep_a, prep_b in _blockwise_candidates():
        try:
            check_close(call(aq, bq, prep_a(a_s), prep_b(b_s)), ref, TOL["fp8"], f"probe {name}")
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            support.tried.append(f"{name}: {type(e).__name__}: {first}")
            continue
        support.blockwise_api, support.blockwise_call, support.prep_a, support.prep_b = name, call, prep_a, prep_b
        break
    return support


# --------------------------------------------------------------------------- measurement


def gemm_flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def _bf16_setup(ctx: Context, s, label: str):
    """(kernel, input sets, check error) for cuBLAS BF16 through torch.matmul, checked."""
    import torch

    nbytes = 2 * (s.m * s.k + s.n * s.k + s.m * s.n)
    sets = [(randn((s.m, s.k), ctx, 10 * i + 1, torch.bfloat16), randn((s.n, s.k), ctx, 10 * i + 2, torch.bfloat16))
            for i in range(ctx.n_buffers(nbytes))]
    a, b = sets[0]
    out = torch.matmul(a, b.t())
    rows = sample_rows(s.m, CHECK_ROWS, ctx).to(ctx.device)
    err = check_close(out[rows], a[rows].double() @ b.double().t(), TOL["bf16"], f"{label} bf16 torch.matmul")
    return (lambda t: torch.matmul(t[0], t[1].t())), sets, err


def _bf16_variant(ctx: Context, s, label: str) -> Measured:
    fn, sets, err = _bf16_setup(ctx, s, label)
    return Measured(ctx.time(fn, sets), err)


def _fp8_inputs(ctx: Context, s, i: int):
    a = randn((s.m, s.k), ctx, 10 * i + 3)
    b = randn((s.n, s.k), ctx, 10 * i + 4)
    return a, b


def _fp8_blockwise_setup(ctx: Context, s, label: str):
    """(kernel, input sets, check error) for FP8 with DeepSeek's 1x128 / 128x128 scales, checked."""
    sup = ctx.fp8
    if sup is None or sup.blockwise is None:
        raise VariantUnavailable("blockwise FP8 scaling not accepted by torch's scaled matmul here")
    nbytes = s.m * s.k + s.n * s.k + 2 * s.m * s.n
    sets, raw = [], None
    for i in range(ctx.n_buffers(nbytes)):
        a, b = _fp8_inputs(ctx, s, i)
        aq, a_s = q8.quantize_1x128(a)
        bq, b_s = q8.quantize_128x128(b)
        raw = raw or (aq, a_s, bq, b_s)
        sets.append((aq, bq, sup.prep_a(a_s), sup.prep_b(b_s)))  # scale layouts ready before timing
    aq, a_s, bq, b_s = raw
    out = sup.blockwise_call(*sets[0])
    rows = sample_rows(s.m, CHECK_ROWS, ctx).to(ctx.device)
    ref = q8.dequantize_1x128(aq[rows], a_s[rows]).double() @ q8.dequantize_128x128(bq, b_s).double().t()
    err = check_close(out[rows], ref, TOL["fp8"], f"{label} {sup.blockwise_api}")
    return (lambda t: sup.blockwise_call(*t)), sets, err


def _fp8_blockwise_variant(ctx: Context, s, label: str) -> Measured:
    fn, sets, err = _fp8_blockwise_setup(ctx, s, label)
    return Measured(ctx.time(fn, sets), err)


def _fp8_tensorwise_setup(ctx: Context, s, label: str):
    """(kernel, input sets, check error) for FP8 with one scale per tensor, checked."""
    sup = ctx.fp8
    if sup is None or sup.tensorwise is None:
        raise VariantUnavailable("no FP8 scaled matmul accepted here")
    nbytes = s.m * s.k + s.n * s.k + 2 * s.m * s.n
    sets = []
    for i in range(ctx.n_buffers(nbytes)):
        a, b = _fp8_inputs(ctx, s, i)
        aq, sa = q8.quantize_tensorwise(a)
        bq, sb = q8.quantize_tensorwise(b)
        sets.append((aq, bq, sa, sb))
    aq, bq, sa, sb = sets[0]
    out = sup.tensorwise(aq, bq, sa, sb)
    rows = sample_rows(s.m, CHECK_ROWS, ctx).to(ctx.device)
    ref = (aq[rows].double() * sa.double()) @ (bq.double() * sb.double()).t()
    err = check_close(out[rows], ref, TOL["fp8"], f"{label} {sup.tensorwise_api}")
    return (lambda t: sup.tensorwise(*t)), sets, err


def _fp8_tensorwise_variant(ctx: Context, s, label: str) -> Measured:
    fn, sets, err = _fp8_tensorwise_setup(ctx, s, label)
    return Measured(ctx.time(fn, sets), err)


def _fp8_triton_variant(ctx: Context, s, label: str) -> Measured:  # pragma: no cover - GPU path
    if ctx.triton_mode != "gpu":
        raise VariantUnavailable("Triton blockwise FP8 GEMM runs on a GPU only in the harness")
    from calibration.kernels.grouped_gemm import time_triton_grouped

    return time_triton_grouped(ctx, groups=1, sizes=[s.m], n=s.n, k=s.k, fp8=True, label=label)


def _candidates(ctx: Context, s, dtype: str, label: str) -> list[tuple[str, Callable | None, Callable[[], Measured]]]:
    """(variant name, setup or None, timed run) of every GEMM that runs ``dtype`` here, in order of
    preference: cuBLAS BF16; FP8 blockwise, FP8 tensorwise, then our Triton blockwise kernel (GPU only,
    no setup of its own: the sustained-load run does not use it)."""
    if dtype == "bf16":
        return [("torch.matmul", lambda: _bf16_setup(ctx, s, label), lambda: _bf16_variant(ctx, s, label))]
    if dtype != "fp8":
        raise ValueError(f"gemm: unknown dtype {dtype!r}")
    sup = ctx.fp8 or Fp8Support()
    out: list[tuple[str, Callable | None, Callable[[], Measured]]] = []
    if sup.blockwise is not None:
        out.append((sup.blockwise_api.split(" (")[0], lambda: _fp8_blockwise_setup(ctx, s, label),
                    lambda: _fp8_blockwise_variant(ctx, s, label)))
    if sup.tensorwise is not None:
        out.append((sup.tensorwise_api, lambda: _fp8_tensorwise_setup(ctx, s, label),
                    lambda: _fp8_tensorwise_variant(ctx, s, label)))
    if ctx.triton_mode == "gpu":
        out.append(("triton:blockwise-1x128/128x128", None, lambda: _fp8_triton_variant(ctx, s, label)))
    return out


def setup(ctx: Context, s, dtype: str, label: str):
    """(kernel, input sets, check error, variant name) of the first GEMM that runs ``dtype`` here
    (``_candidates``' order). Raises VariantUnavailable if none does."""
    for name, make, _ in _candidates(ctx, s, dtype, label):
        if make is not None:
            return (*make(), name)
    raise VariantUnavailable(f"no {dtype} GEMM runs here")


def measure(ctx: Context, s, dtype: str) -> dict | None:
    """One ``gemm`` table row for shape ``s`` in ``dtype`` ("bf16" or "fp8"), or None."""
    label = f"gemm {dtype} m={s.m} n={s.n} k={s.k}"
    if dtype == "fp8" and (s.k % q8.BLOCK or s.n % 16):
        ctx.skipped.append({"kernel": label, "variant": "*", "reason": "FP8 block scaling needs K a multiple of 128 (and N of 16)"})
        return None
    variants = [(name, run) for name, _, run in _candidates(ctx, s, dtype, label)]
    res = run_variants(ctx, label, variants)
    if res is None:
        return None
    name, best, alts = res
    flops = gemm_flops(s.m, s.n, s.k)
    row = {"dtype": dtype, "m": s.m, "n": s.n, "k": s.k,
           "tflops": sig(flops / (best.timing.median_ms * 1e-3) / 1e12), "flops": flops}
    if s.role:
        row["role"] = s.role
    row.update(row_fields(name, best, alts))
    if dtype == "fp8":
        row["fp8_scaling"] = "tensorwise" if name.endswith(":tensorwise") else "blockwise-1x128/128x128"
    return row


__all__ = ["Fp8Support", "probe_fp8", "measure", "gemm_flops", "KernelCheckError"]
