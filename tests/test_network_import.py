"""Importing nccl-tests output and DeepEP-style tables into a profile's collectives table.

The inputs under tests/data/ are SYNTHETIC (labelled so in each file): the
layout of the real tools' output, with invented numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from calibration import network_import as ni
from simulator.profile import SCHEMA, SCHEMA_VERSION, ProfileError, load_profile, save_profile

DATA = Path(__file__).resolve().parent / "data"
ALL_REDUCE = DATA / "nccl_all_reduce_8gpu_synthetic.txt"
ALLTOALL = DATA / "nccl_alltoall_16gpu_2node_synthetic.txt"


def _profile(tmp_path, rows=()):
    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": "base",
            "device": {"name": "Synthetic GPU", "kind": "gpu"},
            "tables": {"gemm": [{"dtype": "bf16", "m": 1, "n": 1, "k": 1, "tflops": 1.0}],
                       "collectives": list(rows)}}
    path = tmp_path / "base.json"
    save_profile(data, path)
    return path


def test_nccl_all_reduce_rows():
    rows = ni.parse_nccl_tests(ALL_REDUCE.read_text())
    assert [r["bytes"] for r in rows] == [4096, 1048576, 16777216, 268435456, 1073741824]  # 8 B (0.00) dropped
    top = rows[-1]
    assert top["op"] == "all_reduce" and top["ranks"] == 8 and top["link"] == "intranode"
    assert top["gbps"] == 323.97 and top["algbw_gbps"] == 185.13 and top["ms"] == pytest.approx(5.8)
    assert all(r["gbps"] > 0 for r in rows)


def test_nccl_in_place_columns_and_overrides():
    rows = ni.parse_nccl_tests(ALL_REDUCE.read_text(), in_place=True, ranks=16, link="nvlink", source="s")
    assert rows[-1]["gbps"] == 322.86 and rows[-1]["ranks"] == 16 and rows[-1]["link"] == "nvlink"
    assert rows[-1]["source"] == "s"


def test_nccl_two_hosts_tagged_output():
    rows = ni.parse_nccl_tests(ALLTOALL.read_text(), name_hint=ALLTOALL.name)
    assert {r["op"] for r in rows} == {"all_to_all"}
    assert rows[-1]["ranks"] == 16 and rows[-1]["link"] == "internode" and rows[-1]["gbps"] == 41.94


def test_nccl_errors_are_clear():
    with pytest.raises(ni.NetworkImportError, match="no table header"):
        ni.parse_nccl_tests("hello\n")
    text = "\n".join(ln for ln in ALL_REDUCE.read_text().splitlines() if "all_reduce_perf" not in ln)
    with pytest.raises(ni.NetworkImportError, match="--op"):
        ni.parse_nccl_tests(text)
    assert ni.parse_nccl_tests(text, op="all_reduce")[0]["op"] == "all_reduce"


def test_deepep_csv_and_json():
    rows = ni.parse_deepep((DATA / "deepep_synthetic.csv").read_text())
    ops = {(r["op"], r["ranks"]): r for r in rows}
    assert ops[("all_to_all_dispatch", 8)]["gbps"] == 150 and ops[("all_to_all_combine", 64)]["gbps"] == 45
    assert ops[("all_to_all_dispatch", 16)]["link"] == "internode" and ops[("all_to_all_dispatch", 16)]["sms"] == 24
    rows = ni.parse_deepep((DATA / "deepep_synthetic.json").read_text())
    d8 = next(r for r in rows if r["op"] == "all_to_all_dispatch" and r["ranks"] == 8)
    assert d8["bytes"] == 1835008 and d8["ms"] == pytest.approx(0.08) and "SYNTHETIC" in d8["source"]


def test_deepep_needs_ep_or_ranks():
    text = "dispatch_GBps,combine_GBps\n40,41\n"
    with pytest.raises(ni.NetworkImportError, match="--ranks"):
        ni.parse_deepep(text)
    rows = ni.parse_deepep(text, ranks=32)
    assert {r["ranks"] for r in rows} == {32}


def test_merge_replaces_same_key_and_keeps_others(tmp_path):
    old = [{"op": "all_reduce", "ranks": 8, "bytes": 1073741824, "gbps": 1.0, "link": "intranode"},
           {"op": "all_gather", "ranks": 8, "gbps": 100.0}]
    base = _profile(tmp_path, old)
    out = tmp_path / "merged.json"
    ni.import_into_profile(base, out, ni.parse_nccl_tests(ALL_REDUCE.read_text()))
    merged = load_profile(out)
    rows = merged.tables["collectives"]
    assert len(rows) == 6  # 5 new all_reduce + the all_gather kept; the stale all_reduce replaced
    # The ranks-only lookup answers with the largest message's bandwidth (last of equal rows).
    assert merged.collective_gbps("all_reduce", 8).value == pytest.approx(323.97)
    assert load_profile(base).tables["collectives"] == old  # input untouched
    assert merged.tables["gemm"] == load_profile(base).tables["gemm"]


def test_cli_import_network(tmp_path, capsys):
    base = _profile(tmp_path)
    parser = argparse.ArgumentParser(prog="gpuhours")
    sub = parser.add_subparsers(dest="cmd")
    ni.register_import(sub)
    out = tmp_path / "out.json"
    args = parser.parse_args(["import-network", "--nccl", str(ALL_REDUCE), "--nccl", str(ALLTOALL),
                              "--deepep", str(DATA / "deepep_synthetic.json"),
                              "--profile", str(base), "--out", str(out)])
    assert args.func(args) == 0
    prof = load_profile(out)
    ops = {r["op"] for r in prof.tables["collectives"]}
    assert ops == {"all_reduce", "all_to_all", "all_to_all_dispatch", "all_to_all_combine"}
    assert "merged" in capsys.readouterr().err


@pytest.mark.parametrize("text,match", [
    ("ep,dispatch_GBps,combine_GBps\n8,inf,40\n", "row 0 dispatch is not a finite number"),
    ("ep,dispatch_GBps,combine_GBps\n8,40,nan\n", "row 0 combine is not a finite number"),
    ("ep,dispatch_GBps,combine_GBps\n8,40,40\n-4,30,30\n", "row 1 ep is '-4'; allowed: a whole number, 1 or more"),
    ("ep,dispatch_GBps,combine_GBps\n0,40,40\n", "row 0 ep is '0'"),
    ("ep,dispatch_GBps,combine_GBps\n0.5,40,40\n", "row 0 ep is '0.5'"),
    ("ep,dispatch_GBps,bytes\n8,40,-5\n", "row 0 bytes is '-5'; allowed: a whole number, 1 or more"),
    ("ep,dispatch_GBps,tokens\n8,40,0\n", "row 0 tokens is '0'"),
    # JSON whose rows are not objects of columns used to raise TypeError tracebacks
    ("[1, 2]", "row 0 is 1, not an object of columns"),
    ('{"rows": 5}', "JSON must be a list of rows or an object with 'rows'"),
    ('{"rows": {"ep": 8}}', "JSON must be a list of rows"),
])
def test_deepep_rows_must_be_finite_and_positive(text, match):
    with pytest.raises(ni.NetworkImportError, match=match):
        ni.parse_deepep(text)


@pytest.mark.parametrize("extra,flag", [(["--ranks", "0"], "--ranks"), (["--op", "allreduce"], "--op")])
def test_cli_refuses_bad_ranks_and_unknown_op(tmp_path, capsys, extra, flag):
    with pytest.raises(SystemExit) as e:
        ni.main(["--nccl", str(ALL_REDUCE), "--profile", str(_profile(tmp_path)), "--out", str(tmp_path / "o.json"),
                 *extra])
    assert e.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("old,new", [("1500.00  178.96  313.18", "nan  178.96  313.18"),
                                     ("1500.00  178.96  313.18", "1500.00  nan  nan"),
                                     ("1500.00  178.96  313.18", "1500.00  178.96  inf")])
def test_cli_names_the_input_line_that_is_not_finite(tmp_path, capsys, old, new):
    """A NaN time was imported as is; a NaN bus bandwidth was blamed on the profile being written
    ("out.json: tables.collectives[10].gbps must be a positive finite number")."""
    bad = tmp_path / "nccl.txt"
    text = ALL_REDUCE.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    out = tmp_path / "o.json"
    assert ni.main(["--nccl", str(bad), "--profile", str(_profile(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpuhours import-network: --nccl {bad}: nccl-tests: line 23: ") and "finite" in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("flag", ["--link", "--source"])
def test_cli_refuses_an_empty_label(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as e:
        ni.main(["--nccl", str(ALL_REDUCE), "--profile", str(_profile(tmp_path)), "--out", str(tmp_path / "o.json"),
                 flag, " "])
    assert e.value.code == 2 and f"argument {flag}: empty" in capsys.readouterr().err


def test_cli_refuses_bad_profile_and_missing_inputs(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": SCHEMA, "schema_version": 7, "device": {"name": "x"}}))
    assert ni.main(["--nccl", str(ALL_REDUCE), "--profile", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    assert "schema_version" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
    assert ni.main(["--profile", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    with pytest.raises(ProfileError):
        load_profile(bad)


def test_imported_message_sizes_slow_small_collectives(tmp_path):
    """With sized rows, a small all-reduce runs at its size's bus bandwidth, not the asymptote."""
    from simulator.comm import CommModel
    from simulator.scenario import load_scenario

    base = _profile(tmp_path)
    out = tmp_path / "sized.json"
    rows = ni.parse_nccl_tests(ALL_REDUCE.read_text(), link="nvlink")
    ni.import_into_profile(base, out, rows)
    prof = load_profile(out)
    by_size = {r["bytes"]: r["gbps"] for r in rows}
    big, small = max(by_size), 16777216
    f = prof.collective_size_factor("all_reduce", 8, small)
    assert f.status == "measured" or f.status == "interpolated"
    assert f.value == pytest.approx(by_size[small] / by_size[big])
    mid = prof.collective_size_factor("all_reduce", 8, 2 * small).value
    assert by_size[small] / by_size[big] < mid < 1.0  # between the neighbouring sizes
    assert prof.collective_size_factor("all_reduce", 8, 4 * big).value == 1.0
    assert prof.collective_size_factor("all_reduce", 8, 1).status == "clamped"
    assert prof.collective_size_factor("all_gather", 8, small).value == 1.0  # no sized rows: no change

    cluster = load_scenario("llama2-7b").cluster
    comm = CommModel(cluster, prof)
    t_big, t_small = (comm.ring("all_reduce", b, 8) for b in (big, small))
    # time per byte is worse for the small message by the measured bandwidth ratio; the measured
    # bandwidth already holds the latency, so none is added on top
    ratio = (t_small / small) / (t_big / big)
    assert ratio == pytest.approx(by_size[big] / by_size[small], rel=1e-6)
    unsized = CommModel(cluster, load_profile(base))
    assert unsized.ring("all_reduce", small, 8) > small * 2 * 7 / 8 / (cluster.nvlink_gbps * 1e9)


