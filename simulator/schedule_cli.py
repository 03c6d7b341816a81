"""``gpuhours schedule``: draw a pipeline schedule and its bubble.

    gpuhours schedule NAME --pp P --microbatches M [--vpp V] [--pairs]
                      [--f F --b B --w W --fb FB] [--p2p T] [--width N] [--json]

prints each rank's timeline (like the figure in DualPipe's README), the
simulated bubble per rank and the published closed form (with a note where
the times given break the closed form's assumption F = B - W), in DualPipe's
notation: F forward chunk, B full backward chunk, W its weight part, F&B an
overlapped forward+backward pair. Defaults F=1, B=2, W=1, F&B=F+B satisfy the
closed forms' assumption F = B - W. ``--pairs`` runs the 1F1B or interleaved
steady state as F&B pairs (Megatron-LM's batch-level MoE all-to-all overlap).
Every line fits in ``--width`` columns: by default the terminal's width, or
100 when the output is not a terminal (a pipe, a file). A task's label is
drawn only where it fits inside the task's cell; widen to see more labels.
``--json`` prints one JSON object instead.
Invalid input raises :class:`~simulator.errors.ConfigError` (a ``ValueError``) with a
one-line message naming the flag as typed (``--pp: dualpipe needs an even pp, got 7``):
the schedule library names its inputs as a scenario does (``plan.pp``), and
:func:`as_flags` renames them here.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil

from simulator.errors import ConfigError
from simulator.schedules import (
    DEFAULT_WIDTH,
    MIN_WIDTH,
    SCHEDULE_NAMES,
    TaskTimes,
    closed_form,
    closed_form_caveat,
    render_text,
    simulate,
    validate_schedule_args,
)

MAX_WIDTH = 10_000  # columns: wider than any terminal; the drawing's cost grows with it


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``schedule`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "schedule",
        help="draw a pipeline schedule's timeline and bubble",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("name", metavar="NAME", help=f"schedule: {', '.join(SCHEDULE_NAMES)}")
    p.add_argument(
        "--pp",
        type=int,
        required=True,
        help="pipeline ranks (for dualpipev: devices, holding 2*pp stages)",
    )
    p.add_argument(
        "--microbatches", type=int, required=True, help="micro-batches per step"
    )
    p.add_argument(
        "--vpp", type=int, default=1, help="virtual stages per rank (interleaved)"
    )
    p.add_argument(
        "--f", type=float, default=1.0, help="F: forward chunk time (default 1)"
    )
    p.add_argument(
        "--b", type=float, default=2.0, help="B: full backward chunk time (default 2)"
    )
    p.add_argument(
        "--w", type=float, default=1.0, help="W: weight-gradient part of B (default 1)"
    )
    p.add_argument(
        "--fb",
        type=float,
        default=None,
        help="F&B: overlapped forward+backward pair time (default F+B)",
    )
    p.add_argument(
        "--p2p", type=float, default=0.0, help="time per hop between ranks (default 0)"
    )
    p.add_argument(
        "--pairs",
        action="store_true",
        help="1f1b/interleaved: run the steady state as F&B pairs (Megatron's EP overlap)",
    )
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"columns of every output line, at least {MIN_WIDTH} (default: the terminal's "
        f"width, or {DEFAULT_WIDTH} when the output is not a terminal); labels show where they fit",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


MAX_TASKS = 2_000_000  # pp x micro-batches x chunks beyond which a drawing is no longer a drawing


def default_width() -> int:
    """Columns for the drawing when ``--width`` is not given: the terminal's
    width (``COLUMNS`` first, as :func:`shutil.get_terminal_size` reads it),
    or :data:`DEFAULT_WIDTH` when stdout is not a terminal; never below
    :data:`MIN_WIDTH`."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


# The schedule library's field names (a scenario's) -> what the user of this command typed.
FLAGS = {
    "plan.schedule": "NAME",
    "plan.pp": "--pp",
    "plan.microbatches": "--microbatches",
    "plan.vpp": "--vpp",
    "plan.ep_overlap": "--pairs",
    "times.f": "--f",
    "times.b": "--b",
    "times.w": "--w",
    "times.fb": "--fb",
    "times": "--f, --b, --w, --fb, --p2p",  # the whole step overflows: any of them may be the cause
    "p2p": "--p2p",
    "width": "--width",
}
_DOTTED = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in sorted(FLAGS, key=len, reverse=True) if "." in k) + r")\b")


def as_flags(error: ConfigError) -> ConfigError:
    """The same error with the library's field names replaced by this command's flags: in the
    field it names (``plan.pp`` -> ``--pp``) and where its explanation names another field
    (``times.w: must be <= times.b`` -> ``--w: must be <= --b``). Explanation and allowed values
    are otherwise kept word for word."""
    def rename(text: str | None) -> str | None:
        return _DOTTED.sub(lambda m: FLAGS[m.group(0)], text) if text else text

    return ConfigError(FLAGS.get(error.field, error.field), rename(error.problem), rename(error.allowed))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ConfigError as e:
        raise as_flags(e) from None


def _run(args: argparse.Namespace) -> int:
    if args.width is not None and args.width < MIN_WIDTH:
        raise ConfigError("width", f"{args.width} columns is too narrow", f"{MIN_WIDTH} or more")
    if args.width is not None and args.width > MAX_WIDTH:
        raise ConfigError("width", f"{args.width} columns is too wide"[:200], f"{MIN_WIDTH} .. {MAX_WIDTH}")
    validate_schedule_args(args.name, args.pp, args.microbatches, args.vpp)  # before the size check: --pp -3
    if args.pp * args.microbatches * max(1, args.vpp) > MAX_TASKS:
        raise ValueError(f"--pp x --microbatches x --vpp: {args.pp * args.microbatches * max(1, args.vpp):,} chunks; "
                         f"allowed: at most {MAX_TASKS:,}")
    times = TaskTimes(args.f, args.b, args.w, args.fb)
    tl = simulate(
        args.name, args.pp, args.microbatches, times, vpp=args.vpp, p2p=args.p2p,
        pairs=args.pairs,
    )
    if not args.json:
        print(render_text(tl, width=args.width or default_width()))
        return 0
    caveat = closed_form_caveat(args.name, times, args.p2p, tl.pairs)
    out = {
        "schedule": args.name,
        "pp": args.pp,
        "microbatches": args.microbatches,
        "vpp": args.vpp,
        "times": {"F": times.f, "B": times.b, "W": times.w, "F&B": times.f_and_b},
        "p2p": args.p2p,
        "pairs": tl.pairs,
        "bubble": tl.max_bubble,
        "bubble_per_rank": tl.bubbles(),
        "closed_form": closed_form(args.name, args.pp, times, args.vpp),
        "closed_form_applies": not caveat,
        "closed_form_caveat": caveat,
        "makespan": tl.makespan,
        "ranks": [
            [
                {
                    "kind": t.kind,
                    "mb": t.mb,
                    "chunk": t.chunk,
                    "mb2": t.mb2,
                    "chunk2": t.chunk2,
                    "split_backward": t.split_backward,
                    "start": s,
                    "end": e,
                }
                for t, s, e in row
            ]
            for row in tl.ranks
        ],
    }
    print(json.dumps(out))
    return 0
