"""Op timer: how long one op takes on one GPU.

``OpTimer.time(op, sms)`` answers from the calibration profile when it has the
kernel (interpolated between measured shapes in log space), and otherwise from
the roofline: ``max(flops / peak, bytes / HBM bandwidth)`` at datasheet peaks.
Every answer that is not backed by a measurement inside the table's range is
recorded in ``warnings`` (once per kind of miss), so reports can say which
numbers are extrapolated: never silently.

Communication kernels occupy SMs (DeepSeek-V3 gives 20 of 132 to all-to-all),
so compute kernels that run beside them get fewer: ``sms`` is the number of
SMs the op may use, and the profile's ``sm_scaling`` table (or, without one,
proportionality) turns that into a slowdown.
"""

from __future__ import annotations

import re

from .config import GPUConfig
from .profile import Profile
from .workload import Op

TFLOP = 1e12
GB = 1e9


def _gpu_family(name: str) -> str | None:
    """The GPU model in a device name ("NVIDIA H100 80GB HBM3" -> "H100"), None when it names none."""
    m = re.search(r"\b([ABHLV]\d{2,3}|GB?\d{3})\b", name.upper())
    return m.group(1) if m else None


def device_mismatch(profile: Profile, gpu: GPUConfig) -> str | None:
    """Why ``profile`` does not describe ``gpu`` (a CPU profile, or another GPU model), or None."""
    dev = profile.device or {}
    where = dev.get("name") or "an unnamed device"
    if dev.get("kind") == "cpu":
        return (f"profile {profile.name} was measured on a CPU ({where}): its kernel times are not a "
                f"{gpu.name}'s (a CPU profile only tests the harness)")
    have, want = _gpu_family(where), _gpu_family(gpu.name)
    if have and want and have != want:
        return (f"profile {profile.name} was measured on {where}, the cluster's GPUs are {gpu.name}: "
                "its kernel rates are used as they are")
    return None


# How a note on a rate the sustained clock corrected begins (sensitivity reads it to know whether the
# clock moves anything).
SUSTAINED_CLOCK_NOTE = "sustained clock:"


