"""Where the step goes: the parts add up to the step, each kernel class answers to its own ops, and
the two parts communication costs appear exactly when the plan gives communication a way to cost."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import api
from simulator.breakdown import PARTS
from simulator.scenario import scenario_from_dict
from simulator.validate import read_csv, row_to_raw

KEYS = [k for k, _ in PARTS]


def _row(run_id: str):
    rows = {r["run_id"]: r for r in read_csv(Path(__file__).parent / "data" / "public.csv")}
    raw, _ = row_to_raw(rows[run_id])
    return scenario_from_dict(raw, name=run_id)


@functools.cache
def _predict(sc, engine):
    """One prediction per scenario and engine in this module: several tests read the same one (V3 under
    Zipf s=1.0 by the DES, balanced V3 by the DES, the DualPipeV plan by the DES), and only read it."""
    return api.predict(sc, engine=engine)


def _parts(sc, engine="analytic"):
    pred = _predict(sc, engine)
    return pred, pred.extra["step_parts_s"]


# One plan per schedule family the engines treat apart: DualPipe with overlapped all-to-all, interleaved
# 1F1B (dense, TP), ZB1P, plain 1F1B, no pipeline, DualPipeV, and Megatron's paired 1F1B overlap (the
# Qwen3-30B-A3B row: interleaved with the all-to-all hidden behind the other micro-batch).
CASES = [
    ("deepseek-v3", ()),
    ("llama3-405b", ()),
    ("deepseek-v2", ()),
    ("deepseekmoe-145b", ()),
    ("deepseekmoe-2b", ()),
    ("deepseek-v3", ("plan.schedule=dualpipev",)),
    ("MB2511-QWEN3-30B-A3B", None),
]


def _scenario(name, overrides):
    return _row(name) if overrides is None else api.load(name, list(overrides))


@pytest.mark.parametrize("name,overrides", CASES)
def test_parts_add_up_to_the_step_and_none_is_negative(name, overrides):
    pred, parts = _parts(_scenario(name, overrides))
    assert list(parts) == KEYS
    assert sum(parts.values()) == pytest.approx(pred.step_time_s, rel=1e-9)
    assert min(parts.values()) >= 0.0, parts
    # The parts that are the report's own figures are those figures.
    assert parts["bubble"] == pytest.approx(pred.bubble_s)
    assert parts["dp_exposed"] == pytest.approx(pred.dp_exposed_s)
    assert parts["optimizer"] == pytest.approx(pred.optimizer_s)


@pytest.mark.parametrize("name,overrides", [CASES[0], CASES[2], CASES[3], CASES[5], CASES[6]])
def test_des_parts_add_up_to_its_step_and_its_classes_are_the_analytic_ones(name, overrides):
    """Both engines time the same kernels: the classes agree, whatever the schedule (DualPipe runs half the
    micro-batches through each of a rank's stages, DualPipeV all of them through both)."""
    sc = _scenario(name, overrides)
    pred, parts = _parts(sc, engine="des")
    assert list(parts) == KEYS
    # Parts under a microsecond (the DES rounds each chunk to whole nanoseconds) read 0.
    assert sum(parts.values()) == pytest.approx(pred.step_time_s, abs=1e-5)
    assert min(parts.values()) >= 0.0, parts
    analytic = _parts(sc)[1]
    for key in ("dense_gemm", "expert_gemm", "attention", "memory_bound"):
        assert parts[key] == pytest.approx(analytic[key], rel=1e-6), key


def test_kernel_classes_are_their_ops_times_the_micro_batches():
    """Without pipelining or communication SMs, each class is its layer ops' time x micro-batches x layers."""
    from simulator.analytic import Evaluator, resolve_profile
    from simulator.workload import Shape, layer_ops, model_units

    sc = api.load("deepseekmoe-2b")
    assert sc.plan.pp == 1
    ev = Evaluator(sc, resolve_profile(sc, None))
    pred = api.predict(sc)
    shape = Shape.of(sc.plan, sc.training.seq_len)
    want = dict.fromkeys(("gemm", "grouped_gemm", "attention", "memory"), 0.0)
    for unit in model_units(sc.model):
        for op in layer_ops(sc.model, unit, shape, sc.cluster.gpus_per_node).all_ops():
            if op.kind != "comm":
                want[op.kind] += ev.timer.time(op)
    M = sc.microbatches
    parts = pred.extra["step_parts_s"]
    assert parts["dense_gemm"] == pytest.approx(M * want["gemm"])
    assert parts["expert_gemm"] == pytest.approx(M * want["grouped_gemm"])
    assert parts["attention"] == pytest.approx(M * want["attention"])
    assert parts["memory_bound"] == pytest.approx(M * want["memory"])


def test_attention_kernel_moves_the_attention_part_and_no_other_kernel_class():
    fa2 = _parts(api.load("deepseek-v3"))[1]
    fa3 = _parts(api.load("deepseek-v3", ["plan.attention_kernel=flash"]))[1]
    assert fa3["attention"] < 0.8 * fa2["attention"]
    for key in ("dense_gemm", "expert_gemm", "memory_bound"):
        assert fa3[key] == pytest.approx(fa2[key]), key


def test_compute_slowdown_is_the_sms_the_overlapped_all_to_all_holds():
    """V3's pairs run beside an all-to-all holding 20 SMs: compute slows. With the all-to-all not
    overlapped it holds none, the slowdown is zero, and its time turns up as exposed communication."""
    on = _parts(api.load("deepseek-v3"))[1]
    fewer = _parts(api.load("deepseek-v3", ["plan.comm_sms=10"]))[1]
    off = _parts(api.load("deepseek-v3", ["plan.ep_overlap=off"]))[1]
    assert on["compute_slowdown"] > fewer["compute_slowdown"] > 0
    assert off["compute_slowdown"] == 0.0
    assert off["exposed_comm"] > 2 * on["exposed_comm"]


def test_dense_plans_without_communication_sms_lose_nothing_beside_communication():
    parts = _parts(api.load("llama3-405b"))[1]
    assert parts["compute_slowdown"] == 0.0 and parts["expert_gemm"] == 0.0


@pytest.mark.parametrize("name,overrides", [CASES[0], CASES[5], CASES[6], ("MB2511-QWEN3-235B-A22B", None)])
def test_exposed_communication_part_is_the_reported_exposed_communication_less_dp(name, overrides):
    """Also under Megatron's pairs (the Qwen3 rows), where the step is priced with the last rank's chunk
    counts: the reported exposed communication uses the same counts."""
    pred, parts = _parts(_scenario(name, overrides))
    assert parts["exposed_comm"] == pytest.approx(pred.exposed_comm_s - pred.dp_exposed_s)


@pytest.mark.parametrize("name,overrides", [CASES[0], CASES[5], CASES[6], ("deepseekmoe-16b", ("plan.ep=8", "plan.schedule=dualpipev"))])
def test_compute_slowdown_is_no_more_than_the_sms_the_all_to_all_holds(name, overrides):
    """Pairs lose at most the SMs the all-to-all kernels hold (proportional SM sharing: classes x
    comm_sms / (SMs - comm_sms)), and with those SMs taken they lose something."""
    sc = _scenario(name, overrides)
    parts = _parts(sc)[1]
    sms, held = sc.cluster.gpu.sms, sc.plan.comm_sms
    classes = sum(parts[k] for k in ("dense_gemm", "expert_gemm", "attention", "memory_bound"))
    assert 0 < parts["compute_slowdown"] <= classes * held / (sms - held) * 1.0001


def test_dualpipev_analytic_step_agrees_with_the_des():
    """A DualPipeV rank runs both its stages for every micro-batch: its lone and paired chunks are counted
    per stage, its times per micro-batch over both; counting both ways at once doubled the step."""
    for name, overrides in (CASES[5], ("deepseekmoe-16b", ("plan.ep=8", "plan.schedule=dualpipev"))):
        sc = _scenario(name, overrides)
        a, d = _predict(sc, "analytic").step_time_s, _predict(sc, "des").step_time_s
        assert abs(a / d - 1) < 0.10, (name, a, d)


@pytest.mark.parametrize("engine", ["analytic", "des"])
def test_skewed_routing_is_its_own_part(engine):
    """Balanced routing costs nothing; skewed routing's extra compute is the expert-imbalance part, and the
    kernel classes and the SMs lent to communication stay those of the balanced load."""
    base = _parts(api.load("deepseek-v3"), engine=engine)[1]
    pred, skew = _parts(api.load("deepseek-v3", ["plan.routing=zipf", "plan.zipf_s=1.0"]), engine=engine)
    assert base["expert_imbalance"] == 0.0
    # The most loaded of 64 EP ranks gets ~6.8x the mean: its expert GEMMs take that much longer.
    assert pred.extra["mean_imbalance"] > 5
    assert skew["expert_imbalance"] > 0.5 * (pred.extra["mean_imbalance"] - 1) * skew["expert_gemm"]
    for key in ("dense_gemm", "expert_gemm", "attention", "memory_bound"):  # classes are at balanced load
        assert skew[key] == pytest.approx(base[key])
    assert skew["compute_slowdown"] == pytest.approx(base["compute_slowdown"], rel=0.1)


def test_analytic_engine_prices_the_plans_routing_as_the_des_does():
    """plan.routing used to move only the DES; the analytic engine now takes the same expected max/mean
    load (simulator.des.routing.expected_max_load_factor) and lands within 5 % of the DES."""
    for s in ("0.5", "1.0"):
        sc = api.load("deepseek-v3", ["plan.routing=zipf", f"plan.zipf_s={s}"])
        a, d = _predict(sc, "analytic").step_time_s, _predict(sc, "des").step_time_s
        assert a > 1.5 * api.predict(api.load("deepseek-v3")).step_time_s
        assert abs(a / d - 1) < 0.05, (s, a, d)


def test_predict_prints_where_the_step_goes_and_json_carries_the_parts():
    cmd = [sys.executable, "-m", "simulator.cli", "predict", "deepseek-v3"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    block = out.split("where that step goes", 1)[1]
    for label in ("dense GEMMs", "expert GEMMs", "core attention", "memory-bound kernels",
                  "compute slowdown beside communication", "exposed communication", "pipeline bubble", "recompute"):
        assert label in block, label
    assert "expert-load imbalance" not in block  # a zero part is not printed
    rep = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert list(rep["step_parts_s"]) == KEYS
    assert sum(rep["step_parts_s"].values()) == pytest.approx(rep["step_time_s"])
