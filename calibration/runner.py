"""``gpuhours calibrate``: run every kernel family and write a profile.

The harness picks the device (a CUDA GPU if present, else the CPU with tiny
shapes, marked ``device.kind: "cpu"``), derives the shapes from a scenario
(:mod:`calibration.shapes`), then for each kernel family checks every kernel
against a float64 reference, times it (:mod:`calibration.timing`) and collects
profile rows. Progress goes to stderr, one line per family with a counter.
The profile is written once at the end through
:func:`simulator.profile.save_profile` (validated, atomic).

Wiring: ``register(subparsers)`` adds the ``calibrate`` subcommand and
``run(args) -> int`` executes it. This module imports neither torch nor Triton
at import time, so registering the subcommand costs nothing for ``predict``.

Exit codes: 0 profile written, all checks passed; 1 profile written but some
kernel failed its check (listed in the profile's ``calibration.failures``);
2 bad arguments or nothing measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from simulator.cli import some_text, whole_number

FAMILIES = ("gemm", "grouped_gemm", "attention", "memory_bound", "sm_scaling", "collectives", "sustained")
# Seconds the ``sustained`` family runs its GEMM back to back: long enough to reach the power limit
# (FlashInfer saw a B200 throttle after ~5 ms; a step of a large model lasts seconds).
SUSTAIN_SECONDS = {"gpu": 20.0, "gpu-quick": 6.0, "cpu": 0.3}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``calibrate`` to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure kernel throughput on this machine and write a profile",
        description="Measure dense/grouped GEMMs (BF16, FP8), MLA attention, memory-bound ops, "
        "SM-budget scaling and collectives; write a calibration profile JSON.",
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _seconds(text: str) -> float:
    """An argparse ``type``: a duration in seconds, above 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: more than 0, at most 3600")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="path of the profile JSON to write")
    p.add_argument("--quick", action="store_true", help="small sweep (scenario shapes, one power of two each side)")
    p.add_argument("--shapes", default=None, metavar="NAME_OR_PATH",
                   help="scenario preset or YAML to take shapes from (default: DeepSeek-V3; 'tiny' for a smoke run)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: the GPU if there is one, else the CPU with tiny shapes")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"comma-separated subset of: {', '.join(FAMILIES)}")
    p.add_argument("--name", default=None, type=some_text("a profile name such as my-h100"),
                   help="profile name (default: from the device)")
    # torch.manual_seed takes a signed 64-bit integer: say so before measuring anything
    p.add_argument("--seed", type=whole_number(0, 2**63 - 1), default=0, help="seed for the random inputs")
    p.add_argument("--sustain-seconds", type=_seconds, default=None, metavar="S",
                   help="how long the sustained family runs its GEMM back to back "
                        f"(default {SUSTAIN_SECONDS['gpu']:g} s on a GPU, {SUSTAIN_SECONDS['gpu-quick']:g} s with --quick)")
    p.add_argument("--update", action="store_true",
                   help="merge into an existing --out profile of the same device: keep the tables this run does "
                        "not measure and, in those it does, the rows at other shapes (one family or one "
                        "scenario's shapes per command)")


def _progress(family: str, done: int, total: int, extra: str = "", final: bool = False) -> None:
    """One line per family on stderr; rewritten in place on a terminal."""
    line = f"[{family}] {done}/{total}" + (f" {extra}" if extra else "")
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
    elif final:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _run_family(family: str, items: Sequence, fn: Callable[[Any], Any], ctx) -> list[dict]:
    """Measure one family's items with progress; the SM clock is sampled meanwhile (``ctx.clocks``)."""
    from calibration.clocks import ClockSampler, device_index

    rows: list[dict] = []
    t0 = time.perf_counter()
    failed0 = len(ctx.failures)
    with ClockSampler(device_index(ctx.device), interval_ms=200) as clock:
        for i, item in enumerate(items, 1):
            got = fn(item)
            if isinstance(got, list):
                rows.extend(got)
            elif got is not None:
                rows.append(got)
            _progress(family, i, len(items))
    seen = clock.summary()
    if seen:
        ctx.clocks[family] = seen
    failed = len(ctx.failures) - failed0
    extra = f"items, {len(rows)} rows, {failed} failed checks, {time.perf_counter() - t0:.1f} s"
    _progress(family, len(items), len(items), extra, final=True)
    for f in ctx.failures[failed0:]:
        print(f"gpuhours calibrate: CHECK FAILED: {f['kernel']} [{f['variant']}]: {f['error']}", file=sys.stderr)
    return rows


