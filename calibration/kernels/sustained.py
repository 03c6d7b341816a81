"""Compute under sustained load: a GEMM run for seconds against the same GEMM timed by the harness.

The harness (:mod:`calibration.timing`) times a kernel for about 200 ms after a
short warm-up. A training step keeps the tensor cores busy for seconds, long
enough for the board to reach its power limit and lower the SM clock (see
:mod:`calibration.clocks`). Published kernel tables share the issue: DeepGEMM's
benchmark rebuilds its inputs between runs, which "gives the GPU enough time to
cool down" (deepseek-ai/DeepGEMM#68), and DeepSeek's maintainer reports H800
clocks falling from 1980 to 1575 MHz when compute overlaps communication
(DeepGEMM#120).

This family measures the effect on the machine at hand instead of assuming it:
the scenario's largest forward GEMM, checked, is timed by the harness (*burst*)
and then run back to back for ``seconds`` with no idle gap; the rate over the
second half of that run is the *sustained* rate. SM clock and power are sampled
read-only in both phases. The op timer multiplies this profile's own compute
rates by sustained / burst (``Profile.sustained_fraction``): the profile's
tables were taken with the burst harness, a step runs sustained. Published
profiles have no such rows and are left as they are.

Rows: ``{dtype, m, n, k, burst_tflops, sustained_tflops, seconds, variant, ms (the harness median),
burst_sm_clock_mhz?, sustained_sm_clock_mhz?, sustained_power_w?}``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from calibration.clocks import ClockSampler, device_index
from calibration.kernels import gemm
from calibration.kernels.common import Context, KernelCheckError, VariantUnavailable, sig

CHUNK_MS = 50.0  # calls are launched in chunks of about this long; the queue never runs dry between them


def run_back_to_back(fn: Callable[[Any], Any], sets: Sequence[Any], seconds: float, device: Any,
                     on_half: Callable[[], None] | None = None) -> tuple[int, float]:
    """Run ``fn`` over the rotating ``sets`` without pause for ``seconds`` of wall time.

    Returns (calls, milliseconds) over the second half of the run, the steady part. On a GPU the
    chunks are timed with CUDA events and the host waits on the chunk before the one it has just
    queued, so the GPU always has work; ``on_half`` is called when the second half starts (the
    clock sampler's mark)."""
    n = len(sets)
    if getattr(device, "type", str(device)) != "cuda":
        return _cpu(fn, sets, seconds, on_half)
    import torch  # pragma: no cover - GPU path below

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(sets[0])
    torch.cuda.synchronize()
    per_call_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
    calls_per_chunk = max(1, int(CHUNK_MS / per_call_ms))
    marks = [torch.cuda.Event(enable_timing=True)]
    marks[0].record()
    start = time.perf_counter()
    half_at: int | None = None
    i = 0
    while True:
        for _ in range(calls_per_chunk):
            fn(sets[i % n])
            i += 1
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        marks.append(ev)
        if len(marks) > 2:
            marks[-2].synchronize()  # the previous chunk is done; this one keeps the GPU busy
        elapsed = time.perf_counter() - start
        if half_at is None and elapsed >= seconds / 2:
            half_at = len(marks) - 1
            if on_half:
                on_half()
        if elapsed >= seconds:
            break
    torch.cuda.synchronize()
    half_at = half_at if half_at is not None and half_at < len(marks) - 1 else 0
    ms = marks[half_at].elapsed_time(marks[-1])
    return (len(marks) - 1 - half_at) * calls_per_chunk, ms


def _cpu(fn, sets, seconds: float, on_half) -> tuple[int, float]:
    n = len(sets)
    start = time.perf_counter()
    half_start = None
    calls = i = 0
    while True:
        fn(sets[i % n])
        i += 1
        now = time.perf_counter()
        if half_start is None and now - start >= seconds / 2:
            half_start = now
            if on_half:
                on_half()
        elif half_start is not None:
            calls += 1
        if now - start >= seconds and calls:
            return calls, (now - half_start) * 1e3


def measure(ctx: Context, shape, dtype: str, seconds: float) -> dict | None:
    """One ``sustained`` row: ``shape``'s GEMM in ``dtype``, harness rate and sustained rate."""
    label = f"sustained gemm {dtype} m={shape.m} n={shape.n} k={shape.k}"
    try:
        fn, sets, _err, variant = gemm.setup(ctx, shape, dtype, label)
    except KernelCheckError as e:
        ctx.failures.append({"kernel": label, "variant": "*", "error": str(e)})
        return None
    except (VariantUnavailable, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        ctx.skipped.append({"kernel": label, "variant": "*", "reason": f"{type(e).__name__}: {e}"})
        return None
    flops = gemm.gemm_flops(shape.m, shape.n, shape.k)
    index = device_index(ctx.device)
    with ClockSampler(index, interval_ms=50) as burst_clock:
        burst = ctx.time(fn, sets)
    with ClockSampler(index) as sus_clock:
        calls, ms = run_back_to_back(fn, sets, seconds, ctx.device, on_half=sus_clock.mark)
    row: dict[str, Any] = {
        "dtype": dtype, "m": shape.m, "n": shape.n, "k": shape.k, "variant": variant,
        "burst_tflops": sig(flops / (burst.median_ms * 1e-3) / 1e12),
        "sustained_tflops": sig(flops * calls / (ms * 1e-3) / 1e12),
        "seconds": sig(seconds), "ms": sig(burst.median_ms), "calls_timed": calls, "source": "measured",
    }
    for prefix, sampler in (("burst", burst_clock), ("sustained", sus_clock)):
        got = sampler.summary()
        if got:
            row[f"{prefix}_sm_clock_mhz"] = got["sm_clock_mhz"]
            if "power_w" in got:
                row[f"{prefix}_power_w"] = got["power_w"]
    return row


def rows(ctx: Context, shape, seconds: float) -> list[dict]:
    """BF16 and FP8 rows for the run's largest forward GEMM (what runs here)."""
    out = []
    for dtype in ("bf16", "fp8"):
        if dtype == "fp8" and (shape.k % 128 or shape.n % 16):
            continue
        row = measure(ctx, shape, dtype, seconds)
        if row:
            out.append(row)
    return out
