"""The ``gpuhours`` command line.

Subcommands: predict, validate, schedule, trace, search, sensitivity,
calibrate, import-network, dashboard, and the preset listings models,
clusters, scenarios, profiles. Input errors print one line on stderr and exit
with code 2; nothing is written before the input is known to be good.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from typing import Callable

from .errors import ConfigError, GpuhoursError
from .profile import ProfileError

# Subcommands implemented in other modules: name -> module with register(subparsers).
# Imported only when that subcommand runs (calibration needs torch; the simulator never does).
LAZY = {
    "schedule": "simulator.schedule_cli",
    "trace": "simulator.des.trace_cli",
    "search": "simulator.search",
    "sensitivity": "simulator.sensitivity",
    "calibrate": "calibration.runner",
    "import-network": "calibration.network_import",
}
LAZY_HELP = {
    "schedule": "print a pipeline schedule's timeline and bubble",
    "trace": "write a Perfetto (Chrome trace) JSON of one step simulated by the DES",
    "search": "rank parallelism plans for a model and GPU count",
    "sensitivity": "tornado table: how GPU-hours move with each input",
    "calibrate": "measure kernels on this machine into a profile",
    "import-network": "import nccl-tests / DeepEP tables into a profile",
}


def _fmt(x: float, unit: str = "") -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)) and math.isfinite(x):
        if abs(x) >= 1e9:
            return f"{x / 1e9:,.2f} B{unit}"
        if abs(x) >= 1e5:
            return f"{x:,.0f}{unit}"
        return f"{x:,.4g}{unit}"
    return f"{x}{unit}"


def check_finite(obj: object, where: str = "") -> None:
    """Raise ConfigError at the first inf or NaN in a report (dicts, lists, numbers): inputs so extreme
    that the arithmetic overflowed (cluster.nvlink_gbps=1e-300, cost.usd_per_gpu_hour=1e308). JSON has
    no inf or NaN, and a table of them says nothing, so neither is printed."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(where or "result", f"{obj} (an input is too extreme for a finite result)",
                          "inputs of physical size (bandwidths, TFLOPS, latencies, token counts, prices)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{where}[{i}]")


def print_table(rows: list[tuple[str, str]], title: str = "") -> None:
    if title:
        print(title)
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


