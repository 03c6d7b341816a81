"""Timing a kernel the way a profile needs it: warm, repeated, beyond the cache.

Device work is asynchronous, so on a GPU a kernel is timed with CUDA events
recorded on the stream around each call; on the CPU torch ops are synchronous
and :func:`time.perf_counter` around each call is enough. Either way:

* **warm-up** first, so that module loading, Triton compilation, cuBLAS handle
  creation and autotuning stay out of the numbers;
* **repeat** and report the **median** (robust to a stray slow call);
* **rotate inputs** across several buffer sets whose total size exceeds the L2
  cache (50 MB on an H100), so that repeated calls do not measure the cache.

The caller builds the input sets (see :func:`rotation_count` for how many) and
passes a function that runs the kernel on one set.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

H100_L2_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class TimingConfig:
    """How hard to time one kernel.

    ``budget_ms`` bounds the timed repetitions: after warm-up the number of
    repetitions is chosen so that they take about that long, between
    ``min_reps`` and ``max_reps``.
    """

    warmup: int = 3
    min_reps: int = 5
    max_reps: int = 50
    budget_ms: float = 200.0

    @classmethod
    def quick(cls) -> "TimingConfig":
        return cls(warmup=2, min_reps=3, max_reps=15, budget_ms=60.0)


@dataclass(frozen=True)
class Timing:
    """The result of timing one kernel: median and spread of per-call times."""

    median_ms: float
    min_ms: float
    max_ms: float
    reps: int
    buffers: int
    method: str  # "cuda-events" or "perf_counter"


def l2_cache_bytes(device: Any) -> int:
    """L2 size of a CUDA device (from its properties), else the H100 figure."""
    try:
        import torch

        if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
            size = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
            if size > 0:
                return size
    except Exception:  # pragma: no cover - properties differ between torch builds
        pass
    return H100_L2_BYTES


def rotation_count(bytes_per_set: int, l2_bytes: int, max_sets: int = 16, memory_cap: int = 8 << 30) -> int:
    """How many input sets to rotate through so that their total exceeds 2x L2.

    One set is enough when it alone is twice the cache; at most ``max_sets``,
    and never more than ``memory_cap`` bytes in all (at least 1 set).
    """
    if bytes_per_set <= 0:
        return 1
    want = math.ceil(2 * l2_bytes / bytes_per_set)
    fit = max(1, memory_cap // bytes_per_set)
    return int(max(1, min(want, max_sets, fit)))


def time_fn(fn: Callable[[Any], Any], inputs: Sequence[Any], device: Any, cfg: TimingConfig) -> Timing:
    """Time ``fn(inputs[i % len(inputs)])``: warm-up, then the median of N calls."""
    if not inputs:
        raise ValueError("time_fn needs at least one input set")
    is_cuda = getattr(device, "type", str(device)) == "cuda"
    if is_cuda:
        return _time_cuda(fn, inputs, cfg)
    return _time_cpu(fn, inputs, cfg)


def _reps_for(estimate_ms: float, cfg: TimingConfig) -> int:
    if estimate_ms <= 0:
        return cfg.max_reps
    return int(min(cfg.max_reps, max(cfg.min_reps, cfg.budget_ms / estimate_ms)))


def _summary(samples: list[float], buffers: int, method: str) -> Timing:
    return Timing(
        median_ms=float(statistics.median(samples)),
        min_ms=float(min(samples)),
        max_ms=float(max(samples)),
        reps=len(samples),
        buffers=buffers,
        method=method,
    )


def _time_cpu(fn, inputs, cfg: TimingConfig) -> Timing:
    n = len(inputs)
    t0 = time.perf_counter()
    for i in range(cfg.warmup):  # warmup=0 allowed on the CPU (e.g. the Triton interpreter)
        fn(inputs[i % n])
    estimate_ms = (time.perf_counter() - t0) * 1e3 / cfg.warmup if cfg.warmup else 0.0
    samples = []
    for i in range(_reps_for(estimate_ms, cfg)):
        t = time.perf_counter()
        fn(inputs[i % n])
        samples.append((time.perf_counter() - t) * 1e3)
    return _summary(samples, n, "perf_counter")


def _time_cuda(fn, inputs, cfg: TimingConfig) -> Timing:  # pragma: no cover - needs a GPU
    import torch

    n = len(inputs)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for i in range(max(1, cfg.warmup)):
        fn(inputs[i % n])
    end.record()
    torch.cuda.synchronize()
    estimate_ms = start.elapsed_time(end) / max(1, cfg.warmup)
    reps = _reps_for(estimate_ms, cfg)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        starts[i].record()
        fn(inputs[i % n])
        ends[i].record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return _summary(samples, n, "cuda-events")