def test_cli_op_takes_the_nccl_tests_names_too(tmp_path):
    """``--op alltoall`` (nccl-tests' binary name) stores the canonical ``all_to_all``."""
    out = tmp_path / "o.json"
    assert ni.main(["--nccl", str(ALL_REDUCE), "--profile", str(_profile(tmp_path)), "--out", str(out),
                    "--op", "alltoall"]) == 0
    ops = {r["op"] for r in json.loads(out.read_text())["tables"]["collectives"]}
    assert "all_to_all" in ops


def test_cli_reads_a_byte_order_mark_and_names_a_file_that_is_not_text(tmp_path, capsys):
    """A spreadsheet's BOM hid the 'ep' column ("row 0 has no EP size"); a binary file was reported
    without its name or flag."""
    base = _profile(tmp_path)
    bom = tmp_path / "deepep.csv"
    bom.write_bytes(b"\xef\xbb\xbfep,dispatch_GBps\n8,40\n")
    out = tmp_path / "out.json"
    assert ni.main(["--deepep", str(bom), "--profile", str(base), "--out", str(out)]) == 0
    assert any(r["op"] == "all_to_all_dispatch" and r["ranks"] == 8 for r in load_profile(out).tables["collectives"])
    capsys.readouterr()
    binary = tmp_path / "nccl.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    assert ni.main(["--nccl", str(binary), "--profile", str(base), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert f"--nccl: {binary}: not UTF-8 text" in err and err.count("\n") == 1
    assert not (tmp_path / "o.json").exists()
