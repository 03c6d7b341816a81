"""Import measured network numbers into a profile's ``collectives`` table.

Two sources, both produced on real clusters with their own tools:

* **nccl-tests** (``all_reduce_perf``, ``all_gather_perf``, ...): the text
  output, a table with columns ``size count type redop root time algbw busbw
  #wrong`` for the out-of-place run, then the same for in-place. Each row
  becomes ``{op, ranks, bytes, gbps, ...}`` with ``gbps`` the **bus bandwidth**
  (nccl-tests' figure that is comparable across rank counts), ``bytes`` the
  size column, ``ranks`` from the ``Rank N`` lines (or ``--ranks``), ``link``
  ``intranode`` when all ranks sit on one host, else ``internode``.
* **DeepEP-style benchmark tables** (CSV, or JSON: a list of objects or
  ``{"rows": [...]}``) with an EP size (``ep``), optionally a message size
  (``bytes``) or ``tokens``, and ``dispatch_GBps`` / ``combine_GBps``; each
  line becomes two rows, ops ``all_to_all_dispatch`` and ``all_to_all_combine``.

Rows with a non-positive bandwidth (nccl-tests prints 0.00 for tiny messages)
are dropped: a profile stores only positive throughputs. Rows are ordered by
message size, smallest first: ``Profile.collective_gbps`` looks up by op and
ranks only, and among rows with equal coordinates the last one wins, so it
answers with the largest message's (asymptotic) bandwidth, and
``Profile.collective_size_factor`` scales it down for a smaller message from the
rows' sizes (the simulator's ring collectives and TP traffic use both).

:func:`import_into_profile` merges rows into an existing profile (replacing
rows with the same op, ranks, bytes and link) and saves it atomically through
:func:`simulator.profile.save_profile`. CLI: ``gpuhours import-network``
(:func:`register_import`). No torch needed.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from simulator.cli import some_text, whole_number
from simulator.errors import special_file, unreadable

NCCL_OPS = {
    "all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
    "alltoall": "all_to_all", "all_to_all": "all_to_all", "broadcast": "broadcast", "reduce": "reduce",
    "sendrecv": "sendrecv", "scatter": "scatter", "gather": "gather", "hypercube": "hypercube",
}


class NetworkImportError(ValueError):
    """Input that cannot be turned into collectives rows; the message says why."""


_MPI_PREFIX = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:\s?")


def _clean_lines(text: str) -> list[str]:
    return [_MPI_PREFIX.sub("", line.rstrip("\n")) for line in text.splitlines()]


def _detect_op(lines: list[str], name_hint: str | None) -> str | None:
    pats = [re.compile(r"Collective test starting:\s*(\w+?)_perf"), re.compile(r"(\w+?)_perf\b")]
    for pat in pats:
        for line in lines:
            m = pat.search(line)
            if m and m.group(1) in NCCL_OPS:
                return NCCL_OPS[m.group(1)]
    if name_hint:
        m = re.search(r"(all_reduce|all_gather|reduce_scatter|alltoall|all_to_all|broadcast|sendrecv|reduce|scatter|gather)",
                      name_hint)
        if m:
            return NCCL_OPS[m.group(1)]
    return None


def _detect_ranks_hosts(lines: list[str]) -> tuple[int | None, set[str]]:
    ranks, hosts = set(), set()
    pat = re.compile(r"^#\s*Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)")
    for line in lines:
        m = pat.match(line.strip())
        if m:
            ranks.add(int(m.group(1)))
            hosts.add(m.group(2))
    if ranks:
        return max(ranks) + 1, hosts
    for line in lines:  # single-process runs: "# nThread 1 nGpus 8 ..."
        m = re.search(r"nThread\s+(\d+)\s+nGpus\s+(\d+)", line)
        if m:
            return int(m.group(1)) * int(m.group(2)), hosts
    return None, hosts


def parse_nccl_tests(text: str, *, op: str | None = None, ranks: int | None = None, link: str | None = None,
                     source: str | None = None, in_place: bool = False, name_hint: str | None = None) -> list[dict]:
    """``collectives`` rows from nccl-tests output text (see module docstring)."""
    lines = _clean_lines(text)
    header = None
    for line in lines:
        s = line.strip()
        if s.startswith("#"):
            toks = s.lstrip("#").split()
            if "size" in toks and "busbw" in toks:
                header = toks
                break
    if header is None:
        raise NetworkImportError("nccl-tests: no table header with 'size' and 'busbw' columns found")
    op = op or _detect_op(lines, name_hint)
    if op is None:
        raise NetworkImportError("nccl-tests: cannot tell which collective this is; pass --op (e.g. all_reduce)")
    found_ranks, hosts = _detect_ranks_hosts(lines)
    ranks = ranks or found_ranks
    if not ranks:
        raise NetworkImportError("nccl-tests: cannot tell the number of ranks; pass --ranks N")
    link = link or ("internode" if len(hosts) > 1 else "intranode")
    which = 1 if in_place else 0
    def col(name):
        idx = [i for i, t in enumerate(header) if t == name]
        if len(idx) <= which:
            raise NetworkImportError(f"nccl-tests: header lacks the {'in' if in_place else 'out-of'}-place {name!r} column")
        return idx[which]
    i_size, i_time, i_alg, i_bus = header.index("size"), col("time"), col("algbw"), col("busbw")
    i_type = header.index("type") if "type" in header else None
    rows = []
    for n, line in enumerate(lines, 1):
        toks = line.split()
        if not toks or toks[0].startswith("#") or not toks[0].isdigit() or len(toks) <= i_bus:
            continue
        try:
            nbytes, t_us, alg, bus = int(toks[i_size]), float(toks[i_time]), float(toks[i_alg]), float(toks[i_bus])
        except ValueError:  # "N/A" in a column nccl-tests did not measure
            continue
        if not all(map(math.isfinite, (t_us, alg, bus))):  # the input is wrong, not the profile it goes into
            raise NetworkImportError(f"nccl-tests: line {n}: time, algbw and busbw must be finite numbers, "
                                     f"got {toks[i_time]} {toks[i_alg]} {toks[i_bus]}")
        if bus <= 0:
            continue
        row = {"op": op, "ranks": int(ranks), "bytes": nbytes, "gbps": bus, "algbw_gbps": alg,
               "ms": t_us / 1e3, "link": link, "variant": "nccl-tests" + (" in-place" if in_place else ""),
               "source": source or "nccl-tests"}
        if i_type is not None:
            row["dtype"] = toks[i_type]
        rows.append(row)
    if not rows:
        raise NetworkImportError("nccl-tests: table has no rows with a positive bus bandwidth")
    return sorted(rows, key=lambda r: r["bytes"])


_ALIASES = {
    "ranks": ("ep", "ep_size", "ranks", "num_ranks", "world_size"),
    "dispatch": ("dispatch_gbps", "dispatch_GBps", "dispatch_bw", "dispatch_bw_gbps", "dispatch"),
    "combine": ("combine_gbps", "combine_GBps", "combine_bw", "combine_bw_gbps", "combine"),
    "dispatch_us": ("dispatch_us", "dispatch_time_us"),
    "combine_us": ("combine_us", "combine_time_us"),
    "bytes": ("bytes", "message_bytes", "msg_bytes", "size"),
    "tokens": ("tokens", "num_tokens"),
    "hidden": ("hidden",),
    "link": ("link", "type"),
    "sms": ("sms", "num_sms"),
}


def _get(row: Mapping[str, Any], key: str):
    for alias in _ALIASES[key]:
        for k in (alias, alias.lower()):
            if k in row and row[k] not in (None, ""):
                return row[k]
    return None


def _num(value, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise NetworkImportError(f"deepep: {what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise NetworkImportError(f"deepep: {what} is not a finite number: {value!r}")
    return x


def _deepep_records(text: str, fmt: str | None) -> tuple[list[Mapping], str | None]:
    fmt = fmt or ("json" if text.lstrip().startswith(("{", "[")) else "csv")
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise NetworkImportError(f"deepep: not valid JSON ({e.msg} at line {e.lineno})") from None
        source = None
        if isinstance(data, Mapping):
            data, source = data.get("rows", []), data.get("source")
        if not isinstance(data, list):
            raise NetworkImportError("deepep: JSON must be a list of rows or an object with 'rows'")
        bad = next((i for i, rec in enumerate(data) if not isinstance(rec, Mapping)), None)
        if bad is not None:
            raise NetworkImportError(f"deepep: row {bad} is {data[bad]!r}, not an object of columns")
        return data, source
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines)))), None


def parse_deepep(text: str, *, fmt: str | None = None, ranks: int | None = None, link: str | None = None,
                 source: str | None = None) -> list[dict]:
    """``all_to_all_dispatch`` / ``all_to_all_combine`` rows from a DeepEP-style table."""
    records, file_source = _deepep_records(text, fmt)
    if not records:
        raise NetworkImportError("deepep: no rows found")
    rows = []
    for i, rec in enumerate(records):
        ep = _get(rec, "ranks")
        if ep is None and not ranks:
            raise NetworkImportError(f"deepep: row {i} has no EP size (column 'ep'); pass --ranks N")
        n_ranks = _num(ep, f"row {i} ep") if ep is not None else ranks
        if n_ranks < 1 or n_ranks != int(n_ranks):
            raise NetworkImportError(f"deepep: row {i} ep is {ep!r}; allowed: a whole number, 1 or more")
        n_ranks = int(n_ranks)
        row_link = link or _get(rec, "link")
        for op, key in (("all_to_all_dispatch", "dispatch"), ("all_to_all_combine", "combine")):
            bw = _get(rec, key)
            if bw is None:
                continue
            gbps = _num(bw, f"row {i} {key}")
            if gbps <= 0:
                continue
            row: dict[str, Any] = {"op": op, "ranks": n_ranks, "gbps": gbps, "variant": "deepep",
                                   "source": source or file_source or "deepep benchmark table"}
            for extra in ("bytes", "tokens", "hidden", "sms"):
                v = _get(rec, extra)
                if v is not None:
                    row[extra] = int(_num(v, f"row {i} {extra}"))
                    if row[extra] < 1:
                        raise NetworkImportError(f"deepep: row {i} {extra} is {v!r}; allowed: a whole number, 1 or more")
            us = _get(rec, f"{key}_us")
            if us is not None:
                row["ms"] = _num(us, f"row {i} {key}_us") / 1e3
            if row_link:
                row["link"] = str(row_link)
            rows.append(row)
    if not rows:
        raise NetworkImportError("deepep: no dispatch/combine bandwidth columns (dispatch_GBps, combine_GBps)")
    return sorted(rows, key=lambda r: (r["op"], r["ranks"], r.get("bytes", 0)))


def _key(row: Mapping) -> tuple:
    return (row.get("op"), row.get("ranks"), row.get("bytes"), row.get("link"))


def merge_rows(profile: Mapping, rows: Iterable[Mapping], table: str = "collectives") -> dict:
    """A copy of ``profile`` with ``rows`` merged into ``table`` (same op/ranks/bytes/link replaced)."""
    out = copy.deepcopy(dict(profile))
    new = [dict(r) for r in rows]
    keys = {_key(r) for r in new}
    tables = out.setdefault("tables", {})
    kept = [r for r in tables.get(table, []) if _key(r) not in keys]
    tables[table] = kept + new
    return out


def import_into_profile(profile_in: str | Path, out: str | Path, rows: Iterable[Mapping]) -> Path:
    """Load a profile (validated), merge ``rows`` into ``collectives``, save atomically to ``out``."""
    from simulator.profile import load_profile, save_profile

    data = load_profile(profile_in).data  # cached object: merge_rows copies, never mutates it
    return save_profile(merge_rows(data, rows), out)


# --------------------------------------------------------------------------- CLI


def register_import(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``import-network`` to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "import-network",
        help="merge nccl-tests output or DeepEP benchmark tables into a profile's collectives table",
    )
    add_import_arguments(p)
    p.set_defaults(func=run_import)
    return p


register = register_import  # the name simulator.cli's lazy loader calls


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nccl", action="append", default=[], metavar="FILE", help="nccl-tests output (repeatable)")
    p.add_argument("--deepep", action="append", default=[], metavar="FILE", help="DeepEP-style CSV/JSON table (repeatable)")
    p.add_argument("--profile", required=True, metavar="IN", help="profile to merge into (name or path)")
    p.add_argument("--out", required=True, metavar="OUT", help="where to write the merged profile")
    p.add_argument("--ranks", type=whole_number(1), default=None,
                   help="number of ranks (nccl-tests: overrides the Rank lines; DeepEP: for tables without 'ep')")
    p.add_argument("--op", default=None, choices=sorted(NCCL_OPS),
                   help="collective for nccl-tests output that does not name it")
    p.add_argument("--link", default=None, type=some_text("a link label such as intranode or internode"),
                   help="link label for the rows (default: detected, e.g. intranode)")
    p.add_argument("--source", default=None, type=some_text("a source label such as 'nccl-tests on our 2 nodes'"),
                   help="source label stored in each row")
    p.add_argument("--in-place", action="store_true", help="nccl-tests: take the in-place columns")


def run_import(args: argparse.Namespace) -> int:
    """Execute ``gpuhours import-network``; returns the exit code."""
    from simulator.profile import ProfileError

    if not args.nccl and not args.deepep:
        print("gpuhours import-network: give at least one --nccl FILE or --deepep FILE", file=sys.stderr)
        return 2
    def read(flag: str, f: str) -> str:
        if special_file(f):  # a FIFO blocks forever, /dev/zero fills memory
            raise NetworkImportError(f"{flag}: {f} is not a regular file; give a text file")
        try:
            return Path(f).read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark
        except OSError as e:  # name the flag: "[Errno 2] ..." does not say which input was meant
            raise NetworkImportError(f"{flag}: {f}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise NetworkImportError(f"{flag}: {f}: not UTF-8 text ({e.reason} at byte {e.start})") from None

    def parsed(flag: str, f: str, parse: Callable[[str], list[dict]]) -> list[dict]:
        text = read(flag, f)
        try:
            return parse(text)
        except NetworkImportError as e:  # name the file: two --nccl inputs give the same messages
            raise NetworkImportError(f"{flag} {f}: {e}") from None
        except csv.Error as e:  # e.g. a field past the csv module's 131,072-character limit
            raise NetworkImportError(f"{flag} {f}: not a readable CSV ({e})") from None
        except (ValueError, RecursionError) as e:  # an integer past Python's digit limit, nesting too deep
            raise NetworkImportError(f"{flag} {f}: unreadable value ({unreadable(e)})") from None

    rows: list[dict] = []
    try:
        for f in args.nccl:
            rows += parsed("--nccl", f, lambda text: parse_nccl_tests(
                text, op=NCCL_OPS.get(args.op), ranks=args.ranks, link=args.link,
                source=args.source or f"nccl-tests: {Path(f).name}", in_place=args.in_place, name_hint=Path(f).name))
        for f in args.deepep:
            rows += parsed("--deepep", f, lambda text: parse_deepep(
                text, fmt="json" if f.endswith(".json") else None, ranks=args.ranks, link=args.link,
                source=args.source or f"deepep: {Path(f).name}"))
        path = import_into_profile(args.profile, args.out, rows)
    except (NetworkImportError, ProfileError, OSError) as e:
        print(f"gpuhours import-network: {e}", file=sys.stderr)
        return 2
    print(f"gpuhours import-network: merged {len(rows)} collectives rows into {path}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpuhours import-network")
    add_import_arguments(parser)
    return run_import(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