def _parse_families(text: str) -> list[str]:
    fams = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown families {', '.join(bad)}; allowed: {', '.join(FAMILIES)}")
    return fams


def run(args: argparse.Namespace) -> int:
    """Execute ``gpuhours calibrate``; returns the exit code."""
    from calibration import shapes as shp

    try:
        families = _parse_families(args.families)
    except ValueError as e:
        print(f"gpuhours calibrate: {e}", file=sys.stderr)
        return 2
    from simulator.atomic import check_writable
    from simulator.errors import ConfigError

    try:  # refuse a bad --out before measuring anything (save_profile creates missing directories)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        check_writable(args.out, "--out")
    except OSError as e:
        print(f"gpuhours calibrate: --out: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"gpuhours calibrate: {e}", file=sys.stderr)
        return 2

    import torch

    from calibration.timing import TimingConfig

    want = getattr(args, "device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        print("gpuhours calibrate: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    use_cuda = want != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")

    try:  # a bad --shapes is refused on the CPU too, where the shapes are then not used
        dims, plan, shapes_from = shp.plan_for(args.shapes, quick=args.quick, backward=True, m_step=1)
    except (shp.ShapeError, OSError) as e:
        print(f"gpuhours calibrate: {e}", file=sys.stderr)
        return 2
    if getattr(args, "update", False):  # read the profile to merge into before measuring anything
        from calibration.device_info import describe_device
        from simulator.profile import ProfileError

        try:
            existing_profile(args.out, describe_device(device).get("name"))
        except ProfileError as e:
            print(f"gpuhours calibrate: --update: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    if use_cuda:
        timing = TimingConfig.quick() if args.quick else TimingConfig()
    else:
        if args.shapes not in (None, "tiny"):
            print("gpuhours calibrate: no GPU: running the CPU harness with tiny shapes "
                  f"(--shapes {args.shapes} ignored)", file=sys.stderr)
        dims, shapes_from = dict(shp.TINY_DIMS), "model dims"
        timing = TimingConfig(warmup=1, min_reps=5, max_reps=15, budget_ms=10.0)
        # On the CPU the quick sweep skips backward GEMM shapes to stay fast, and spaces M by 4x.
        plan = shp.sweep_plan(dims, quick=args.quick, backward=not args.quick, m_step=2)
    args.shapes_from = shapes_from
    if use_cuda:
        return _measure_and_save(args, families, device, dims or {}, plan, timing)
    # CPU: time single-threaded, so that other processes on the machine disturb the numbers less.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure_and_save(args, families, device, dims, plan, timing)
    finally:
        torch.set_num_threads(threads)


def _measure_and_save(args, families, device, dims, plan, timing) -> int:
    from calibration.device_info import describe_device
    from calibration.kernels import attention, collectives, gemm, grouped_gemm, memory_bound, sm_budget, sustained
    from calibration.kernels.common import Context, triton_mode

    use_cuda = device.type == "cuda"

    ctx = Context(device=device, timing=timing, quick=args.quick, triton_mode=triton_mode(device), seed=args.seed)
    if ctx.triton_mode is None:
        ctx.note("triton kernels: skipped (no GPU; set TRITON_INTERPRET=1 to run them under the interpreter)")
    elif ctx.triton_mode == "interpreter":
        ctx.note("triton kernels ran under the interpreter (TRITON_INTERPRET=1): their times are meaningless")
    if not use_cuda:
        ctx.note("cpu harness: tiny shapes, perf_counter timing, one thread; numbers describe this CPU, not a GPU")

    started = time.perf_counter()
    tables: dict[str, list[dict]] = {}
    if {"gemm", "grouped_gemm", "sustained"} & set(families):  # the FP8 forms this torch accepts, once
        ctx.fp8 = gemm.probe_fp8(device, seed=args.seed)
        ctx.note(ctx.fp8.describe())
        for tried in ctx.fp8.tried:  # each FP8 form refused, and why
            ctx.skipped.append({"kernel": "fp8 probe", "variant": tried.split(": ")[0], "reason": tried})
    if "gemm" in families:
        items = [(s, dt) for s in plan.gemm for dt in plan.dtypes]
        tables["gemm"] = _run_family("gemm", items, lambda it: gemm.measure(ctx, it[0], it[1]), ctx)
    if "grouped_gemm" in families:
        items = [(s, dt) for s in plan.grouped for dt in plan.dtypes]
        tables["grouped_gemm"] = _run_family("grouped_gemm", items, lambda it: grouped_gemm.measure(ctx, it[0], it[1]), ctx)
    if "attention" in families:
        items = [(s, d) for s in plan.attention for d in ("fwd", "bwd")]
        tables["attention"] = _run_family("attention", items, lambda it: attention.measure(ctx, it[0], it[1]), ctx)
    if "memory_bound" in families:
        tables["memory_bound"] = _run_family("memory_bound", list(plan.memory), lambda s: memory_bound.measure(ctx, s), ctx)
    if "sm_scaling" in families:
        tables["sm_scaling"] = _run_family("sm_scaling", [plan.sm_gemm],
                                           lambda s: sm_budget.measure(ctx, s, plan.sm_fractions), ctx)
    if "collectives" in families:
        tables["collectives"] = _run_family("collectives", [plan.collective_bytes],
                                            lambda sizes: collectives.measure_on_gpus(ctx, sizes), ctx)
    if "sustained" in families:
        seconds = getattr(args, "sustain_seconds", None) or \
            SUSTAIN_SECONDS["cpu" if not use_cuda else "gpu-quick" if args.quick else "gpu"]
        tables["sustained"] = _run_family("sustained", [plan.sm_gemm],
                                          lambda s: sustained.rows(ctx, s, seconds), ctx)
    tables = {k: v for k, v in tables.items() if v}
    if not tables:
        print("gpuhours calibrate: nothing was measured; no profile written", file=sys.stderr)
        return 2

    profile = build_profile(ctx, describe_device(device), tables, dims, args, time.perf_counter() - started)
    from simulator.profile import ProfileError, save_profile

    if getattr(args, "update", False):
        try:
            profile = merge_into_existing(profile, args.out)
        except ProfileError as e:
            print(f"gpuhours calibrate: --update: {e}", file=sys.stderr)
            return 2

    path = save_profile(profile, args.out)
    n_rows = sum(len(v) for v in tables.values())
    print(f"gpuhours calibrate: wrote {path} ({n_rows} rows; {len(ctx.failures)} failed checks; "
          f"{len(ctx.skipped)} variants unavailable)", file=sys.stderr)
    return 1 if ctx.failures else 0


def build_profile(ctx, device: dict, tables: dict, dims: dict, args, seconds: float) -> dict:
    """The profile document (schema of :mod:`simulator.profile`)."""
    from simulator.profile import SCHEMA, SCHEMA_VERSION

    name = getattr(args, "name", None) or ("calibrated-" + "".join(
        c if c.isalnum() else "-" for c in device["name"].lower()).strip("-"))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": "gpuhours calibrate" + (" --quick" if ctx.quick else ""),
        "device": device,
        "tables": tables,
        "notes": list(ctx.notes),
        "calibration": {
            "quick": bool(ctx.quick),
            "shapes": getattr(args, "shapes", None) or ("tiny" if device.get("kind") == "cpu" else "v3"),
            "dims": dims,
            "shapes_from": getattr(args, "shapes_from", "model dims"),
            "timing": {"warmup": ctx.timing.warmup, "min_reps": ctx.timing.min_reps,
                       "max_reps": ctx.timing.max_reps, "budget_ms": ctx.timing.budget_ms,
                       "method": "cuda-events" if ctx.is_cuda else "perf_counter", "statistic": "median"},
            "seconds": round(seconds, 1),
            "failures": list(ctx.failures),
            "unavailable": list(ctx.skipped),
            # SM clock and power sampled (read-only) while each family ran: the clock its rates belong to.
            **({"clocks_during": dict(ctx.clocks)} if ctx.clocks else {}),
        },
    }


def existing_profile(path, device_name: str | None) -> dict | None:
    """The profile at ``path`` that ``--update`` merges into (None if there is none yet).

    Refuses a corrupt file, or one measured on another device, with a ProfileError: called
    before measuring, so that the refusal comes before the sweep, not after it."""
    from pathlib import Path

    from simulator.profile import ProfileError, load_profile

    if not Path(path).exists():
        return None
    old = load_profile(path).data
    if old["device"].get("name") != device_name:
        raise ProfileError(f"{path} was measured on {old['device'].get('name')!r}, "
                           f"this run is on {device_name!r}; refusing to mix devices")
    return old


def _row_key(table: str, row: dict) -> tuple:
    """Where a row sits in a kernel table: the op timer's lookup fields (simulator.uncertainty.TABLES)."""
    from simulator.uncertainty import TABLES

    group, coords = TABLES[table][0], TABLES[table][1]
    return tuple(row.get(k) for k in group + coords)


def merge_into_existing(profile: dict, path) -> dict:
    """``profile`` merged into the existing profile at ``path`` (same device, checked).

    Tables this run did not measure are kept whole. In a table it measured, the old rows at
    coordinates it did not measure are kept too (so several scenarios' shapes can be measured into one
    profile, one ``--shapes`` per run); a row at the same coordinates is replaced by the new one.
    ``sm_scaling`` and ``sustained`` describe one GEMM each and are replaced whole."""
    import copy

    from simulator.uncertainty import TABLES

    old = existing_profile(path, profile["device"].get("name"))
    if old is None:
        return profile
    merged = copy.deepcopy(profile)
    old_tables = old.get("tables", {})
    kept = {k: copy.deepcopy(v) for k, v in old_tables.items() if k not in profile["tables"]}
    rows_kept: dict[str, int] = {}
    for name, rows in profile["tables"].items():
        if name not in TABLES or name not in old_tables:  # sm_scaling, sustained: replaced whole
            continue
        new_keys = {_row_key(name, r) for r in rows}
        older = [copy.deepcopy(r) for r in old_tables[name] if _row_key(name, r) not in new_keys]
        if older:
            merged["tables"][name] = older + merged["tables"][name]
            rows_kept[name] = len(older)
    merged["tables"] = {**kept, **merged["tables"]}
    merged["notes"] = list(dict.fromkeys(old.get("notes", []) + profile["notes"]))
    merged["calibration"]["tables_kept_from_previous_run"] = sorted(kept)
    clocks = {**old.get("calibration", {}).get("clocks_during", {}), **profile["calibration"].get("clocks_during", {})}
    if clocks:  # the clock each family last ran at, whichever run measured it
        merged["calibration"]["clocks_during"] = clocks
    if rows_kept:
        merged["calibration"]["rows_kept_from_previous_run"] = rows_kept
    shapes = [s for s in (old.get("calibration", {}).get("shapes_merged") or [old.get("calibration", {}).get("shapes")])
              if s]
    merged["calibration"]["shapes_merged"] = list(dict.fromkeys(shapes + [profile["calibration"].get("shapes")]))
    # What every run measured, and every failure and unavailable variant any of them met: the rest of the
    # block describes the last run alone.
    was, now = old.get("calibration", {}), profile["calibration"]
    merged["calibration"]["runs"] = (was.get("runs") or [_run_summary(old)]) + [_run_summary(profile)]
    for key in ("failures", "unavailable"):
        seen = {json.dumps(x, sort_keys=True): x for x in was.get(key, []) + now.get(key, [])}
        merged["calibration"][key] = list(seen.values())
    if not now.get("dims") and was.get("dims"):  # a run at a scenario's ops alone has no dims of its own
        merged["calibration"]["dims"] = was["dims"]
    return merged


def _run_summary(profile: dict) -> dict:
    """One run of the harness, as ``calibration.runs`` lists it."""
    cal = profile.get("calibration", {})
    return {"created": profile.get("created"), "shapes": cal.get("shapes"), "quick": cal.get("quick"),
            "tables": sorted(profile.get("tables", {})), "seconds": cal.get("seconds")}


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m calibration.runner --out PATH [--quick] ...``."""
    parser = argparse.ArgumentParser(prog="gpuhours calibrate")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
