"""Compute under a reduced SM budget: a persistent GEMM on N of the GPU's SMs.

DeepSeek-V3 overlaps its all-to-all with computation by giving the
communication kernels some SMs (20 of the H800's 132), so the GEMMs beside them
run on the rest. How much slower is a GEMM on N SMs? Not simply N/total: a
GEMM may be memory-bound at the edges, and wave quantization changes with N.

A *persistent* Triton GEMM measures it: the grid has exactly N programs, each
looping over output tiles ``pid, pid + N, pid + 2N, ...``; with one program per
SM (the tile shape is chosen large enough that a second program does not fit
beside the first, and the hardware spreads a grid of at most #SMs programs
across distinct SMs) it occupies N SMs. ``relative_throughput`` is time on all
SMs over time on N. Rows: ``{sms, total_sms, relative_throughput, ms, m, n, k}``.

On the CPU this is skipped with a note (thread-count emulation would say
nothing about SMs); the kernel (:mod:`persistent_gemm_triton`) is tested
under the Triton interpreter.
"""

from __future__ import annotations

from calibration.kernels.common import TOL, Context, check_close, randn, sig


def sm_counts(total: int, fractions) -> list[int]:
    """SM budgets to measure: the fractions of ``total``, plus total-20 and total-24 (DeepEP's budgets)."""
    counts = {max(1, int(round(total * f))) for f in fractions}
    counts.update(c for c in (total - 20, total - 24) if c > 0)
    return sorted(counts, reverse=True)


def measure(ctx: Context, shape, fractions) -> list[dict]:
    """``sm_scaling`` rows for the GEMM ``shape`` on this GPU; [] (with a note) elsewhere."""
    if not ctx.is_cuda or ctx.triton_mode != "gpu":
        ctx.note("sm_scaling: skipped (needs a GPU and Triton; not emulated with CPU threads)")
        return []
    import torch  # pragma: no cover - GPU path below

    from calibration.kernels.persistent_gemm_triton import persistent_gemm as gemm

    total = torch.cuda.get_device_properties(ctx.device).multi_processor_count
    m, n, k = shape.m, shape.n, shape.k
    nbytes = 2 * (m * k + n * k + m * n)
    sets = [(randn((m, k), ctx, 10 * i + 1, torch.bfloat16), randn((n, k), ctx, 10 * i + 2, torch.bfloat16),
             torch.empty((m, n), device=ctx.device, dtype=torch.bfloat16)) for i in range(ctx.n_buffers(nbytes))]
    a, b, out = sets[0]
    out.fill_(float("nan"))
    gemm(a, b, total, out=out)
    rows_idx = torch.randperm(m, generator=ctx.generator(3))[:128].to(ctx.device)
    label = f"sm_scaling persistent gemm m={m} n={n} k={k}"
    try:
        err = check_close(out[rows_idx], a[rows_idx].double() @ b.double().t(), TOL["bf16"], label)
    except AssertionError as e:
        ctx.failures.append({"kernel": label, "variant": "triton-persistent", "error": str(e)})
        return []
    times = {}
    for sms in sm_counts(total, fractions):
        times[sms] = ctx.time(lambda t, sms=sms: gemm(t[0], t[1], sms, out=t[2]), sets)
    full = times[total].median_ms if total in times else min(t.median_ms for t in times.values())
    flops = 2.0 * m * n * k
    # Fewer SMs cannot run faster than all of them: with no more tiles than SMs (a small GEMM) the times
    # are equal and their ratio is timing noise either side of 1, so it is capped there (``ms`` keeps
    # what was timed).
    return [
        {"sms": sms, "total_sms": total, "relative_throughput": min(1.0, sig(full / t.median_ms)),
         "ms": sig(t.median_ms), "tflops": sig(flops / (t.median_ms * 1e-3) / 1e12),
         "m": m, "n": n, "k": k, "dtype": "bf16", "variant": "triton-persistent",
         "check_rel_error": float(f"{err:.3g}"), "source": "measured"}
        for sms, t in sorted(times.items(), reverse=True)
    ]
