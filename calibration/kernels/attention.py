"""MLA attention, forward and backward, through ``scaled_dot_product_attention``.

In training, DeepSeek's multi-head latent attention expands its compressed KV
back to full heads, so the core is ordinary causal attention with query/key
head dim ``nope + rope`` (V3: 128 + 64 = 192) and a *different* value head dim
(128). torch's SDPA accepts a different v dim; on a GPU each backend that takes
the shape (flash, memory-efficient, cuDNN) is timed and the fastest kept.

FLOP convention (stored in each row's ``flops``; the simulator's workload uses
the same): with ``P = seq^2 / 2`` query-key pairs when causal (``seq^2``
otherwise),

* forward  = 2 * batch * heads * P * (qk_dim + v_dim)   (QK^T and PV),
* backward = 2.5 x forward (FlashAttention's convention: five matmuls against
  two). Counting each backward matmul with its own head dim would give
  2 P (3 qk_dim + 2 v_dim), 4% more for MLA's 192/128; the convention is kept so
  that ``time = flops / tflops`` gives back the measured time.

NSA-style block-sparse attention is not measured (optional in the issue).
"""

from __future__ import annotations

import contextlib

from calibration.kernels.common import (
    TOL,
    Context,
    Measured,
    VariantUnavailable,
    check_close,
    randn,
    row_fields,
    run_variants,
    sig,
)

CHECK_HEADS = 2
CHECK_ELEMENTS = 1 << 27  # query rows x keys of the float64 check's scores, per head (see _checked_rows)
CHECK_MIN_ROWS = 256  # however long the sequence, at least this many query rows are checked


def attention_flops(batch: int, seq: int, heads: int, qk_dim: int, v_dim: int, causal: bool, direction: str) -> float:
    pairs = seq * seq * (0.5 if causal else 1.0)
    fwd = 2.0 * batch * heads * pairs * (qk_dim + v_dim)
    return fwd if direction == "fwd" else 2.5 * fwd


def _backends(ctx: Context) -> list[tuple[str, object]]:
    """(name, SDPBackend or None) pairs worth trying on this device."""
    if not ctx.is_cuda:
        return [("sdpa", None)]
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:  # pragma: no cover
        return [("sdpa", None)]
    names = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
    return [(f"sdpa-{n.lower().replace('_attention', '')}", getattr(SDPBackend, n)) for n in names if hasattr(SDPBackend, n)]


def _backend_ctx(backend):
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel([backend])


def _inputs(ctx: Context, s, i: int, grad: bool):
    import torch

    shape_qk = (s.batch, s.heads, s.seq, s.qk_dim)
    q = randn(shape_qk, ctx, 1000 * i + 1, torch.bfloat16)
    k = randn(shape_qk, ctx, 1000 * i + 2, torch.bfloat16)
    v = randn((s.batch, s.heads, s.seq, s.v_dim), ctx, 1000 * i + 3, torch.bfloat16)
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def _n_sets(ctx: Context, s, grad: bool) -> int:
    per = 2 * s.batch * s.heads * s.seq * (2 * s.qk_dim + 2 * s.v_dim) * (2 if grad else 1)
    return ctx.n_buffers(per)


