"""MoE grouped GEMM: many experts' GEMMs in one launch, contiguous layout.

After dispatch a GPU holds, for each of its ``G`` local experts, the tokens
routed to it; sorted by expert they form ``A [M_total, K]`` with cumulative
row ends ``ends[g]``. Each expert multiplies its rows by its own weight
``B[g] [N, K]``. FLOPs = 2 * M_total * N * K, whatever the split.

Variants compared on every shape:

* ``triton`` / ``triton:blockwise-1x128/128x128`` — our kernel
  (:mod:`calibration.kernels.grouped_gemm_triton`), BF16 or FP8 with
  DeepSeek's per-block scales (GPU; under the Triton interpreter when
  ``TRITON_INTERPRET=1``);
* ``torch._grouped_mm`` (BF16) and ``torch._scaled_grouped_mm:rowwise`` (FP8)
  when this torch build has them and they run on this device;
* ``loop-matmul`` / ``loop-<fp8 scaled_mm form>`` — one matmul per expert, the
  baseline that is always available.

**Token skew.** Routing is never perfectly balanced. The table's row is the
balanced split (``m_per_group`` = tokens per expert); for the scenario's own
shapes a Zipf(1.0) split of the same tokens (expert i gets a share
proportional to 1/(i+1)) is measured too and stored in the row's ``skewed``
field: the simulator may use it to model imbalance.
"""

from __future__ import annotations

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
    sig,
)
from calibration.timing import TimingConfig, time_fn

CHECK_ROWS_TOTAL = 128


def token_counts(groups: int, total: int, skew: str = "balanced") -> list[int]:
    """Tokens per expert summing to ``total``: ``balanced`` or ``zipf<alpha>``."""
    if skew == "balanced":
        weights = [1.0] * groups
    elif skew.startswith("zipf"):
        alpha = float(skew[4:] or 1.0)
        weights = [1.0 / (i + 1) ** alpha for i in range(groups)]
    else:
        raise ValueError(f"grouped_gemm: unknown skew {skew!r}; allowed: balanced, zipf<alpha>")
    s = sum(weights)
    counts = [int(total * w / s) for w in weights]
    for i in range(total - sum(counts)):
        counts[i % groups] += 1
    return counts


def _ends(sizes, device):
    import torch

    return torch.tensor(sizes, dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)


def _bounds(sizes):
    start = 0
    for g, size in enumerate(sizes):
        yield g, start, start + size
        start += size