def given(what: str) -> Callable[[str], str]:
    """An argparse ``type`` that refuses an empty value (``--csv "$UNSET"``), which would otherwise
    read as the option not given and silently use its default."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty; allowed: {what}")
        return text

    return parse


PROFILE_ARG = "a profile name (gpuhours profiles) or a path to a .json file"


def add_scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", metavar="NAME_OR_PATH", help="scenario preset name or YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field, e.g. --set plan.pp=8 --set cluster.ib_gbps=25")
    p.add_argument("--profile", default=None, type=given(PROFILE_ARG),
                   help="calibration profile name or JSON path (default: the cluster's)")


def _clock_text(gpu) -> str:
    """", SM clock 1600 of 1830 MHz under load" where the GPU gives its clocks, else ""."""
    return f", SM clock {gpu.sustained_clock_mhz:g} of {gpu.peak_clock_mhz:g} MHz under load" if gpu.sustained_clock_mhz else ""


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load, plan_text, predict, report, run_cost

    sc = load(args.scenario, args.overrides)
    pred = predict(sc, engine=args.engine, profile=args.profile)
    rep = report(pred)
    run = run_cost(sc, engine=args.engine, profile=args.profile) if (sc.training.phases or sc.training.batch_ramp_from) else None
    if run:
        rep["phases"] = run["phases"]
        for k in ("table", "total_gpu_hours", "published_total_gpu_hours", "total_error", "total_usd",
                  "gpu_hours_per_trillion_tokens_run"):
            rep[k] = run[k]
    bands = None
    if args.interval:
        from .api import prediction_bands

        bands = rep["interval"] = prediction_bands(sc, profile=args.profile, engine=args.engine,
                                                   headline=rep["gpu_hours_per_trillion_tokens"], run=run)
    check_finite(rep)
    if args.json:
        print(json.dumps(rep))
        return 0
    rows = [
        ("model", f"{sc.model.name}: {_fmt(rep['total_params'])} params, {_fmt(rep['activated_params'])} activated"),
        ("cluster", f"{sc.cluster.num_gpus} x {sc.cluster.gpu.name} (NVLink {sc.cluster.nvlink_gbps:g} GB/s, "
                    f"IB {sc.cluster.ib_gbps:g} GB/s{_clock_text(sc.cluster.gpu)})"),
        ("plan", plan_text(rep["plan"], sc.microbatches)),
        ("engine", rep["engine"]),
        ("step time", f"{_sig(rep['step_time_s'], 3)} s"),
        ("tokens/s/GPU", _sig(rep["tokens_per_s_per_gpu"], 0)),
        ("MFU (BF16 peak)", f"{_sig(100 * rep['mfu'], 1)} %"),
        ("bubble", f"{100 * rep['bubble_fraction']:.1f} % of the step"),
        ("exposed communication", f"{100 * rep['exposed_comm_fraction']:.1f} % of the step"),
        ("overlap ratio", f"{100 * rep['overlap_ratio']:.1f} % of communication hidden"),
        ("peak memory", f"{rep['peak_memory_gib']:.1f} GiB of {rep['hbm_gib']:.1f} GiB "
                        f"({'fits' if rep['fits_in_memory'] else 'DOES NOT FIT'})"),
        ("GPU-hours / 1T tokens", f"{rep['gpu_hours_per_trillion_tokens']:,.0f} (steady state"
                                  + (")" if rep["fits_in_memory"] else "; the plan does NOT fit in memory)")),
        ("USD / 1T tokens", f"${rep['usd_per_trillion_tokens']:,.0f} at ${sc.cost.usd_per_gpu_hour:g}/GPU-hour"),
    ]
    if run:
        what = "batch ramp" if len(run["phases"]) == 1 else "every modelled phase"
        if run["gpu_hours_per_trillion_tokens_run"] is not None:  # None: every phase is given, none modelled
            rows.append(("run GPU-hours / 1T", f"{run['gpu_hours_per_trillion_tokens_run']:,.0f} ({what} included)"))
        rows.append(("run total", f"{run['total_gpu_hours']:,.0f} GPU-hours, ${run['total_usd']:,.0f}, "
                                  f"{_sig(run['days_on_cluster'], 1)} days on this cluster"))
    if bands:
        from .uncertainty import band_rows

        rows += band_rows(bands)
    print_table(rows, title=f"gpuhours predict: {sc.name}")
    if rep.get("step_parts_s"):
        from .breakdown import parts_lines

        print_table(parts_lines(rep["step_parts_s"], rep["step_time_s"], rep.get("recompute_s")),
                    title="where that step goes (pacing rank; kernels at full-GPU rates):")
    warnings = list(rep["warnings"])
    if run:
        from .lifecycle import phase_warnings
        from .lifecycle_text import run_table_lines

        if len(run["phases"]) > 1 or run.get("published_total_gpu_hours"):
            print("whole run, by phase (published where the scenario records it):")
            headline = next((ph.get("plan") for ph in run["phases"] if ph.get("modelled")), None)
            print("\n".join(run_table_lines(run, headline)))
        warnings += phase_warnings(run, warnings)  # a one-phase run's too (a lifted batch-ramp segment)
    sys.stdout.flush()  # the table before the warnings when both streams go to one terminal or file
    for w in warnings:
        print(f"  warning: {w}", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import DEFAULT_CSV, read_csv, results_json, validate_rows

    rows = read_csv(args.csv or DEFAULT_CSV)
    profile = None
    if args.profile:
        from .profile import load_profile

        profile = load_profile(args.profile)
    results, mape = validate_rows(rows, engine=args.engine, profile=profile)
    warnings = sorted({r.profile_note for r in results if r.profile_note})
    modelled = sum(r.error_pct is not None for r in results)
    where = args.csv or "the public set"
    if not results:
        raise ConfigError("validate --csv", f"{where}: it has no row with include=true")
    if args.json:
        if not modelled:  # nothing on stdout: a JSON reader gets the error alone
            first = results[0]
            raise ConfigError("validate --csv", f"{where}: none of its rows could be modelled "
                                                f"({first.run_id}: {first.reason})")
        print(json.dumps({**results_json(results, mape), **({"warnings": warnings} if warnings else {})}))
    else:
        _print_validation(results, mape)
        sys.stdout.flush()
        for w in warnings:
            print(f"  warning: {w}", file=sys.stderr)
    if not modelled:
        raise ConfigError("validate --csv", f"{where}: none of its rows could be modelled (reasons above)")
    return 0


def _print_validation(results: list, mape: float | None) -> None:
    print(f"{'run':28s} {'metric':28s} {'predicted':>11s} {'measured':>11s} {'error':>8s}")
    for r in results:
        if r.error_pct is None:
            print(f"{r.run_id:28s} not modelled: {r.reason}")
            continue
        note = f"  (defaults: {', '.join(r.defaults)})" if r.defaults else ""
        note += f"  [{r.memory_note}]" if r.memory_note else ""
        print(f"{r.run_id:28s} {r.metric:28s} {r.predicted:11.1f} {r.measured:11.1f} {r.error_pct:+7.1f}%{note}")
    print(f"MAPE over {sum(r.error_pct is not None for r in results)} rows: "
          + (f"{mape:.1f} %" if mape is not None else "n/a"))


def _sig(x: float, decimals: int) -> str:
    """``x`` with thousands separators and ``decimals`` places, or 3 significant digits when
    that would print a nonzero value as 0 (a throughput of 0.004 tokens/s is not 0)."""
    if x and abs(x) < 0.5 * 10.0 ** -decimals:
        return f"{x:.3g}"
    return f"{x:,.{decimals}f}"


def _describe(kind: str, name: str) -> str:
    """One line on a preset, for the text listings (JSON lists names only)."""
    from . import scenario as scn

    if kind == "models":
        from .workload import param_counts

        m = scn.load_model(name)
        pc = param_counts(m)
        moe = f", {m.n_routed_experts} experts (top-{m.experts_per_token})" if m.is_moe else ", dense"
        return (f"{pc.total / 1e9:,.2f} B params, {pc.activated_excl_embedding / 1e9:,.2f} B activated, "
                f"{m.layers} layers{moe}")
    if kind == "clusters":
        c = scn.load_cluster(name)
        return (f"{c.num_gpus:,} x {c.gpu.name}, {c.gpus_per_node} per node, NVLink {c.nvlink_gbps:g} GB/s, "
                f"IB {c.ib_gbps:g} GB/s per GPU{_clock_text(c.gpu)}")
    if kind == "scenarios":
        return str(scn.raw_scenario(name).get("description", ""))
    from .profile import load_profile

    dev = load_profile(name).data.get("device", {})
    return f"{dev.get('name', '?')} ({dev.get('kind', '?')})"


def _lister(fn: Callable[[], list[str]], kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        names = fn()
        if getattr(args, "json", False):
            print(json.dumps(names))
        else:
            w = max((len(n) for n in names), default=0)
            for n in names:
                print(f"{n:<{w}}  {_describe(kind, n)}".rstrip())
        return 0

    run.__doc__ = f"list {kind}"
    return run


def cmd_dashboard(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
           "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer"]  # no "Deploy" button: this is a local tool
    return subprocess.call(cmd)


def whole_number(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``lo .. hi`` (no upper bound when ``hi`` is None);
    argparse turns its refusal into the one-line usage error naming the option."""
    allowed = f"{lo} .. {hi}" if hi is not None else f"{lo} or more"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {allowed}")
        return value

    return parse