def _checked_rows(s):
    """The query rows the float64 check covers: all of them, or on a long sequence a third of its budget
    at the start, a third at the end and a third drawn from between (seeded by the length), as many
    as keep the reference's rows x seq score matrix near ``CHECK_ELEMENTS``.

    The reference for a set of query rows is exact: each row attends to the keys at or before its own
    position (causal) or to all keys, and nothing else. In backward, an output gradient that is zero
    outside the checked rows makes the kernel's query gradient zero there and its key and value
    gradients those of the checked rows alone, so whole gradient tensors are compared."""
    import torch

    budget = max(CHECK_MIN_ROWS, CHECK_ELEMENTS // s.seq)
    if s.seq <= budget:
        return torch.arange(s.seq)
    third = budget // 3
    between = torch.randperm(s.seq - 2 * third, generator=torch.Generator().manual_seed(s.seq))[:third] + third
    return torch.cat([torch.arange(third), between.sort().values, torch.arange(s.seq - third, s.seq)])


def _reference_rows(q, k, v, rows, causal: bool):
    """Float64 attention output at query ``rows`` of [h, S, D] tensors (autograd-capable)."""
    import torch

    scale = q.shape[-1] ** -0.5
    scores = (q[:, rows] @ k.transpose(-2, -1)) * scale
    if causal:
        keys = torch.arange(k.shape[-2], device=q.device)
        scores = scores.masked_fill(keys[None, :] > rows.to(q.device)[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _heads(ctx: Context, s):
    import torch

    return torch.randperm(s.heads, generator=ctx.generator(5))[: min(CHECK_HEADS, s.heads)].to(ctx.device)


def _fwd(ctx: Context, s, backend, label: str) -> Measured:
    import torch.nn.functional as F

    sets = [_inputs(ctx, s, i, False) for i in range(_n_sets(ctx, s, False))]
    call = lambda t: F.scaled_dot_product_attention(*t, is_causal=s.causal)  # noqa: E731
    with _backend_ctx(backend):
        q, k, v = sets[0]
        out = call(sets[0])
        h = _heads(ctx, s)
        rows = _checked_rows(s).to(ctx.device)
        ref = _reference_rows(q[0, h].double(), k[0, h].double(), v[0, h].double(), rows, s.causal)
        err = check_close(out[0, h][:, rows], ref, TOL["bf16"], f"{label} forward")
        return Measured(ctx.time(call, sets), err)


def _bwd(ctx: Context, s, backend, label: str) -> Measured:
    import torch
    import torch.nn.functional as F

    with _backend_ctx(backend):
        graphs = []
        for i in range(_n_sets(ctx, s, True)):
            q, k, v = _inputs(ctx, s, i, True)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=s.causal)
            dout = randn(out.shape, ctx, 1000 * i + 4, torch.bfloat16)
            graphs.append((out, (q, k, v), dout))
        out, (q, k, v), dout = graphs[0]
        rows = _checked_rows(s).to(ctx.device)
        if len(rows) < s.seq:  # the check's output gradient is zero off the checked rows (timing keeps its own)
            only = torch.zeros_like(dout)
            only[:, :, rows] = dout[:, :, rows]
            dout = only
        grads = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        h = _heads(ctx, s)
        leaves = [t[0, h].detach().double().requires_grad_(True) for t in (q, k, v)]
        ref_out = _reference_rows(*leaves, rows, s.causal)
        ref_grads = torch.autograd.grad(ref_out, leaves, dout[0, h][:, rows].double())
        err = max(check_close(g[0, h], r, TOL["bf16-bwd"], f"{label} backward d{name}")
                  for g, r, name in zip(grads, ref_grads, "qkv"))
        call = lambda t: torch.autograd.grad(t[0], t[1], t[2], retain_graph=True)  # noqa: E731
        return Measured(ctx.time(call, graphs), err)


def measure(ctx: Context, s, direction: str) -> dict | None:
    """One ``attention`` row (``direction`` "fwd" or "bwd") in BF16, or None."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"attention: direction must be fwd or bwd, got {direction!r}")
    label = f"attention {direction} b={s.batch} seq={s.seq} heads={s.heads} qk={s.qk_dim} v={s.v_dim}"
    fn = _fwd if direction == "fwd" else _bwd
    variants = [(name, (lambda b=b: fn(ctx, s, b, label))) for name, b in _backends(ctx)]
    res = run_variants(ctx, label, variants)
    if res is None:
        return None
    name, best, alts = res
    flops = attention_flops(s.batch, s.seq, s.heads, s.qk_dim, s.v_dim, s.causal, direction)
    row = {"dtype": "bf16", "direction": direction, "batch": s.batch, "seq": s.seq, "heads": s.heads,
           "qk_dim": s.qk_dim, "v_dim": s.v_dim, "causal": s.causal,
           "tflops": sig(flops / (best.timing.median_ms * 1e-3) / 1e12), "flops": flops}
    row.update(row_fields(name, best, alts))
    return row


__all__ = ["measure", "attention_flops", "VariantUnavailable"]
