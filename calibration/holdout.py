"""Held-out-shape accuracy: how well does a profile predict shapes it did not measure?

The simulator never sees most real shapes exactly: it interpolates between
measured rows in log space (:class:`simulator.profile.Profile`). To know how
much to trust that, split a measured table: hide some rows, build a profile
from the rest, predict the hidden rows through the same lookups the simulator
uses, and compare with what was measured. The error is on *time*
(``measured throughput / predicted throughput - 1``), since time is what the
simulator outputs.

By default only *interior* rows are held out (every coordinate strictly inside
the remaining rows' range), which measures interpolation; ``--any`` also holds
out edge rows, which then come back ``clamped``.

Usage::

    python -m calibration.holdout PROFILE.json [--fraction 0.2] [--seed 0] [--loo] [--json]

Prints, per table, the number of rows trained on and held out, the median and
the worst absolute time error, and the worst row.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys

from simulator.uncertainty import TABLES
from simulator.uncertainty import leave_one_out as _held_out_rows


def _coords(table: str) -> tuple[str, ...]:
    return TABLES[table][1]


def _group(table: str) -> tuple[str, ...]:
    """The fields that make one table of rows (dtype, direction, library, op): rows are only
    predicted from rows of their own group, as the op timer's lookups do."""
    return TABLES[table][0]


def _interior(row: dict, others: list[dict], coords: tuple[str, ...]) -> bool:
    """True when every coordinate of ``row`` lies within the others' range (no clamping)."""
    return all(min(o[c] for o in others) <= row[c] <= max(o[c] for o in others) for c in coords)


def split_rows(table: str, rows: list[dict], fraction: float, seed: int, interior_only: bool = True):
    """(train, held): ``fraction`` of each group's rows held out, at random (seeded)."""
    coords = _coords(table)
    rng = random.Random(seed)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in _group(table)), []).append(r)
    train, held = [], []
    for members in groups.values():
        order = list(range(len(members)))
        rng.shuffle(order)
        want = int(round(fraction * len(members)))
        chosen: set[int] = set()
        for i in order:
            if len(chosen) >= want:
                break
            rest = [members[j] for j in range(len(members)) if j != i and j not in chosen]
            if members[i].get("ceiling"):  # a maximum over shapes, not a shape to predict
                continue
            if len(rest) >= 2 and (not interior_only or _interior(members[i], rest, coords)):
                chosen.add(i)
        held += [members[i] for i in sorted(chosen)]
        train += [members[i] for i in range(len(members)) if i not in chosen]
    return train, held


def _score(table: str, cases: list, trained: int) -> dict:
    """Report of predicted rows: ``cases`` is [(measured row, Lookup the timer answered for its shape)]."""
    value_key = TABLES[table][2]
    errors, statuses, worst = [], {}, None
    for r, res in cases:
        statuses[res.status] = statuses.get(res.status, 0) + 1
        if res.value is None:
            continue
        err = r[value_key] / res.value - 1.0  # predicted time / measured time - 1
        errors.append(abs(err))
        if worst is None or abs(err) > abs(worst[0]):
            worst = (err, {k: r.get(k) for k in (*_group(table), *_coords(table))})
    return {
        "train": trained, "held": len(cases), "statuses": statuses,
        "median_abs_time_error": statistics.median(errors) if errors else None,
        "worst_abs_time_error": max(errors) if errors else None,
        "worst_row": worst[1] if worst else None,
        "worst_signed_error": worst[0] if worst else None,
    }


def evaluate(profile_data: dict, fraction: float = 0.2, seed: int = 0, tables=None, interior_only: bool = True) -> dict:
    """Per table: rows trained/held, median and worst |time error|, lookup statuses, worst row."""
    from simulator.profile import Profile

    report: dict[str, dict] = {}
    for table, rows in profile_data.get("tables", {}).items():
        if table not in TABLES or (tables and table not in tables) or len(rows) < 3:
            continue
        train, held = split_rows(table, rows, fraction, seed, interior_only)
        if not held:
            report[table] = {"train": len(train), "held": 0, "note": "no row could be held out"}
            continue
        prof = Profile(dict(profile_data, tables={table: train}))
        lookup = TABLES[table][3]
        report[table] = _score(table, [(r, lookup(prof, r)) for r in held], len(train))
    return report


def leave_one_out(profile_data: dict, tables=None) -> dict:
    """Per table: predict every ordinary row from all the others (edge rows come back clamped);
    :func:`simulator.uncertainty.leave_one_out` holds the rows out, the same one the error bands use."""
    cases: dict[str, list] = {}
    for h in _held_out_rows(profile_data, tables):
        cases.setdefault(h.table, []).append((h.row, h.lookup))
    return {table: _score(table, c, len(profile_data["tables"][table]) - 1) for table, c in cases.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.holdout", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="profile name or path")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of rows held out per group (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables", default=None, help="comma-separated subset of " + ", ".join(TABLES))
    parser.add_argument("--any", action="store_true", help="also hold out edge rows (they come back clamped)")
    parser.add_argument("--loo", action="store_true", help="leave one out: predict every row from all the others")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from simulator.profile import ProfileError, load_profile

    try:
        prof = load_profile(args.profile)
    except ProfileError as e:
        print(f"holdout: {e}", file=sys.stderr)
        return 2
    tables = args.tables.split(",") if args.tables else None
    if args.loo:
        report = leave_one_out(prof.data, tables)
    else:
        report = evaluate(prof.data, args.fraction, args.seed, tables, interior_only=not args.any)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{'table':<14}{'train':>6}{'held':>6}{'median err':>12}{'worst err':>11}  worst row")
    for table, r in report.items():
        if not r.get("held"):
            print(f"{table:<14}{r['train']:>6}{0:>6}  {r.get('note', '')}")
            continue
        med, worst = r["median_abs_time_error"], r["worst_abs_time_error"]
        print(f"{table:<14}{r['train']:>6}{r['held']:>6}{med * 100:>11.1f}%{worst * 100:>10.1f}%  {r['worst_row']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
