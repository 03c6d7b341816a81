"""Sensitivity tornado and the error bands beside it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from simulator.analytic import predict_analytic
from simulator.api import load
from simulator.cli import main
from simulator.sensitivity import sensitivity


@pytest.fixture(scope="module")
def v3():
    return load("deepseek-v3")


def test_rows_sorted_by_swing(v3):
    notes: list[str] = []
    rows = sensitivity(v3, notes=notes)
    names = {r["input"] for r in rows}
    assert {"cluster.ib_gbps", "cluster.nvlink_gbps", "kernel efficiency", "plan.comm_sms", "plan.micro_batch"} <= names
    swings = [max(abs(v - r["base"]) for v in (r["low"], r["high"]) if v is not None) for r in rows]
    assert swings == sorted(swings, reverse=True)
    for r in rows:
        assert set(r) == {"input", "low_label", "high_label", "low", "base", "high"}
    kern = next(r for r in rows if r["input"] == "kernel efficiency")
    assert kern["low"] > kern["base"] > kern["high"]  # slower kernels cost more GPU-hours


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseekmoe-2b", "deepseek-v2-lite"])
def test_more_ib_never_increases_gpu_hours(name):
    sc = load(name)
    prev = None
    for k in (0.25, 0.5, 1, 2, 4, 8):
        s = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, ib_gbps=sc.cluster.ib_gbps * k))
        v = predict_analytic(s).gpu_hours_per_trillion_tokens
        if prev is not None:
            assert v <= prev * (1 + 1e-9)
        prev = v
    row = next(r for r in sensitivity(sc) if r["input"] == "cluster.ib_gbps")
    assert row["high"] <= row["base"] <= row["low"]


def test_invalid_move_is_skipped_with_note():
    sc = load("deepseekmoe-2b")  # pure DP: no routing skew row
    notes: list[str] = []
    rows = sensitivity(sc, notes=notes)
    assert "routing skew" not in {r["input"] for r in rows}
    assert "routing skew skipped: no expert parallelism in this plan" in notes  # read as is by the dashboard


def test_cli_json(capsys):
    assert main(["sensitivity", "deepseekmoe-2b", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] and doc["interval"]["calibration"]["low"] <= doc["base"] <= doc["interval"]["calibration"]["high"]
    assert "not a confidence interval" in doc["interval"]["validation"]["method"]


def test_cli_bad_input(capsys):
    assert main(["sensitivity", "no-such-scenario"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_plan_moves_are_relative_to_the_plan():
    """No move repeats the scenario's own value: micro-batch halves and doubles, comm SMs move by 8."""
    sc = load("deepseekmoe-2b")
    rows = {r["input"]: r for r in sensitivity(sc)}
    mb = sc.plan.micro_batch
    assert rows["plan.micro_batch"]["low_label"].endswith(f"({mb / 2:g})")
    assert rows["plan.micro_batch"]["high_label"].endswith(f"({mb * 2})")
    assert rows["plan.comm_sms"]["low_label"].endswith(f"({sc.plan.comm_sms - 8})")


def test_attention_kernel_row_swaps_the_plans_kernel_for_the_others(v3):
    # V3 runs DeepSeek's FlashAttention-2-based MLA kernel: FA3 ('flash') and cuDNN are the two others, and
    # both are faster on the profile's rows, so both sides lower GPU-hours.
    row = next(r for r in sensitivity(v3) if r["input"] == "plan.attention_kernel")
    assert (row["low_label"], row["high_label"]) == ("to flash", "to cudnn")
    assert row["low"] < row["base"] and row["high"] < row["base"]
    fa3 = load("deepseek-v3", ("plan.attention_kernel=flash",))
    row = next(r for r in sensitivity(fa3) if r["input"] == "plan.attention_kernel")
    assert (row["low_label"], row["high_label"]) == ("to cudnn", "to fa2") and row["high"] > row["base"]


def test_attention_kernel_row_needs_rows_for_another_kernel():
    # a100-published has no attention rows: every kernel would be priced alike, a move that is not one.
    notes: list[str] = []
    rows = sensitivity(load("llama2-7b"), notes=notes)
    assert "plan.attention_kernel" not in {r["input"] for r in rows}
    assert any(n.startswith("plan.attention_kernel skipped: profile a100-published has attention rows for no other")
               for n in notes)


def test_tornado_bars_are_log_scaled_and_never_hide_a_move(capsys):
    """One large swing must not flatten the other rows (UX review C8): bars are on a log scale of
    the ratio to the base, and any move of 0.5 % or more gets at least one mark."""
    assert main(["sensitivity", "deepseek-v3"]) == 0
    out = capsys.readouterr().out
    rows = {r["input"]: r for r in sensitivity(load("deepseek-v3"))}
    checked = set()
    for line in out.splitlines():
        name = next((n for n in rows if line.strip().startswith(n)), None)
        if name is None:
            continue
        checked.add(name)
        r = rows[name]
        bar = line.split()[-1]  # "<<<|>>>>", the last column
        assert "|" in bar, line
        left, right = bar.count("<"), bar.count(">")
        for v in (r["low"], r["high"]):
            if v is not None and v / r["base"] - 1 >= 0.005:
                assert right >= 1, line
            if v is not None and v / r["base"] - 1 <= -0.005:
                assert left >= 1, line
    assert checked == set(rows)  # every tornado row was drawn and checked, none skipped unseen
    kernel = next(ln for ln in out.splitlines() if ln.strip().startswith("kernel efficiency"))
    # x0.8 kernels (+23 %) against the largest move (routing skew s=0.5, +84 %): log(1.23)/log(1.84) of 24
    assert kernel.count(">") >= 6


def test_sustained_clock_row_moves_burst_timed_rates_only():
    """V3 (H800, FP8, DeepGEMM rows timed in bursts): a lower sustained clock costs GPU-hours and the peak
    clock, no throttling, saves them; on a GPU that gives no sustained clock the row is left out, said once."""
    rows = {r["input"]: r for r in sensitivity(load("deepseek-v3"))}
    clock = rows["sustained SM clock"]
    assert clock["low_label"] == "-10 % (1440)" and clock["high_label"] == "peak (1830)"
    assert clock["high"] < clock["base"] < clock["low"]
    notes: list[str] = []
    rows = sensitivity(load("llama2-7b", ["cluster.preset=a100"]), notes=notes)
    assert "sustained SM clock" not in {r["input"] for r in rows}
    assert notes.count("sustained SM clock skipped: the GPU gives no sustained clock") == 1
    # A GPU with clocks whose profile names no burst-timed table: the clock moves nothing.
    notes = []
    rows = sensitivity(load("llama3-405b", ["cluster.profile=a100-published"]), notes=notes)
    assert "sustained SM clock" not in {r["input"] for r in rows}
    assert "sustained SM clock skipped: no rate this scenario reads comes from a table timed in bursts" in notes
