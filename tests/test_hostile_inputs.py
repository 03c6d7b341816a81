"""Inputs that used to hang, fill memory or end in a traceback: each now ends in one line and exit code 2.

Found by a CLI audit (session 38): special files given as CSV or network tables, YAML anchors that multiply
("billion laughs"), a validation row whose layer count sent the default-VPP search through ~1e12 steps, an
unbounded ``--workers``, and profile fields the simulator read as numbers without checking them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

import pytest

from simulator.cli import main
from simulator.profile import PROFILES_DIR
from simulator.validate import default_vpp

LAUGHS = "[&a0 [x,x,x,x,x,x,x,x,x,x]" + "".join(
    f", &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)) + "]"  # 10^8 values in ~600 bytes


def _one_line_2(argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_yaml_anchors_that_multiply_are_refused_quickly(tmp_path, capsys):
    f = tmp_path / "laughs.yaml"
    f.write_text(f"laughs: &big {LAUGHS}\nname: x\ndescription: *big\nmodel: deepseekmoe-2b\ncluster: h800\n")
    t = time.perf_counter()
    err = _one_line_2(["predict", str(f)], capsys)
    assert "anchors expand" in err
    err = _one_line_2(["predict", "deepseek-v3", "--set", f"plan.pp={LAUGHS}"], capsys)
    assert err.startswith("gpuhours: error: plan.pp:") and "anchors expand" in err
    assert time.perf_counter() - t < 30  # generous: each took over 30 s and GBs of memory before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_not_read(tmp_path):
    """A FIFO blocked forever and /dev/zero filled memory; run in a child with a timeout so a regression
    fails instead of hanging the suite."""
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    gh = [sys.executable, "-m", "simulator.cli"]
    for argv in (["validate", "--csv", str(fifo)],
                 ["import-network", "--profile", "h800-anchors", "--out", str(tmp_path / "o.json"), "--nccl", str(fifo)],
                 ["import-network", "--profile", "h800-anchors", "--out", str(tmp_path / "o.json"), "--deepep",
                  "/dev/zero"]):
        r = subprocess.run(gh + argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (argv, r.stderr)
        assert "not a regular file" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o.json").exists()


def test_a_csv_field_past_the_csv_limit_is_an_input_error(tmp_path, capsys):
    big = tmp_path / "deepep.csv"
    big.write_text("ep,dispatch_GBps,combine_GBps,source\n8,150,140," + "x" * 200_000 + "\n")
    err = _one_line_2(["import-network", "--profile", "h800-anchors", "--out", str(tmp_path / "o.json"),
                       "--deepep", str(big)], capsys)
    assert "--deepep" in err and "not a readable CSV" in err


def test_default_vpp_is_quick_and_unchanged_for_huge_layer_counts():
    def walk(layers, pp):  # the old search, step by step
        if layers % pp == 0:
            for v in range(2, layers // pp + 1):
                if (layers // pp) % v == 0:
                    return v
        return 2

    assert all(default_vpp(n, p) == walk(n, p) for n in range(1, 300) for p in range(1, 30))
    t = time.perf_counter()
    assert default_vpp(2_000_000_000_078, 2) == 1_000_000_000_039  # a prime number of layers per rank
    assert time.perf_counter() - t < 5


def test_search_workers_are_bounded(capsys):
    err = _one_line_2(["search", "deepseekmoe-2b", "--gpus", "64", "--workers", "100000"], capsys)
    assert "--workers" in err and "1 .. 256" in err


def _profile_with(tmp_path, edit) -> str:
    data = json.loads((PROFILES_DIR / "h800-anchors.json").read_text())
    data = copy.deepcopy(data)
    edit(data)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(data))
    return str(p)


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.__setitem__("tables", [1]), "field 'tables' must be an object"),
    (lambda d: d["tables"]["collectives"][0].__setitem__("link_gbps", "abc"), "link_gbps must be a positive"),
    (lambda d: d["tables"]["collectives"][0].__setitem__("bytes", [1]), "bytes must be a positive"),
    (lambda d: d["tables"]["collectives"][0].__setitem__("link_gbps", 1e-300), "link_gbps: 1e-300 is out of range"),
    (lambda d: d["tables"].__setitem__("sustained", [{"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192,
                                                       "burst_tflops": 700, "sustained_tflops": 650, "seconds": 20,
                                                       "burst_sm_clock_mhz": [1]}]),
     "burst_sm_clock_mhz must be a positive"),
])
def test_profile_fields_read_as_numbers_are_checked(tmp_path, capsys, edit, field):
    err = _one_line_2(["predict", "deepseek-v3", "--profile", _profile_with(tmp_path, edit)], capsys)
    assert field in err, err