def some_text(what: str) -> Callable[[str], str]:
    """An argparse ``type`` for a label or address that must not be empty or blank (``--name ""``
    would write a profile with no name; ``--scheduler ""`` would quietly run locally)."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty; allowed: {what}")
        return text.strip()

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the bad-input rule), not a usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from .profile import list_profiles
    from .scenario import list_clusters, list_models, list_scenarios

    parser = _Parser(prog="gpuhours", description="Cost and performance of MoE training runs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="predict step time, throughput, memory and GPU-hours")
    add_scenario_args(p)
    p.add_argument("--engine", choices=("analytic", "des"), default="analytic",
                   help="analytic (closed forms, default) or des (discrete-event simulation)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--interval", action="store_true",
                   help="add the error bands of the GPU-hours: from the validation runs and from the "
                        "calibration profile's spread (analytic engine; takes about a second)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("validate", help="compare predictions with published runs")
    p.add_argument("--csv", default=None, type=given("a CSV file path"),
                   help="CSV in the shared/validation schema (default: the public set)")
    p.add_argument("--engine", choices=("analytic", "des"), default="analytic",
                   help="analytic (default) or des")
    p.add_argument("--profile", default=None, type=given(PROFILE_ARG),
                   help="calibration profile for every row (default: each row's cluster profile); "
                        "pass a --csv holding only that GPU's rows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    for name, fn in (("models", list_models), ("clusters", list_clusters), ("scenarios", list_scenarios),
                     ("profiles", list_profiles)):
        p = sub.add_parser(name, help=f"list the {name[:-1]} presets" if name != "profiles" else
                           "list the shipped calibration profiles")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_lister(fn, name))

    p = sub.add_parser("dashboard", help="start the Streamlit dashboard")
    p.add_argument("--port", type=whole_number(1, 65535), default=8501, help="port to serve on (default 8501)")
    p.set_defaults(func=cmd_dashboard)

    wanted = argv[0] if argv else None
    for name, module in LAZY.items():
        if name == wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=LAZY_HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UnicodeDecodeError as e:  # a ValueError, but its text names no file
        print(f"gpuhours: error: an input file is not UTF-8 text ({e.reason} at byte {e.start})", file=sys.stderr)
        return 2
    except (GpuhoursError, ProfileError, ValueError) as e:
        print(f"gpuhours: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"gpuhours: error: missing package {e.name!r}; install the matching extra (pip install -e '.[...]')",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:  # a path that is missing, a directory or not writable
        print(f"gpuhours: error: {e.filename or 'path'}: {e.strerror or e}", file=sys.stderr)
        return 2
    except RecursionError:  # the last net for input nested past Python's limit
        print("gpuhours: error: an input nests too deeply", file=sys.stderr)
        return 2
    except ArithmeticError as e:  # the last net under input validation: say so in one line
        print(f"gpuhours: error: an input value is out of range ({type(e).__name__}: {e})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
