"""The SM clock and board power while kernels run, sampled read-only.

A GPU's tensor-core throughput is proportional to its SM clock, and the clock
is not fixed: it boosts when the board has power and thermal headroom and falls
when a load holds it at its power limit. DeepSeek saw its H800s settle near
1600 MHz under compute-bound load against an 1830 MHz boost (FlashMLA's
2025-04-22 deep dive); FlashInfer saw a B200 drop 19 % after ~5 ms of
back-to-back kernels (flashinfer-ai/flashinfer#2899). A kernel table is only
meaningful next to the clock it was measured at, so the runner samples the clock
around each family and the ``sustained`` family compares short and long runs.

:class:`ClockSampler` runs ``nvidia-smi --query-gpu=clocks.sm,power.draw --loop-ms``
in the background (a query: nothing about the card is changed) and summarises
what it read. Without ``nvidia-smi`` it records nothing and summarises to None.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
from typing import Any

QUERY = "clocks.sm,power.draw"


def parse_sample(line: str) -> tuple[float, float | None] | None:
    """``"1755, 612.34"`` -> (1755.0, 612.34); power may read ``[N/A]``; anything else -> None."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 2:
        return None
    try:
        mhz = float(parts[0])
    except ValueError:
        return None
    try:
        watts: float | None = float(parts[1])
    except ValueError:
        watts = None
    return mhz, watts


def summarize(samples: list[tuple[float, float | None]]) -> dict[str, Any] | None:
    """Median and minimum SM clock, median power, sample count (None without samples)."""
    if not samples:
        return None
    clocks = [c for c, _ in samples]
    watts = [w for _, w in samples if w is not None]
    out: dict[str, Any] = {"sm_clock_mhz": statistics.median(clocks), "sm_clock_mhz_min": min(clocks),
                           "samples": len(samples)}
    if watts:
        out["power_w"] = round(statistics.median(watts), 1)
    return out


class ClockSampler:
    """``with ClockSampler(index) as s: ...`` then ``s.summary()``; ``s.mark()`` starts a new window.

    Samples every ``interval_ms`` while the block runs. ``mark()`` discards what was read so
    far, so a caller can keep only the steady part of a long run."""

    def __init__(self, index: int | None, interval_ms: int = 100, exe: str | None = None):
        self.index = index
        self.interval_ms = interval_ms
        self.exe = exe if exe is not None else shutil.which("nvidia-smi")
        self.samples: list[tuple[float, float | None]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "ClockSampler":
        if self.index is None or not self.exe:
            return self
        try:
            self._proc = subprocess.Popen(
                [self.exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", f"--id={self.index}",
                 f"--loop-ms={self.interval_ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self._proc = None
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            got = parse_sample(line)
            if got is not None:
                with self._lock:
                    self.samples.append(got)

    def mark(self) -> None:
        with self._lock:
            self.samples.clear()

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        with self._lock:
            return summarize(list(self.samples))


def device_index(device: Any) -> int | None:
    """The CUDA index of a torch device, None for the CPU."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    return device.index if device.index is not None else torch.cuda.current_device()
