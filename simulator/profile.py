"""Calibration profiles: measured kernel throughput that the op timer reads.

A *profile* is a versioned JSON document recording how fast one device ran the
kernels a training step is made of: dense GEMMs, grouped (MoE) GEMMs, attention,
memory-bound ops, compute under a reduced SM budget, and collectives. Each table
row is one measurement (or one published figure, with its ``source``). The
simulator never needs a GPU: it reads a profile, interpolates between measured
shapes and, for shapes outside the table, clamps to the nearest edge or falls
back to the roofline, reporting each such case (see :class:`Lookup`).

Schema (``schema_version`` 1)::

    {
      "schema": "gpuhours.profile", "schema_version": 1,
      "name": "h800-anchors", "created": "2026-11-22", "source": "...",
      "device": {"name": "NVIDIA H800", "kind": "gpu" | "cpu", "sms": 132, ...},
      "tables": {
        "gemm":         [{"dtype", "m", "n", "k", "tflops", "source"?, "ms"?}],
        "grouped_gemm": [{"dtype", "groups", "m_per_group", "n", "k", "tflops", ...}],
        "attention":    [{"dtype", "direction": "fwd"|"bwd", "seq", "heads",
                          "qk_dim", "v_dim", "causal", "tflops", "library"?, ...}],
        "memory_bound": [{"op", "bytes", "gbps", ...}],
        "sm_scaling":   [{"sms", "total_sms", "relative_throughput", ...}],
        "collectives":  [{"op", "ranks", "bytes"?, "gbps", "link"?, ...}],
        "sustained":    [{"dtype", "m", "n", "k", "burst_tflops", "sustained_tflops",
                          "seconds", "burst_sm_clock_mhz"?, "sustained_sm_clock_mhz"?, ...}]
      }
    }

All tables are optional; an absent table means "no measurement", never zero.
A row may carry ``"ceiling": true`` when it is a maximum over a search of shapes
(e.g. MAMF, "maximum achievable matmul FLOPS"): it then bounds the lookups of its
table instead of being interpolated as if that shape were an ordinary one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .atomic import write_atomic
from .config import BANDWIDTH_GBPS, TFLOPS, format_number
from .errors import special_file, unreadable
from .workload import BYTES

SCHEMA = "gpuhours.profile"
SCHEMA_VERSION = 1
PROFILES_DIR = Path(__file__).resolve().parent.parent / "calibration" / "profiles"

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "gemm": ("dtype", "m", "n", "k", "tflops"),
    "grouped_gemm": ("dtype", "groups", "m_per_group", "n", "k", "tflops"),
    "attention": ("dtype", "direction", "seq", "heads", "qk_dim", "v_dim", "causal", "tflops"),
    "memory_bound": ("op", "bytes", "gbps"),
    "sm_scaling": ("sms", "total_sms", "relative_throughput"),
    "collectives": ("op", "ranks", "gbps"),
    "sustained": ("dtype", "m", "n", "k", "burst_tflops", "sustained_tflops", "seconds"),
}
TEXT_KEYS = ("dtype", "direction", "op", "library", "link")  # the other table keys are positive numbers
# Ranges of the measured rates, so that a corrupt or mistyped row (tflops 1e-300) is refused by name
# when the profile is read rather than ending as an infinite step. The upper ends are the scenario's
# (simulator/config.py); the lower ends are three decades wider than there, because a profile measured
# on a CPU (the calibration's test path) holds rates down to ~5e-3 TFLOP/s.
RATE_RANGES: dict[str, tuple[float, float, str]] = {
    "tflops": (1e-6, TFLOPS[1], TFLOPS[2]),
    "burst_tflops": (1e-6, TFLOPS[1], TFLOPS[2]),
    "sustained_tflops": (1e-6, TFLOPS[1], TFLOPS[2]),
    "gbps": (1e-6, BANDWIDTH_GBPS[1], BANDWIDTH_GBPS[2]),
}


# Optional fields the simulator reads as numbers where a row has them: a collective's message size and
# the nominal link it was measured on, the clocks a sustained run read.
OPTIONAL_NUMBERS: dict[str, tuple[str, ...]] = {
    "collectives": ("bytes", "link_gbps"),
    "sustained": ("burst_sm_clock_mhz", "sustained_sm_clock_mhz"),
}
RATE_RANGES["link_gbps"] = RATE_RANGES["gbps"]

EAGER = "torch-eager"  # the variant of a calibrated memory-bound row that timed torch's eager chain

# Tables whose rates follow the SM clock (compute-bound kernels); a profile may list some of them, by
# dtype, under ``burst_tables``: rows its sources measured in short bursts, below the power limit.
BURST_KINDS = ("gemm", "grouped_gemm", "attention")
DTYPES = tuple(BYTES)  # the dtypes the workload sizes its ops in


def row_intensity(table: str, row: dict) -> float:
    """FLOPs per byte of HBM traffic of a compute-table row's shape: each input read once and the BF16
    output written once (GEMM and grouped GEMM); attention tiles stay on chip (no bound: inf)."""
    size = BYTES.get(row.get("dtype", "bf16"), 2.0)
    if table == "gemm":
        m = float(row["m"])
    elif table == "grouped_gemm":  # each group reads its tokens and its own expert's weights: the same ratio
        m = float(row["m_per_group"])
    else:
        return math.inf
    n, k = float(row["n"]), float(row["k"])
    return 2 * m * n * k / ((m * k + k * n) * size + m * n * 2)


class ProfileError(ValueError):
    """A profile that is missing, corrupt or of an unknown schema version."""


def _burst_scopes(spec: str | list) -> list[tuple[str, str]]:
    """A ``burst_tables`` entry as (source prefix, evidence) pairs; prefix "" for every row."""
    return [("", spec)] if isinstance(spec, str) else [(item["source"], item["evidence"]) for item in spec]


def _check_burst_spec(data: dict, where: str, key: str, table: str, dtype: str, spec: Any) -> None:
    """A ``burst_tables`` entry is the evidence, in text, that every row of TABLE/DTYPE was timed in bursts,
    or a list of {"source": PREFIX, "evidence": TEXT} for the rows whose source begins with PREFIX (one
    harness among several in a table). A prefix that matches no row is refused: it would never apply."""
    field = f"{where}: burst_tables.{key}"
    if isinstance(spec, str):
        if not spec.strip():
            raise ProfileError(f"{field} must say, in text, why those rows were measured in bursts")
        return
    if not isinstance(spec, list) or not spec:
        raise ProfileError(f"{field} must be a text (every row) or a list of {{\"source\": PREFIX, \"evidence\": TEXT}}")
    rows = [r for r in (data.get("tables") or {}).get(table, []) if isinstance(r, dict) and r.get("dtype") == dtype]
    for i, item in enumerate(spec):
        if not (isinstance(item, dict) and set(item) == {"source", "evidence"}
                and all(isinstance(item[k], str) and item[k].strip() for k in ("source", "evidence"))):
            raise ProfileError(f"{field}[{i}] must be {{\"source\": PREFIX, \"evidence\": TEXT}}, both non-empty text")
        if not any(str(r.get("source", "")).startswith(item["source"]) for r in rows):
            raise ProfileError(f"{field}[{i}].source {item['source'][:60]!r} begins no {table} {dtype} row's source")


def validate_profile(data: Any, where: str = "profile") -> dict:
    """Check a profile document and return it; raise ProfileError naming the field."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: not a JSON object")
    if data.get("schema") != SCHEMA:
        raise ProfileError(f"{where}: field 'schema' must be {SCHEMA!r}, got {data.get('schema')!r}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"{where}: unknown schema_version {version!r}; this gpuhours reads version {SCHEMA_VERSION}"
        )
    device = data.get("device")
    if not isinstance(device, dict) or not isinstance(device.get("name"), str):
        raise ProfileError(f"{where}: field 'device' must be an object with a 'name'")
    if device.get("kind", "gpu") not in ("gpu", "cpu"):
        raise ProfileError(f"{where}: device.kind must be 'gpu' or 'cpu', got {device.get('kind')!r}")
    for key in ("hbm_gbps", "sms", "clock_mhz"):  # read as numbers (sustained-clock ridge, SM scaling)
        v = device.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ProfileError(f"{where}: device.{key} must be a positive number, got {v!r}"[:300])
    tables = data.get("tables", {})
    if not isinstance(tables, dict):  # before burst_tables, whose check reads the tables' rows
        raise ProfileError(f"{where}: field 'tables' must be an object")
    burst = data.get("burst_tables", {})
    if not isinstance(burst, dict):
        raise ProfileError(f"{where}: field 'burst_tables' must be an object")
    for key, spec in burst.items():
        table, _, dtype = str(key).partition("/")
        if table not in BURST_KINDS or dtype not in DTYPES:
            raise ProfileError(f"{where}: burst_tables key {key!r}; allowed: TABLE/DTYPE with TABLE one of "
                               f"{', '.join(BURST_KINDS)} and DTYPE one of {', '.join(DTYPES)} (e.g. gemm/fp8)")
        _check_burst_spec(data, where, key, table, dtype, spec)
    for name, rows in tables.items():
        if name not in TABLE_KEYS:
            raise ProfileError(
                f"{where}: unknown table {name!r}; allowed: {', '.join(TABLE_KEYS)}"
            )
        if not isinstance(rows, list):
            raise ProfileError(f"{where}: tables.{name} must be a list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ProfileError(f"{where}: tables.{name}[{i}] must be an object")
            for key in TABLE_KEYS[name]:
                if key not in row:
                    raise ProfileError(f"{where}: tables.{name}[{i}] lacks field {key!r}")
            # The table's numeric keys, and the optional ones a row may hold, each a positive number in range.
            numeric = [k for k in TABLE_KEYS[name] if k not in TEXT_KEYS and k != "causal"]
            numeric += [k for k in OPTIONAL_NUMBERS.get(name, ()) if row.get(k) is not None]
            for key in numeric:
                v = row[key]
                if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                    raise ProfileError(
                        f"{where}: tables.{name}[{i}].{key} must be a positive finite number, got {v!r}"[:300]
                    )
                lo, hi, unit = RATE_RANGES.get(key, (0.0, math.inf, ""))
                if not lo <= v <= hi:
                    raise ProfileError(f"{where}: tables.{name}[{i}].{key}: {format_number(v)} is out of range; "
                                       f"allowed: {format_number(lo)} .. {format_number(hi)} {unit}")
            for key in TEXT_KEYS:
                if key in row and not isinstance(row[key], str):
                    raise ProfileError(f"{where}: tables.{name}[{i}].{key} must be text, got {row[key]!r}")
            if name == "sm_scaling" and not (row["sms"] <= row["total_sms"] and row["relative_throughput"] <= 1):
                raise ProfileError(f"{where}: tables.sm_scaling[{i}]: needs sms <= total_sms and "
                                   f"relative_throughput <= 1, got {row['sms']}/{row['total_sms']}, "
                                   f"{row['relative_throughput']}")
    return data


def save_profile(data: dict, path: str | os.PathLike) -> Path:
    """Validate and write a profile atomically: a reader never sees half a file."""
    validate_profile(data, where=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(f) -> None:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    write_atomic(path, fill, field="--out")
    return path


def list_profiles() -> list[str]:
    """Names of the profiles shipped in calibration/profiles/."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def resolve_profile_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return p
    candidate = PROFILES_DIR / f"{name_or_path}.json"
    if candidate.exists():
        return candidate
    raise ProfileError(
        f"profile: unknown profile {str(name_or_path)!r}; allowed: {', '.join(list_profiles())} or a path to a .json file"
    )


def load_profile(name_or_path: str | os.PathLike) -> "Profile":
    """Read a profile by shipped name or path; refuse corrupt or unknown-version files."""
    path = resolve_profile_path(name_or_path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0  # the open below names what is wrong with the path
    return _load_profile_cached(str(path.resolve()), mtime)


@lru_cache(maxsize=32)
def _load_profile_cached(path: str, _mtime: int) -> "Profile":
    if special_file(path):
        raise ProfileError(f"profile: {path} is not a regular file; allowed: a .json profile file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise ProfileError(f"profile: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except FileNotFoundError:
        raise ProfileError(f"profile: file not found: {path}") from None
    except IsADirectoryError:
        raise ProfileError(f"profile: {path} is a directory; allowed: {', '.join(list_profiles())} "
                           "or a path to a .json file") from None
    except OSError as e:
        raise ProfileError(f"profile: {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"profile: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit; nesting too deep
        raise ProfileError(f"profile: {path} is not readable JSON ({unreadable(e)})") from None
    return Profile(validate_profile(data, where=f"profile {path}"), path=path)


# --------------------------------------------------------------------------- lookups


@dataclass(frozen=True)
class Lookup:
    """The answer of a table lookup.

    ``value`` is a throughput (TFLOP/s or GB/s). ``status`` says how it was
    obtained: ``measured`` (an exact row), ``interpolated`` (inside the table's
    range), ``clamped`` (outside the range: the nearest rows' value is used, as
    efficiency saturates with size), ``derived`` (from rows of a related kind, see
    ``Profile.attention_tflops``), or ``roofline`` (no row of this kind: the
    caller must use the datasheet peak). Anything but measured/interpolated is
    worth a visible warning.
    """

    value: float | None
    status: str
    detail: str = ""


def _log(x: float) -> float:
    return math.log2(max(float(x), 1e-9))


class _Grid:
    """Multilinear interpolation of log(value) on the grid of measured log-coordinates.

    The grid is the cross product of the distinct coordinates per dimension. A cell
    without a measurement is filled from the rows it can be ordered against, on the
    principle the clamping below also rests on (a kernel's efficiency does not drop when
    its problem grows in every dimension): a shape at least as large as measured rows
    runs at least as fast as the best of them (lower bound L), one no larger than
    measured rows at most as fast as the slowest of them (upper bound U). The cell takes
    the geometric mean of L and U when it has both, the one it has otherwise, and only
    when it is comparable to no row the inverse-square-distance mean of all rows (in log
    space). Scattered tables from several sources then fill consistently instead of
    copying whichever row happens to be nearest. Along each
    dimension the interpolation is piecewise linear in log-log, so time = work /
    throughput grows with size whenever the measurements are physical (throughput
    never more than doubles when the size doubles).
    """

    def __init__(self, pts: list[tuple[tuple[float, ...], float]], average_repeats: bool = True):
        # Rows at the same coordinates: independent measurements of one shape are averaged
        # (geometric mean); ``average_repeats=False`` keeps the last one instead (the collectives
        # table, whose rows at one rank count differ in a coordinate it does not look up).
        same: dict[tuple[float, ...], list[float]] = {}
        for c, v in pts:
            same.setdefault(c, []).append(math.log(v))
        exact = {c: (sum(vs) / len(vs) if average_repeats else vs[-1]) for c, vs in same.items()}
        pts = [(c, math.exp(v)) for c, v in exact.items()]
        self.axes = [sorted({p[0][d] for p in pts}) for d in range(len(pts[0][0]))]
        self._pts = pts
        self._exact = exact
        # log(value) per grid cell, filled on first use: a lookup reads only the 2^d cells around it.
        self.values: dict[tuple[int, ...], float] = {}

    def _cell(self, idx: tuple[int, ...]) -> float:
        v = self.values.get(idx)
        if v is None:
            coords = tuple(self.axes[d][i] for d, i in enumerate(idx))
            v = self._exact.get(coords)
            if v is None:
                v = self._fill(self._pts, coords)
            self.values[idx] = v
        return v

    @staticmethod
    def _fill(pts: list[tuple[tuple[float, ...], float]], coords: tuple[float, ...]) -> float:
        """log(value) of an unmeasured grid cell (see the class docstring)."""
        below = [v for c, v in pts if all(a <= b + 1e-9 for a, b in zip(c, coords))]
        above = [v for c, v in pts if all(a >= b - 1e-9 for a, b in zip(c, coords))]
        if below and above:
            return 0.5 * (math.log(max(below)) + math.log(min(above)))
        if below or above:
            return math.log(max(below) if below else min(above))
        num = den = 0.0
        for c, val in pts:
            w = 1.0 / sum((a - b) ** 2 for a, b in zip(c, coords))
            num += w * math.log(val)
            den += w
        return num / den

    def __call__(self, q: tuple[float, ...]) -> float:
        brackets = []
        for d, x in enumerate(q):
            ax = self.axes[d]
            if len(ax) == 1 or x <= ax[0]:
                brackets.append(((0, 1.0),))
                continue
            if x >= ax[-1]:
                brackets.append(((len(ax) - 1, 1.0),))
                continue
            j = next(i for i in range(1, len(ax)) if ax[i] >= x)
            t = (x - ax[j - 1]) / (ax[j] - ax[j - 1])
            brackets.append(((j - 1, 1.0 - t), (j, t)))
        total = 0.0
        import itertools

        for combo in itertools.product(*brackets):
            w = 1.0
            for _, wi in combo:
                w *= wi
            if w:
                total += w * self._cell(tuple(i for i, _ in combo))
        return math.exp(total)


def table_label(table: str, match: dict) -> str:
    """A table's rows in words: ``gemm fp8``, ``attention bf16 fwd cudnn causal``, ``memory_bound op=*``."""
    def word(k, v):
        if k == "causal":
            return "causal" if v else "non-causal"
        return f"{k}={v}" if k == "op" else str(v)
    parts = [word(k, v) for k, v in match.items() if v is not None]
    return " ".join([table, *parts])


class Profile:
    """A loaded profile with interpolating lookups (cached: shapes repeat)."""

    def __init__(self, data: dict, path: str | None = None):
        self.data = data
        self.path = path
        self.name: str = data.get("name", Path(path).stem if path else "profile")
        self.device: dict = data["device"]
        self.tables: dict[str, list[dict]] = data.get("tables", {})
        self._cache: dict[tuple, Lookup] = {}
        self._grids: dict[tuple, _Grid] = {}
        self._clocked: dict[tuple, Profile] = {}  # at_sustained_clock's copies, per GPU
        self._networked: dict[int, tuple[Profile, Profile]] = {}  # with_collectives_from: other -> (other, copy)
        # Bytes moved by the smallest memory-bound row of each op ('*': the generic rows).
        self._memory_floors: dict[str, float] = {}
        for r in self.tables.get("memory_bound", []):
            name, size = r.get("op"), float(r["bytes"])
            self._memory_floors[name] = min(size, self._memory_floors.get(name, size))
        # Ops whose every row timed torch's eager decomposition (``gpuhours calibrate``'s memory-bound rows:
        # RMSNorm in five kernels through float32, FP8 1x128 quantization in several), not the one fused
        # kernel the simulator's op stands for (its bytes are one read and one write): where the profile has
        # generic device-copy ('*') rows, those answer such ops instead (``eager_ops`` names them).
        # An op with rows of both kinds (fused rows added by a later run, --update keeping the older eager
        # ones) is priced from its other rows alone (``_mixed_ops``).
        kinds: dict[str, set[bool]] = {}
        for r in self.tables.get("memory_bound", []):
            if r.get("op") != "*":
                kinds.setdefault(r["op"], set()).add(r.get("variant") == EAGER)
        self.eager_ops: tuple[str, ...] = tuple(sorted(op for op, k in kinds.items()
                                                       if k == {True} and "*" in self._memory_floors))
        self._mixed_ops = frozenset(op for op, k in kinds.items() if k == {True, False})
        if self._mixed_ops:  # the smallest size among the rows that answer
            for op in self._mixed_ops:
                self._memory_floors[op] = min(float(r["bytes"]) for r in self.tables["memory_bound"]
                                              if r.get("op") == op and r.get("variant") != EAGER)

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, device={self.device.get('name')!r})"

    # Generic scattered-table lookup -------------------------------------------------
    def _scattered(self, table: str, match: dict, dims: tuple[str, ...], q: tuple[float, ...], value_key: str,
                   average_repeats: bool = True, skip_variant: str | None = None) -> Lookup:
        key = (table, tuple(sorted(match.items())), q, skip_variant)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows = [r for r in self.tables.get(table, []) if all(r.get(k) == v for k, v in match.items())
                and (skip_variant is None or r.get("variant") != skip_variant)]
        # Ceiling rows (``"ceiling": true``) are maxima over a search of shapes (e.g. MAMF): no
        # ordinary shape runs faster, but most run slower, so they bound the answer instead of
        # being interpolated between. Only when a table has nothing else do they answer, flagged.
        ceilings = [float(r[value_key]) for r in rows if r.get("ceiling")]
        ordinary = [r for r in rows if not r.get("ceiling")]
        only_ceiling = bool(rows) and not ordinary
        if ordinary:
            rows = ordinary
        if not rows:
            res = Lookup(None, "roofline", f"no {table_label(table, match)} rows")
        else:
            pts = [(tuple(_log(r[d]) for d in dims), float(r[value_key])) for r in rows]
            lq = tuple(_log(x) for x in q)
            outside = []
            clamped = list(lq)
            for i, d in enumerate(dims):
                lo = min(p[0][i] for p in pts)
                hi = max(p[0][i] for p in pts)
                if lq[i] < lo - 1e-9 or lq[i] > hi + 1e-9:
                    outside.append(f"{d}={q[i]:g} outside [{2**lo:g}, {2**hi:g}]")
                    clamped[i] = min(max(lq[i], lo), hi)
            gkey = (table, tuple(sorted(match.items())), skip_variant)
            grid = self._grids.get(gkey)
            if grid is None:
                grid = self._grids[gkey] = _Grid(pts, average_repeats)
            value = grid(tuple(clamped))
            if ceilings and not only_ceiling:
                value = min(value, max(ceilings))
            exact = any(all(abs(a - b) < 1e-9 for a, b in zip(p[0], lq)) for p in pts)
            if only_ceiling:
                res = Lookup(value, "clamped", f"{table_label(table, match)}: only maximum-over-shapes (ceiling) rows; "
                                               "an upper bound for this shape")
            elif outside:
                res = Lookup(value, "clamped", f"{table_label(table, match)}: " + "; ".join(outside))
            else:
                res = Lookup(value, "measured" if exact else "interpolated")
        self._cache[key] = res
        return res

    def fp8_scalings(self, table: str) -> frozenset[str]:
        """The FP8 scalings the ``table``'s fp8 rows were measured with, as their ``fp8_scaling`` says
        ("tensorwise", "blockwise-1x128/128x128"; "" for a row that does not say)."""
        return frozenset(str(r.get("fp8_scaling", "")) for r in self.tables.get(table, []) if r.get("dtype") == "fp8")

    def gemm_tflops(self, dtype: str, m: float, n: float, k: float) -> Lookup:
        return self._scattered("gemm", {"dtype": dtype}, ("m", "n", "k"), (m, n, k), "tflops")

    def grouped_gemm_tflops(self, dtype: str, groups: float, m_per_group: float, n: float, k: float) -> Lookup:
        """Grouped GEMM rate, driven by the per-expert shape (groups add parallelism).

        Grouped tables are short (DeepGEMM publishes V3's two expert shapes), and small experts
        fall below them: Qwen3-30B's down projection has k=768 against a smallest measured k of
        2048. Clamping would run it at the k=2048 rate, yet each output tile walks a k-loop, and a
        short one amortises the tile's prologue and epilogue over less work: DeepGEMM's dense FP8
        rows fall from 1168 TFLOP/s at k=2048 to 751 at k=512 (m=4096). A grouped GEMM in the
        contiguous layout is the dense kernel's tiles walked over expert segments, so where the
        query's k is below the grouped rows, the clamped grouped rate is scaled by the ratio the
        same dtype's dense rows measure between the two k at the query's m and n (status
        ``derived``). Smaller m or n only mean fewer tiles per expert; with many experts the tiles
        still fill the SMs' waves (the dense rows' falloff in m and n is mostly wave quantization of
        a single GEMM), so those clamp as before, as does anything above the grouped rows:
        efficiency does not drop as a problem grows."""
        dims = ("m_per_group", "n", "k", "groups")
        res = self._scattered("grouped_gemm", {"dtype": dtype}, dims, (m_per_group, n, k, groups), "tflops")
        if res.status != "clamped":
            return res
        rows = [r for r in self.tables.get("grouped_gemm", []) if r.get("dtype") == dtype and not r.get("ceiling")]
        if not rows:
            return res
        k_min = min(float(r["k"]) for r in rows)
        if k >= k_min:
            return res
        small = self.gemm_tflops(dtype, m_per_group, n, k)
        large = self.gemm_tflops(dtype, m_per_group, n, k_min)
        if small.value is None or large.value is None or small.value >= large.value:
            return res
        ratio = small.value / large.value
        return Lookup(res.value * ratio, "derived",
                      f"grouped_gemm {dtype}: k={k:g} below the grouped rows: their rate at k={k_min:g} x {ratio:.2f}, "
                      f"the change the dense gemm {dtype} rows measure between the two k ({res.detail})")

    def attention_kernels(self) -> set[str]:
        """The plan's attention kernels this profile has rows for: ``flash`` (the untagged rows) and the
        libraries rows name (``cudnn``, ``fa2``)."""
        return {r.get("library") or "flash" for r in self.tables.get("attention", [])}

    def attention_tflops(self, dtype: str, direction: str, seq: float, heads: float, qk_dim: float, v_dim: float,
                         library: str = "", causal: bool = True) -> Lookup:
        """Rows of one attention library: ``library`` "" reads the rows that name none (the profile's
        default flash kernel: FlashAttention-3 in the published Hopper profiles, whatever the runner
        measured in a calibrated one); "cudnn" or "fa2" read the rows tagged with that library.

        Rates count FLOPs the usual way (a causal kernel is credited half the query-key pairs), so a
        causal and a non-causal row of the same shape are different measurements: a causal kernel
        does not reach its non-causal rate (diagonal tiles are computed whole for half the credit,
        and the work per query block is uneven). When a direction has only non-causal rows (the FA3
        paper measured its backward without the mask), a causal rate is derived from them and the
        causal/non-causal ratio the same library measured in the other direction at the same shape,
        status ``derived``; without such a pair, the non-causal rate answers, ``clamped``, as an
        upper bound."""
        dims, q = ("seq", "heads", "qk_dim", "v_dim"), (seq, heads, qk_dim, v_dim)
        match = {"dtype": dtype, "direction": direction, "library": library or None}
        res = self._scattered("attention", {**match, "causal": causal}, dims, q, "tflops")
        if res.status != "roofline" or not causal:
            return res
        plain = self._scattered("attention", {**match, "causal": False}, dims, q, "tflops")
        if plain.value is None:
            return res
        other = {**match, "direction": "bwd" if direction == "fwd" else "fwd"}
        o_causal = self._scattered("attention", {**other, "causal": True}, dims, q, "tflops")
        o_plain = self._scattered("attention", {**other, "causal": False}, dims, q, "tflops")
        what = f"{library or 'flash'} {direction}"
        if o_causal.value is None or o_plain.value is None:
            return Lookup(plain.value, "clamped", f"no causal {what} rows: the non-causal rate, an upper bound")
        ratio = o_causal.value / o_plain.value
        clamp = f"; {plain.detail}" if plain.status == "clamped" else ""
        return Lookup(plain.value * ratio, "derived",
                      f"no causal {what} rows: the non-causal rate x {ratio:.2f}, the causal/non-causal ratio "
                      f"measured in {other['direction']}{clamp}")

    def _memory_rows(self, op: str) -> str:
        """Whose memory-bound rows answer ``op``: its own (unless they time an eager chain: ``eager_ops``), else
        the generic ``*`` rows (``op`` when neither)."""
        return op if op in self._memory_floors and op not in self.eager_ops or "*" not in self._memory_floors else "*"

    def memory_gbps(self, op: str, nbytes: float, own: bool = False) -> Lookup:
        """Achieved bandwidth of memory-bound op ``op`` moving ``nbytes``; ``own``: from ``op``'s own rows even
        where they time an eager chain (the held-out check of the table itself), not the device-copy rows."""
        rows = op if own and op in self._memory_floors else self._memory_rows(op)
        skip = EAGER if rows in self._mixed_ops and not own else None
        res = self._scattered("memory_bound", {"op": rows}, ("bytes",), (nbytes,), "gbps", skip_variant=skip)
        if rows != op:
            return Lookup(res.value, res.status, f"generic memory-bound row used for {op}")
        return res

    def memory_floor(self, op: str) -> tuple[str, float] | None:
        """The rows ``memory_gbps`` answers ``op`` from and the bytes moved by the smallest of them: a
        smaller kernel takes that size's rate, an upper bound (None without memory-bound rows)."""
        rows = self._memory_rows(op)
        return (rows, self._memory_floors[rows]) if rows in self._memory_floors else None

    def collective_gbps(self, op: str, ranks: float) -> Lookup:
        # Rows at one rank count differ by message size, largest last: the asymptotic bandwidth answers.
        return self._scattered("collectives", {"op": op}, ("ranks",), (ranks,), "gbps", average_repeats=False)

    def collective_size_factor(self, op: str, ranks: float, nbytes: float) -> Lookup:
        """Bus bandwidth of an ``nbytes`` message relative to the largest measured one.

        nccl-tests rows carry their message size (``bytes``); small messages are latency-bound and
        reach a fraction of the asymptotic bus bandwidth that :meth:`collective_gbps` answers with.
        The curve is read at the measured rank count nearest to ``ranks`` (log scale), piecewise
        linear in log-log; 1.0 at or above the largest message, or when no row carries a size."""
        rows = [r for r in self.tables.get("collectives", []) if r.get("op") == op and r.get("bytes")]
        if not rows:
            return Lookup(1.0, "roofline", f"no collectives rows with message sizes for {op}")
        near = min({float(r["ranks"]) for r in rows}, key=lambda n: abs(math.log(n) - math.log(max(ranks, 1.0))))
        by_size: dict[float, float] = {}
        for r in rows:
            if float(r["ranks"]) == near:
                by_size[float(r["bytes"])] = float(r["gbps"])  # last wins, as in collective_gbps
        pts = sorted(by_size.items())
        top = pts[-1][1]
        if nbytes >= pts[-1][0]:
            return Lookup(1.0, "measured")
        if nbytes <= pts[0][0]:
            return Lookup(pts[0][1] / top, "clamped", f"{op}: {nbytes:.3g} B below the smallest measured message")
        for (b0, g0), (b1, g1) in zip(pts, pts[1:]):
            if b0 <= nbytes <= b1:
                t = (math.log(nbytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
                return Lookup(math.exp(math.log(g0) + t * (math.log(g1) - math.log(g0))) / top, "interpolated")
        return Lookup(1.0, "measured")

    def sustained_fraction(self, dtype: str) -> Lookup:
        """Compute throughput under sustained load relative to this profile's own tables.

        The ``sustained`` rows compare a GEMM timed by the calibration harness (the way every
        table of this profile was measured: a few hundred milliseconds) with the same GEMM run
        back to back for seconds, as in a training step, when the board sits at its power limit
        and lowers its clock (:mod:`calibration.kernels.sustained`). The answer is the geometric
        mean of sustained / burst over the rows of ``dtype`` (all rows when ``dtype`` has none),
        never above 1: a longer run cannot be faster, so a ratio above 1 is timing noise. Status
        ``roofline`` (value 1.0) without rows: published profiles carry none."""
        hit = self._cache.get(("sustained", dtype))
        if hit is not None:
            return hit
        rows = self.tables.get("sustained", [])
        mine = [r for r in rows if r.get("dtype") == dtype] or rows
        if not mine:
            self._cache[("sustained", dtype)] = res = Lookup(1.0, "roofline", "no sustained rows")
            return res
        logs = [math.log(float(r["sustained_tflops"]) / float(r["burst_tflops"])) for r in mine]
        ratio = min(1.0, math.exp(sum(logs) / len(logs)))
        clocks = [(r.get("burst_sm_clock_mhz"), r.get("sustained_sm_clock_mhz")) for r in mine]
        clocks = [(a, b) for a, b in clocks if a and b]
        seen = f"; SM clock {clocks[0][0]:,.0f} -> {clocks[0][1]:,.0f} MHz" if clocks else ""
        res = Lookup(ratio, "measured", f"{mine[0]['dtype']} GEMM back to back for {float(mine[0]['seconds']):g} s ran "
                                        f"at {ratio:.2f} of its harness rate{seen}")
        self._cache[("sustained", dtype)] = res
        return res

    def with_collectives_from(self, other: "Profile") -> "Profile":
        """This profile with ``other``'s collectives rows, where it has none of its own.

        A calibration on one GPU measures kernels, not the cluster's network (``gpuhours calibrate``
        skips collectives below two GPUs): its predictions take the network from the cluster's own
        profile instead of the bare link rates. The copy says so (``collectives_from``), and is
        cached per other profile, so a search's lookups keep their caches."""
        if self.tables.get("collectives") or not other.tables.get("collectives"):
            return self
        held = self._networked.get(id(other))
        if held is not None and held[0] is other:  # the same profile object, not a reloaded namesake
            return held[1]
        data = dict(self.data, tables={**self.tables, "collectives": other.tables["collectives"]},
                    collectives_from=other.name)
        got = Profile(data, self.path)
        self._networked[id(other)] = (other, got)  # other kept alive beside its copy: its id is not reused
        return got

    def at_sustained_clock(self, fraction: float, hbm_gbps: float, peak_tflops: dict[str, float]) -> "Profile":
        """This profile with the rows of its ``burst_tables`` as a training step would run them.

        Such rows were timed in short bursts, at full clock; under sustained load the board holds
        ``fraction`` of that clock (GPUConfig.sustained_clock_fraction). A compute-bound kernel slows in
        proportion; a memory-bound one (few rows, e.g. DeepGEMM's M = 64 and 128 rows, which stream the
        weights at ~1.7 TB/s) is paced by HBM, whose clock the SM clock does not move, and keeps its
        rate. A row counts as compute-bound where its FLOPs per byte (``row_intensity``) reach the
        ridge at the lowered clock: peak x fraction / the HBM bandwidth of the device the rows were
        measured on (``device.hbm_gbps``; the GPU's, ``hbm_gbps``, when the profile does not say: the
        row's regime is a fact of its measurement, not of the GPU it is used for). Ceiling rows are maxima from
        other benchmarks and are left as they are. Cached on this profile per GPU: the lookups' own
        caches then serve every timer of that GPU."""
        hbm_gbps = float(self.device.get("hbm_gbps") or hbm_gbps)
        key = (fraction, hbm_gbps, tuple(sorted(peak_tflops.items())))
        hit = self._clocked.get(key)
        if hit is not None:
            return hit
        ridges = {}  # (table, dtype) -> (the ridge in FLOP per byte at the lowered clock, source prefixes)
        for name, spec in self.data.get("burst_tables", {}).items():
            table, _, dtype = name.partition("/")
            ridge = peak_tflops.get(dtype, 0.0) * 1e12 * fraction / (hbm_gbps * 1e9)
            ridges[(table, dtype)] = (ridge, tuple(prefix for prefix, _ in _burst_scopes(spec)))

        def factor(table: str, row: dict) -> float:
            burst = ridges.get((table, row.get("dtype")))
            slowed = (burst is not None and not row.get("ceiling") and row_intensity(table, row) >= burst[0]
                      and str(row.get("source", "")).startswith(burst[1]))
            return fraction if slowed else 1.0

        out = self.scaled(factor, self.name)
        self._clocked[key] = out
        return out

    def scaled(self, factor: Callable[[str, dict], float], name: str) -> "Profile":
        """A copy whose rows' rates (``tflops``, ``gbps``) are multiplied by ``factor(table, row)``, named
        ``name``; rows left at 1 are shared with this profile (rows are never changed in place). The one
        way the sensitivity moves, the calibration band and the sustained clock derive a profile."""
        tables = {}
        for table, rows in self.tables.items():
            out = []
            for r in rows:
                k = factor(table, r)
                out.append({**r, **{key: r[key] * k for key in ("tflops", "gbps") if key in r}} if k != 1.0 else r)
            tables[table] = out
        copy = Profile({**self.data, "tables": tables}, path=self.path)
        copy.name = name
        return copy

    def tables_read(self) -> set[tuple[str, tuple]]:
        """(table, match) of every lookup made so far, through this profile or its sustained-clock copies."""
        keys = set(self._cache)
        for copy in [*self._clocked.values(), *(c for _, c in self._networked.values())]:
            keys |= set(copy._cache)
        return {(key[0], key[1]) for key in keys}

    def burst_evidence(self, table: str, dtype: str) -> str | None:
        """Why this profile's ``table`` rows of ``dtype`` were measured in short bursts, at a clock the
        board does not hold under sustained load (None: not known to be; they are taken as measured).
        Where only some sources' rows were, each is named by the start of its source."""
        spec = self.data.get("burst_tables", {}).get(f"{table}/{dtype}")
        if spec is None or isinstance(spec, str):
            return spec
        return "; ".join(f"the rows from {prefix}: {evidence}" for prefix, evidence in _burst_scopes(spec))

    def sm_fraction(self, sms: float, total_sms: float) -> Lookup:
        """Relative compute throughput with ``sms`` of ``total_sms`` SMs (1.0 = all)."""
        rows = self.tables.get("sm_scaling", [])
        if not rows:
            return Lookup(sms / total_sms, "roofline", "no sm_scaling rows: throughput proportional to SMs")
        pts = sorted((r["sms"] / r["total_sms"], float(r["relative_throughput"])) for r in rows)
        pts = [(1.0, 1.0)] + pts if all(abs(p[0] - 1.0) > 1e-9 for p in pts) else pts
        pts.sort()
        x = sms / total_sms
        if x <= pts[0][0]:
            return Lookup(pts[0][1] * x / pts[0][0], "clamped", "below the smallest measured SM count")
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= x <= x1:
                t = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
                return Lookup(y0 + t * (y1 - y0), "interpolated")
        return Lookup(1.0, "measured")
