"""Sensitivity tornado and the error bands beside it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from simulator.analytic import predict_analytic, resolve_profile
from simulator.api import load
from simulator.cli import main
from simulator.sensitivity import scaled_profile, sensitivity


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
    for r in rows:  # the keys the dashboard reads, and those added beside them since
        assert set(r) == {"input", "low_label", "high_label", "low", "base", "high", "low_fits", "high_fits", "note"}
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


def _gh(sc, profile=None) -> float:
    return predict_analytic(sc, profile=profile).gpu_hours_per_trillion_tokens


def _with(sc, section: str, **kw):
    return dataclasses.replace(sc, **{section: dataclasses.replace(getattr(sc, section), **kw)}).validate()


def test_every_move_keeps_the_scenarios_routing_skew():
    """With skewed routing each move is the moved scenario predicted as it stands, skew included: the
    moves once priced balanced routing (imbalance 1.0), so NVLink x2 read 42 % below a base it cannot
    move and slower kernels looked cheaper than the base."""
    sc = load("deepseek-v3", ("plan.routing=zipf", "plan.zipf_s=0.5"))
    rows = {r["input"]: r for r in sensitivity(sc)}
    base = _gh(sc)
    assert all(r["base"] == base for r in rows.values())
    c = sc.cluster
    for field, k, side in (("ib_gbps", 0.5, "low"), ("ib_gbps", 2, "high"),
                           ("nvlink_gbps", 0.5, "low"), ("nvlink_gbps", 2, "high")):
        moved = _with(sc, "cluster", **{field: getattr(c, field) * k})
        assert rows[f"cluster.{field}"][side] == pytest.approx(_gh(moved), rel=1e-12), (field, k)
    prof = resolve_profile(sc, None)
    for k, side in ((0.8, "low"), (1.2, "high")):
        g = c.gpu
        gpu = dataclasses.replace(g, bf16_tflops=g.bf16_tflops * k, fp8_tflops=g.fp8_tflops * k,
                                  fp16_tflops=g.fp16_tflops * k, hbm_gbps=g.hbm_gbps * k)
        moved = _with(sc, "cluster", gpu=gpu)
        assert rows["kernel efficiency"][side] == pytest.approx(_gh(moved, scaled_profile(prof, k)), rel=1e-12), k
    kern = rows["kernel efficiency"]
    assert kern["low"] > kern["base"] > kern["high"]  # slower kernels cost more GPU-hours, skew or not
    # The routing-skew row is the one that moves the skew: to s=0.2, the plan's other inputs as they are.
    skew = rows["routing skew"]
    assert skew["low"] == pytest.approx(_gh(_with(sc, "plan", zipf_s=0.2)), rel=1e-12)
    assert skew["high"] == pytest.approx(base, rel=1e-12)  # s=0.5 is this scenario's own skew


def test_move_that_does_not_fit_in_memory_is_marked():
    """V3's micro-batch doubled (x0.5 is no whole sequence) needs more than the H800's 79 GiB: its GPU-hours
    stay, marked in the row, in a note with the memory and in the table beside the move."""
    sc = load("deepseek-v3")
    notes: list[str] = []
    rows = {r["input"]: r for r in sensitivity(sc, notes=notes)}
    mb = rows["plan.micro_batch"]
    doubled = predict_analytic(_with(sc, "plan", micro_batch=sc.plan.micro_batch * 2))
    assert not doubled.fits_in_memory and predict_analytic(sc).fits_in_memory
    assert mb["high"] == pytest.approx(doubled.gpu_hours_per_trillion_tokens, rel=1e-12)
    assert (mb["low_fits"], mb["high_fits"]) == (None, False)  # None: the move is invalid, not priced
    assert rows["cluster.ib_gbps"]["low_fits"] is True and rows["cluster.ib_gbps"]["high_fits"] is True
    said = [n for n in notes if n.startswith("plan.micro_batch x2 (2) does not fit in memory: ")]
    assert len(said) == 1 and f"needs {doubled.peak_memory_gib:,.0f} GiB a GPU" in said[0], notes


def test_does_not_fit_is_shown_in_the_table_and_json(capsys):
    assert main(["sensitivity", "deepseek-v3"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("plan.micro_batch"))
    assert "x2 (2), does not fit" in line and line.count("does not fit") == 1
    assert main(["sensitivity", "deepseek-v3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mb = next(r for r in doc["rows"] if r["input"] == "plan.micro_batch")
    assert mb["high_fits"] is False and mb["high"] is not None


def test_a_base_that_does_not_fit_is_said_once():
    """When the scenario's own plan does not fit, neither do its moves: one note, not one a move."""
    notes: list[str] = []
    rows = sensitivity(load("deepseekmoe-2b", ("cluster.gpu.hbm_gib=1",)), notes=notes)
    assert rows and all(r[f"{side}_fits"] in (False, None) for r in rows for side in ("low", "high"))
    assert [n for n in notes if "does not fit" in n] == [
        next(n for n in notes if n.startswith("the scenario's own plan does not fit in memory: needs "))]


def test_comm_sms_row_says_it_moves_the_compute_side_only(capsys):
    """The all-to-all's time does not depend on the SMs it is given (its rates are DeepEP's, measured at
    20 SMs), so fewer SMs only give compute more: the row says so, in the data and where it is printed."""
    notes: list[str] = []
    row = next(r for r in sensitivity(load("deepseek-v3"), notes=notes) if r["input"] == "plan.comm_sms")
    assert row["note"].startswith("compute side only: the all-to-all keeps its rate") and "20 SMs" in row["note"]
    assert f"plan.comm_sms: {row['note']}" in notes  # the dashboard shows the notes under the tornado
    assert row["low"] < row["base"] < row["high"]  # the direction the note warns of
    assert main(["sensitivity", "deepseek-v3"]) == 0
    assert f"note: plan.comm_sms: {row['note']}" in capsys.readouterr().out