def _check_rows(ctx: Context, sizes):
    """Per group, a few row indices to compare against the float64 reference."""
    import torch

    per = max(2, CHECK_ROWS_TOTAL // max(1, len(sizes)))
    out = []
    for g, s, e in _bounds(sizes):
        if e > s:
            idx = torch.randperm(e - s, generator=ctx.generator(g + 97))[:per] + s
            out.append((g, idx.sort().values.to(ctx.device)))
    return out


def _check(ctx, out, a_deq, b_deq, sizes, tol, what) -> float:
    """Compare sampled rows of ``out`` with A[rows] @ B[g].T in float64."""
    import torch

    got, ref = [], []
    for g, rows in _check_rows(ctx, sizes):
        got.append(out[rows])
        ref.append(a_deq(rows).double() @ b_deq(g).double().t())
    return check_close(torch.cat(got), torch.cat(ref), tol, what)


def _make_sets(ctx, sizes, n, k, fp8: bool, salt: int):
    """Input sets for rotation: dicts with bf16 or fp8 (+ block and rowwise scales)."""
    import torch

    m_total, g = sum(sizes), len(sizes)
    per_set = (m_total * k + g * n * k) * (1 if fp8 else 2) + 2 * m_total * n
    sets = []
    for i in range(ctx.n_buffers(per_set)):
        a = randn((m_total, k), ctx, salt + 100 * i + 1)
        b = randn((g, n, k), ctx, salt + 100 * i + 2)
        d = {"ends": _ends(sizes, ctx.device), "sizes": sizes}
        if fp8:
            d["aq"], d["a_s"] = q8.quantize_1x128(a)
            bq, bs = zip(*(q8.quantize_128x128(b[j]) for j in range(g)))
            d["bq"], d["b_s"] = torch.stack(bq), torch.stack(bs)
        else:
            d["a"], d["b"] = a.to(torch.bfloat16), b.to(torch.bfloat16)
        sets.append(d)
    return sets


def _deq(d, fp8: bool):
    if fp8:
        return (lambda rows: q8.dequantize_1x128(d["aq"][rows], d["a_s"][rows]),
                lambda g: q8.dequantize_128x128(d["bq"][g], d["b_s"][g]))
    return (lambda rows: d["a"][rows], lambda g: d["b"][g])


# --------------------------------------------------------------------------- variants


def time_triton_grouped(ctx: Context, groups: int, sizes, n: int, k: int, fp8: bool, label: str,
                        sets=None) -> Measured:
    """Our Triton kernel: check, try the launch configs, keep the fastest."""
    if ctx.triton_mode is None:
        raise VariantUnavailable("Triton needs a GPU (or TRITON_INTERPRET=1 for the interpreter)")
    import torch

    from calibration.kernels import grouped_gemm_triton as tk

    sets = sets or _make_sets(ctx, sizes, n, k, fp8, salt=11)
    configs = [tk.INTERPRETER_CONFIG] if ctx.triton_mode == "interpreter" else list(tk.GPU_CONFIGS[: 2 if ctx.quick else None])
    best: Measured | None = None
    for cfg in configs:
        if fp8 and q8.BLOCK % cfg["BLOCK_K"]:
            continue
        prepared = []
        for d in sets:
            sched = tk.build_schedule(d["ends"], cfg["BLOCK_M"], device=ctx.device)
            out = torch.empty((sum(sizes), n), device=ctx.device, dtype=torch.bfloat16)
            if fp8:  # activation scales M-major, as DeepGEMM keeps them
                args = (d["aq"], d["bq"], d["ends"])
                kw = dict(a_scale=d["a_s"].t().contiguous().t(), b_scale=d["b_s"])
            else:
                args, kw = (d["a"], d["b"], d["ends"]), {}
            prepared.append((args, dict(kw, out=out, schedule=sched, config=cfg)))
        args, kw = prepared[0]
        kw["out"].fill_(float("nan"))  # poison: every row must be written
        out = tk.grouped_gemm(*args, **kw)
        if sum(sizes) and not torch.isfinite(out.float()).all():
            raise KernelCheckError(f"{label} triton {cfg}: output rows left unwritten (NaN poison survived)")
        a_deq, b_deq = _deq(sets[0], fp8)
        err = _check(ctx, out, a_deq, b_deq, sizes, TOL["fp8" if fp8 else "bf16"], f"{label} triton {cfg}")
        if ctx.triton_mode == "interpreter":  # correctness is the point there; time one call
            t = time_fn(lambda p: tk.grouped_gemm(*p[0], **p[1]), prepared[:1], ctx.device,
                        TimingConfig(warmup=0, min_reps=1, max_reps=1))
        else:
            t = ctx.time(lambda p: tk.grouped_gemm(*p[0], **p[1]), prepared)
        if best is None or t.median_ms < best.timing.median_ms:
            best = Measured(t, err)
    if best is None:
        raise VariantUnavailable("no Triton config fits")
    return best


def _torch_grouped_bf16(ctx, sets, sizes, label) -> Measured:
    import torch

    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        raise VariantUnavailable("torch._grouped_mm absent in this torch build")
    call = lambda d: fn(d["a"], d["b"].transpose(-2, -1), offs=d["ends"])  # noqa: E731
    out = call(sets[0])
    a_deq, b_deq = _deq(sets[0], False)
    err = _check(ctx, out, a_deq, b_deq, sizes, TOL["bf16"], f"{label} torch._grouped_mm")
    return Measured(ctx.time(call, sets), err)


def _loop_bf16(ctx, sets, sizes, label) -> Measured:
    import torch

    def call(d):
        outs = [torch.matmul(d["a"][s:e], d["b"][g].t()) for g, s, e in _bounds(d["sizes"]) if e > s]
        return torch.cat(outs)

    out = call(sets[0])
    a_deq, b_deq = _deq(sets[0], False)
    err = _check(ctx, out, a_deq, b_deq, sizes, TOL["bf16"], f"{label} loop-matmul")
    return Measured(ctx.time(call, sets), err)


def _loop_fp8(ctx, sets, sizes, label) -> Measured:
    """One FP8 scaled matmul per expert: blockwise if accepted, else tensorwise."""
    import torch

    sup = ctx.fp8
    if sup is None or (sup.blockwise is None and sup.tensorwise is None):
        raise VariantUnavailable("no FP8 scaled matmul accepted here")
    if sup.blockwise is not None:
        def call(d):
            return torch.cat([sup.blockwise(d["aq"][s:e], d["a_s"][s:e], d["bq"][g], d["b_s"][g])
                              for g, s, e in _bounds(d["sizes"]) if e > s])
        a_deq, b_deq = _deq(sets[0], True)
    else:
        # Tensorwise fast path on the same FP8 data, with unit scales (same FLOPs and bytes).
        one = torch.ones((), device=ctx.device, dtype=torch.float32)

        def call(d):
            return torch.cat([sup.tensorwise(d["aq"][s:e], d["bq"][g], one, one)
                              for g, s, e in _bounds(d["sizes"]) if e > s])
        a_deq = lambda rows: sets[0]["aq"][rows].float()  # noqa: E731
        b_deq = lambda g: sets[0]["bq"][g].float()  # noqa: E731
    out = call(sets[0])
    err = _check(ctx, out, a_deq, b_deq, sizes, TOL["fp8"], f"{label} loop fp8")
    return Measured(ctx.time(call, sets), err)


def _torch_scaled_grouped_rowwise(ctx, sets, sizes, label) -> Measured:  # pragma: no cover - GPU path
    import torch

    fn = getattr(torch, "_scaled_grouped_mm", None)
    if fn is None or not ctx.is_cuda:
        raise VariantUnavailable("torch._scaled_grouped_mm needs a CUDA build with it")
    rw = []
    for d in sets:
        a = q8.dequantize_1x128(d["aq"], d["a_s"])
        aq, sa = q8.quantize_rowwise(a)
        bq, sb = zip(*(q8.quantize_rowwise(q8.dequantize_128x128(d["bq"][g], d["b_s"][g])) for g in range(len(sizes))))
        rw.append((aq, torch.stack(bq), sa, torch.stack(sb), d["ends"]))
    call = lambda t: fn(t[0], t[1].transpose(-2, -1), t[2], t[3], offs=t[4], out_dtype=torch.bfloat16)  # noqa: E731
    out = call(rw[0])
    aq, bq, sa, sb, _ = rw[0]
    err = _check(ctx, out, lambda rows: aq[rows].float() * sa[rows, None], lambda g: bq[g].float() * sb[g][:, None],
                 sizes, TOL["fp8"], f"{label} torch._scaled_grouped_mm")
    return Measured(ctx.time(call, rw), err)


def _variants(ctx, sizes, n, k, dtype, label):
    fp8 = dtype == "fp8"
    sets_cache: dict = {}

    def sets():
        if "s" not in sets_cache:
            sets_cache["s"] = _make_sets(ctx, sizes, n, k, fp8, salt=len(sizes) * 7 + n + k)
        return sets_cache["s"]

    out = []
    if ctx.triton_mode is not None:
        name = "triton:blockwise-1x128/128x128" if fp8 else "triton"
        if ctx.triton_mode == "interpreter":
            name += "(interpreter)"
        out.append((name, lambda: time_triton_grouped(ctx, len(sizes), sizes, n, k, fp8, label, sets=sets())))
    if fp8:
        if ctx.is_cuda:
            out.append(("torch._scaled_grouped_mm:rowwise", lambda: _torch_scaled_grouped_rowwise(ctx, sets(), sizes, label)))
        sup = ctx.fp8
        loop_name = "loop-" + ((sup.blockwise_api or "").split(" (")[0] or (sup.tensorwise_api or "scaled_mm")) if sup else "loop-fp8"
        out.append((loop_name, lambda: _loop_fp8(ctx, sets(), sizes, label)))
    else:
        out.append(("torch._grouped_mm", lambda: _torch_grouped_bf16(ctx, sets(), sizes, label)))
        out.append(("loop-matmul", lambda: _loop_bf16(ctx, sets(), sizes, label)))
    return out


def measure(ctx: Context, s, dtype: str) -> dict | None:
    """One ``grouped_gemm`` row (balanced split; skewed splits in ``skewed``), or None."""
    if dtype not in ("bf16", "fp8"):
        raise ValueError(f"grouped_gemm: unknown dtype {dtype!r}")
    label = f"grouped_gemm {dtype} G={s.groups} m/G={s.m_per_group} n={s.n} k={s.k}"
    if dtype == "fp8" and (s.k % q8.BLOCK or s.n % 16):
        ctx.skipped.append({"kernel": label, "variant": "*", "reason": "FP8 block scaling needs K a multiple of 128 (and N of 16)"})
        return None
    total = s.groups * s.m_per_group
    flops = 2.0 * total * s.n * s.k
    res = run_variants(ctx, label, _variants(ctx, token_counts(s.groups, total), s.n, s.k, dtype, label))
    if res is None:
        return None
    name, best, alts = res
    row = {"dtype": dtype, "groups": s.groups, "m_per_group": s.m_per_group, "n": s.n, "k": s.k,
           "tflops": sig(flops / (best.timing.median_ms * 1e-3) / 1e12), "flops": flops, "skew": "balanced"}
    if s.role:
        row["role"] = s.role
    row.update(row_fields(name, best, alts))
    skewed = {}
    for skew in s.skews:
        sizes = token_counts(s.groups, total, skew)
        r = run_variants(ctx, f"{label} {skew}", _variants(ctx, sizes, s.n, s.k, dtype, f"{label} {skew}"))
        if r is not None:
            skewed[skew] = {"ms": sig(r[1].timing.median_ms), "tflops": sig(flops / (r[1].timing.median_ms * 1e-3) / 1e12),
                            "max_m": max(sizes), "variant": r[0]}
    if skewed:
        row["skewed"] = skewed
    return row