class OpTimer:
    def __init__(self, gpu: GPUConfig, profile: Profile | None = None):
        self.gpu = gpu
        self.warnings: dict[str, str] = {}
        self._cache: dict[tuple, float] = {}
        self._pairs: dict[int | None, dict] = {}  # pairs: per SM count, op -> (all SMs, those SMs)
        self._clamped: dict[str, set[str]] = {}  # table:dtype -> the out-of-range details met
        self._scalings_seen: set[tuple[str, str]] = set()  # (table, FP8 scaling) pairs _note_scaling checked
        mismatch = device_mismatch(profile, gpu) if profile is not None else None
        if mismatch:
            self.warnings["profile:device"] = mismatch
        if profile is not None and profile.eager_ops:
            self.warnings["memory:eager"] = (
                f"profile {profile.name} timed {', '.join(profile.eager_ops)} as torch's eager chains (several "
                "kernels each), not one fused kernel: its device-copy rows price them")
        # Tables timed in bursts, at full clock, are read as a training step runs them: at the GPU's
        # sustained clock (Profile.at_sustained_clock), unless the profile measured its own sustained
        # rate (then _sustained applies that) or the GPU gives no clocks (rates as measured, noted).
        self._burst = bool(profile is not None and profile.data.get("burst_tables")
                           and not profile.tables.get("sustained"))
        if self._burst and gpu.sustained_clock_fraction < 1.0:
            peaks = {dt: gpu.peak_tflops(dt) for dt in ("fp8", "bf16", "fp16", "fp32")}
            profile = profile.at_sustained_clock(gpu.sustained_clock_fraction, gpu.hbm_gbps, peaks)
        self.profile = profile

    def _warn(self, key: str, text: str) -> None:
        if key not in self.warnings:
            self.warnings[key] = text

    def _table_dtype(self, dtype: str) -> str:
        # FP16 and BF16 run at the same tensor-core rate on Ampere/Hopper: one table serves both.
        return "bf16" if dtype == "fp16" else dtype

    def compute_tflops(self, op: Op) -> float:
        """Achieved TFLOP/s of a compute op on a full GPU."""
        peak = self.gpu.peak_tflops(op.dtype)
        p = self.profile
        if p is None:
            self._warn(f"roofline:{op.kind}:{op.dtype}", f"no profile: {op.kind} {op.dtype} at the datasheet peak (roofline)")
            return peak
        dt = self._table_dtype(op.dtype)
        table = op.kind  # the table that answers
        if op.kind == "gemm":
            res = p.gemm_tflops(dt, op.m, op.n, op.k)
        elif op.kind == "grouped_gemm":
            res = p.grouped_gemm_tflops(dt, op.groups, op.m, op.n, op.k)
            if res.status == "roofline":  # no grouped table: a dense GEMM of one expert's shape
                res = p.gemm_tflops(dt, op.m, op.n, op.k)
                table = "gemm"
            elif res.status == "derived":
                self._warn(f"derived:grouped_gemm:{dt}", f"small experts: {res.detail}")
        elif op.kind == "attention":
            direction = "fwd" if op.phase == "F" or op.recompute else "bwd"
            res = p.attention_tflops(dt, direction, op.seq, op.heads, op.qk_dim, op.v_dim, op.library)
            if res.status == "roofline" and op.library:  # no rows for that library: the default flash rows
                self._warn(f"library:{op.library}", f"profile {p.name} has no {op.library} attention rows: "
                                                    "its default flash rows used")
                res = p.attention_tflops(dt, direction, op.seq, op.heads, op.qk_dim, op.v_dim)
            if res.status == "derived":
                self._warn(f"derived:attention:{direction}:{op.library}", f"causal attention {direction}: {res.detail}")
        else:
            return peak
        if op.scaling and res.status != "roofline":
            self._note_scaling(table, op.scaling)
        if res.status == "roofline" or res.value is None:
            self._warn(f"roofline:{op.kind}:{dt}", f"profile {p.name} has no {op.kind} {dt} rows: datasheet peak used (roofline)")
            return peak
        if res.status == "clamped":
            # Every clamped shape is named, sorted: the first one timed depends on the order ops are met.
            details = self._clamped.setdefault(f"{op.kind}:{dt}", set())
            if res.detail not in details:
                details.add(res.detail)
                shown = sorted(details)
                more = f"; and {len(shown) - 4} more" if len(shown) > 4 else ""
                self.warnings[f"clamped:{op.kind}:{dt}"] = (f"{op.kind} {dt} shapes outside the measured range, nearest "
                                                            f"rows used ({'; '.join(shown[:4])}{more})")
        if self._burst:
            self._note_burst(table, dt)
        return min(res.value, peak) * self._sustained(dt)

    def _note_scaling(self, table: str, scaling: str) -> None:
        """Say when no FP8 row of ``table`` was measured with the plan's scaling: a per-tensor-scaled GEMM
        (cuBLAS) and a blockwise one (DeepGEMM's, or cuBLAS's block-scaled kernels) are different kernels,
        and the rows answer for whichever the profile holds."""
        if (table, scaling) in self._scalings_seen:  # once per table and scaling: every FP8 GEMM asks
            return
        self._scalings_seen.add((table, scaling))
        tags = self.profile.fp8_scalings(table)
        if any(t.startswith(scaling) for t in tags):
            return
        have = ", ".join(sorted(t or "unstated" for t in tags))
        self._warn(f"scaling:{table}:{scaling}", f"{table} fp8 rows measured with {have} scaling price the plan's "
                                                 f"{scaling} FP8 GEMMs (plan.fp8_recipe)")

    def _note_burst(self, table: str, dtype: str) -> None:
        """Say when a rate came from a table timed in bursts: corrected to the sustained clock, or not."""
        evidence = self.profile.burst_evidence(table, dtype)
        if not evidence:
            return
        g = self.gpu
        if g.sustained_clock_fraction < 1.0:
            self._warn(f"sustained:{table}:{dtype}",
                       f"{SUSTAINED_CLOCK_NOTE} compute-bound {table} {dtype} rows x {g.sustained_clock_fraction:.3f} "
                       f"({g.name} holds {g.sustained_clock_mhz:g} of {g.peak_clock_mhz:g} MHz under load; profile "
                       f"{self.profile.name} timed them in bursts: {evidence})")
        else:
            self._warn(f"sustained:{table}:{dtype}",
                       f"profile {self.profile.name} timed its {table} {dtype} rows in bursts ({evidence}), but "
                       f"{g.name} gives no sustained clock (cluster.gpu.sustained_clock_mhz): rates as measured")

    def _sustained(self, dtype: str) -> float:
        """A measured profile's own sustained/burst ratio for compute-bound kernels (1.0 without one).

        ``gpuhours calibrate --families sustained`` runs its GEMM back to back and compares the rate
        with the harness's timing of the same kernel (a ratio per dtype)."""
        res = self.profile.sustained_fraction(dtype)
        if res.status == "measured" and res.value < 1.0:
            self._warn(f"sustained:{dtype}", f"sustained load: {dtype} compute rates x {res.value:.2f} ({res.detail})")
        return res.value

    def memory_gbps(self, op: Op) -> float:
        if self.profile is not None:
            name = op.name.split(".")[-1]
            res = self.profile.memory_gbps(name, op.bytes)
            if res.value is not None:
                rows, smallest = self.profile.memory_floor(name)
                if op.bytes < smallest:
                    # Below the rows that answered: the smallest size's rate, an upper bound (smaller kernels
                    # reach less). One note per set of rows: the shipped profiles answer every op from '*'.
                    which = "" if rows == "*" else f" ({rows})"
                    self._warn(f"clamped:memory:{rows}", f"memory-bound kernels{which} below {smallest / 1e6:.3g} MB "
                                                         f"(the smallest measured size in profile {self.profile.name}) "
                                                         "take its rate")
                return min(res.value, self.gpu.hbm_gbps)
        self._warn("roofline:memory", "memory-bound ops at the datasheet HBM bandwidth (roofline)")
        return self.gpu.hbm_gbps

    def sm_fraction(self, sms: int | None) -> float:
        if sms is None or sms >= self.gpu.sms:
            return 1.0
        if self.profile is not None:
            res = self.profile.sm_fraction(sms, self.gpu.sms)
            if res.status == "roofline":
                self._warn("sm_scaling", "no sm_scaling rows: compute throughput taken proportional to SMs")
            return max(res.value or sms / self.gpu.sms, 1e-3)
        return sms / self.gpu.sms

    def pairs(self, sms: int | None) -> dict:
        """A dict of op -> (:meth:`time` with all SMs, with ``sms``) that the caller fills through :meth:`pair`
        where it misses. Hot path: a layer unit's timing needs both times of each of its ~70 ops, and one lookup
        of the op, whose 23 fields are hashed each time, takes as long as the rest of a cached :meth:`time`."""
        hit = self._pairs.get(sms)
        if hit is None:
            hit = self._pairs[sms] = {}
        return hit

    def pair(self, op: Op, sms: int | None) -> tuple[float, float]:
        """(seconds with all SMs, seconds with ``sms``), kept in :meth:`pairs`."""
        d = self.time(op)
        hit = self.pairs(sms)[op] = (d, self.time(op, sms) if sms else d)
        return hit

    def time(self, op: Op, sms: int | None = None) -> float:
        """Seconds for one op on one GPU with ``sms`` SMs available (None = all)."""
        key = (op, sms)
        t = self._cache.get(key)
        if t is not None:
            return t
        if op.kind == "comm":
            raise ValueError("communication ops are timed by simulator.comm, not the op timer")
        if op.sm_margin:  # a concurrent communication kernel holds these SMs (TP overlap)
            sms = (self.gpu.sms if sms is None else sms) - op.sm_margin
        if op.splits > 1 and op.kind == "gemm":
            # Cut into chunks of m/splits rows, run back to back. The chunks are timed from the
            # profile at their own shape, and never faster than the uncut GEMM: a library could
            # always run the whole as those chunks.
            chunk = op._replace(m=op.m / op.splits, flops=op.flops / op.splits, bytes=op.bytes / op.splits,
                                splits=1, sm_margin=0)
            t = max(op.splits * self.time(chunk, sms), self.time(chunk._replace(m=op.m, flops=op.flops), sms))
            self._cache[key] = t
            return t
        if op.kind == "memory":
            t = op.bytes / (self.memory_gbps(op) * GB)
            # Memory-bound kernels slow down with fewer SMs only once SMs limit bandwidth; assume not.
        else:
            t_compute = op.flops / (self.compute_tflops(op) * TFLOP)
            t_mem = op.bytes / (self.gpu.hbm_gbps * GB)
            t = max(t_compute, t_mem) / self.sm_fraction(sms)
        self._cache[key] = t
        return t
