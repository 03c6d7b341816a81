"""What every kernel family shares: the run context, the correctness check, variants.

**Correct first.** Every kernel is compared with a float64 reference before it
is timed, by the relative error ``||out - ref|| / ||ref||`` (NaN never passes).
Float32 lands far under 1e-3, BF16 operands between 1e-3 and 1e-2, FP8 with
fine-grained scales near 1e-2 against the dequantized inputs. A failing check
raises :class:`KernelCheckError`: that variant's timing is abandoned with a
clear message and no row is written from it. For large shapes the reference is
computed on a sample of output rows (or heads), which still checks the real
output of the real kernel.

**Variants.** One profile row describes one shape. When several
implementations can run it (cuBLAS BF16, our Triton kernel, ``torch._grouped_mm``
or a loop of matmuls ...), each is checked and timed, the fastest becomes the
row (its name in ``variant``) and the others are kept in the row's
``alternatives`` ({variant: ms}) for comparison.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from calibration.timing import Timing, TimingConfig, l2_cache_bytes, rotation_count, time_fn

# Relative-error tolerances by the precision of the operands.
TOL = {"fp32": 1e-3, "bf16": 2e-2, "fp8": 3e-2, "bf16-bwd": 4e-2}


class KernelCheckError(AssertionError):
    """A kernel's output disagrees with the float64 reference."""


class VariantUnavailable(RuntimeError):
    """A variant that cannot run here (API absent, layout refused, no GPU)."""


@dataclass(frozen=True)
class Measured:
    """One variant's result: its timing and the relative error of its check."""

    timing: Timing
    rel_error: float


@dataclass
class Context:
    """Everything a kernel family needs for one calibration run (no globals).

    ``notes`` and ``failures`` are this run's own records; the runner copies
    them into the profile.
    """

    device: Any
    timing: TimingConfig
    quick: bool = False
    triton_mode: str | None = None  # "gpu", "interpreter" or None (Triton unusable)
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    fp8: Any = None  # calibration.kernels.gemm.Fp8Support, probed once per run
    clocks: dict[str, dict] = field(default_factory=dict)  # family -> SM clock seen while it ran

    @property
    def is_cuda(self) -> bool:
        return getattr(self.device, "type", str(self.device)) == "cuda"

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def generator(self, salt: int = 0):
        import torch

        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed * 1_000_003 + salt)
        return g

    def n_buffers(self, bytes_per_set: int) -> int:
        cap = (8 << 30) if self.is_cuda else (256 << 20)
        sets = rotation_count(bytes_per_set, l2_cache_bytes(self.device), memory_cap=cap)
        return sets if self.is_cuda else min(sets, 2)

    def time(self, fn: Callable[[Any], Any], inputs: list) -> Timing:
        return time_fn(fn, inputs, self.device, self.timing)


def triton_mode(device: Any) -> str | None:
    """How Triton kernels can run: on the GPU, under the interpreter, or not at all."""
    if getattr(device, "type", str(device)) == "cuda":
        try:
            import triton  # noqa: F401

            return "gpu"
        except ImportError:  # pragma: no cover
            return None
    if os.environ.get("TRITON_INTERPRET", "") == "1":
        try:
            import triton  # noqa: F401

            return "interpreter"
        except ImportError:  # pragma: no cover
            return None
    return None


def randn(shape, ctx: Context, salt: int, dtype=None, scale: float = 1.0):
    """Fresh random data on the run's device (never zeros: they hide bugs)."""
    import torch

    g = torch.Generator(device=ctx.device)  # generated where it is used: no host copy of big inputs
    g.manual_seed(ctx.seed * 1_000_003 + salt)
    x = torch.randn(*shape, generator=g, device=ctx.device, dtype=torch.float32)
    if scale != 1.0:
        x = x * scale
    return x.to(dtype or torch.float32)


def rel_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64; NaN or Inf anywhere gives inf."""
    import torch

    out64 = out.detach().to(torch.float64)
    ref64 = ref.detach().to(device=out64.device, dtype=torch.float64)
    if out64.shape != ref64.shape:
        raise KernelCheckError(f"shape mismatch: output {tuple(out64.shape)} vs reference {tuple(ref64.shape)}")
    if not torch.isfinite(out64).all():
        return float("inf")
    denom = torch.linalg.vector_norm(ref64).item()
    num = torch.linalg.vector_norm(out64 - ref64).item()
    return num / denom if denom > 0 else num


def check_close(out, ref, tol: float, what: str) -> float:
    """Raise KernelCheckError unless ``out`` matches the float64 ``ref`` within ``tol``."""
    err = rel_error(out, ref)
    if not err <= tol:
        raise KernelCheckError(
            f"{what}: relative error {err:.3g} exceeds tolerance {tol:.3g} against the float64 reference; "
            "timing abandoned, no row written"
        )
    return err


def sample_rows(m: int, count: int, ctx: Context, salt: int = 7):
    """Indices of up to ``count`` distinct rows of ``m`` (all rows when small)."""
    import torch

    if m <= count:
        return torch.arange(m)
    return torch.randperm(m, generator=ctx.generator(salt))[:count].sort().values


def run_variants(
    ctx: Context, label: str, variants: list[tuple[str, Callable[[], Measured]]]
) -> tuple[str, Measured, dict[str, float]] | None:
    """Check and time each variant; return (best name, its result, {name: ms}).

    A variant callable runs its own reference check and then times itself.
    Failed checks are recorded in ``ctx.failures`` and printed by the runner;
    unavailable variants (API absent, layout refused) in ``ctx.skipped``.
    Returns None when no variant produced a timing.
    """
    results: dict[str, Measured] = {}
    for name, fn in variants:
        try:
            results[name] = fn()
        except KernelCheckError as e:
            ctx.failures.append({"kernel": label, "variant": name, "error": str(e)})
        except VariantUnavailable as e:
            ctx.skipped.append({"kernel": label, "variant": name, "reason": str(e)})
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as e:
            # Unsupported dtype/layout on this device or torch build: record, go on.
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            ctx.skipped.append({"kernel": label, "variant": name, "reason": f"{type(e).__name__}: {msg}"})
    if not results:
        return None
    best = min(results, key=lambda k: results[k].timing.median_ms)
    return best, results[best], {k: sig(v.timing.median_ms) for k, v in results.items()}


def sig(x: float, digits: int = 6) -> float:
    """Round to significant digits (a tiny CPU throughput must not round to 0)."""
    return float(f"{x:.{digits}g}")


def row_fields(name: str, m: Measured, alternatives: dict[str, float]) -> dict:
    """The measurement part of a profile row: variant, median ms, spread, check error."""
    t = m.timing
    row = {
        "variant": name,
        "ms": sig(t.median_ms),
        "ms_min": sig(t.min_ms),
        "reps": t.reps,
        "buffers": t.buffers,
        "check_rel_error": float(f"{m.rel_error:.3g}"),
        "source": "measured",
    }
    if len(alternatives) > 1:
        row["alternatives"] = alternatives
    return row
