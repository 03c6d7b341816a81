"""Error bands: the validation band from signed validation errors, the calibration band from the
profile's leave-one-out spread."""

from __future__ import annotations

import json
import math

import pytest

from simulator.analytic import predict_analytic
from simulator.api import load, prediction_bands
from simulator.cli import main
from simulator.profile import Profile, validate_profile
from simulator.uncertainty import calibration_spreads, quantile, spread_profile, validation_ratios
from simulator.validate import DEFAULT_CSV, read_csv, validate_rows


def _profile(gemm_rows, name="t"):
    doc = {"schema": "gpuhours.profile", "schema_version": 1, "name": name,
           "device": {"name": "x", "kind": "gpu", "sms": 132},
           "tables": {"gemm": [dict(r, source="test") for r in gemm_rows]}}
    return Profile(validate_profile(doc))


def test_quantile_interpolates_between_order_statistics():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert quantile(xs, 0.0) == 1.0 and quantile(xs, 1.0) == 5.0 and quantile(xs, 0.5) == 3.0
    assert quantile(xs, 0.1) == pytest.approx(1.4)
    assert quantile([7.0], 0.9) == 7.0


def test_validation_band_is_the_prediction_times_the_quantiles_of_signed_errors():
    """Recompute the ratios from `validate` itself: the band must be base x their 10th/90th percentiles,
    and so lie wholly above the prediction when published runs were mostly slower than predicted."""
    results, _ = validate_rows(read_csv(DEFAULT_CSV))
    ratios = sorted(r.predicted / r.measured for r in results if r.predicted is not None)
    assert [r for _, r in validation_ratios()] and sorted(r for _, r in validation_ratios()) == pytest.approx(ratios)
    sc = load("deepseekmoe-2b")
    bands = prediction_bands(sc)
    base = predict_analytic(sc).gpu_hours_per_trillion_tokens
    v = bands["validation"]
    assert bands["base"] == pytest.approx(base)
    assert v["low"] == pytest.approx(base * quantile(ratios, 0.1))
    assert v["high"] == pytest.approx(base * quantile(ratios, 0.9))
    assert v["rows"] == len(ratios) and v["low"] <= v["high"]
    assert "not a confidence interval" in v["method"]


def test_leave_one_out_spread_follows_its_definition():
    """Three measurements of one shape, 100, 100 and 200 TFLOP/s: leaving out 200 predicts 100 (error
    ln 2); leaving out a 100 predicts the geometric mean of 100 and 200 (error ln sqrt 2). Median: ln sqrt 2."""
    shape = {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096}
    prof = _profile([dict(shape, tflops=100.0), dict(shape, tflops=100.0), dict(shape, tflops=200.0)])
    (sp,) = calibration_spreads(prof)
    assert sp.rows == 3 and sp.spread == pytest.approx(math.log(math.sqrt(2)))


def test_consistent_table_has_no_spread_and_a_noisy_one_widens_the_band():
    """Rows that agree with their neighbours' interpolation give a zero spread (the band collapses onto
    the prediction); disagreeing measurements of the same shapes widen it, around the prediction."""
    shapes = [(m, n, k) for m in (1024, 4096) for n in (1024, 4096) for k in (1024, 4096)]
    flat = _profile([{"dtype": "bf16", "m": m, "n": n, "k": k, "tflops": 200.0} for m, n, k in shapes], "flat")
    assert all(s.spread == pytest.approx(0.0) for s in calibration_spreads(flat))
    sc = load("llama2-7b")
    cal = prediction_bands(sc, profile=flat)["calibration"]
    base = predict_analytic(sc, profile=flat).gpu_hours_per_trillion_tokens
    assert cal["low"] == pytest.approx(base) and cal["high"] == pytest.approx(base)

    noisy = _profile([{"dtype": "bf16", "m": m, "n": n, "k": k, "tflops": t}
                      for m, n, k in shapes for t in (150.0, 230.0)], "noisy")
    (sp,) = calibration_spreads(noisy)
    assert sp.spread > 0.1
    cal = prediction_bands(sc, profile=noisy)["calibration"]
    base = predict_analytic(sc, profile=noisy).gpu_hours_per_trillion_tokens
    assert cal["low"] < base < cal["high"]
    assert [s["table"] for s in cal["spreads"]] == ["gemm bf16"]


def test_spread_profile_moves_only_the_table_it_names():
    prof = _profile([{"dtype": "bf16", "m": 1024, "n": 1024, "k": 1024, "tflops": 400.0},
                     {"dtype": "fp8", "m": 1024, "n": 1024, "k": 1024, "tflops": 800.0},
                     {"dtype": "fp8", "m": 1024, "n": 1024, "k": 1024, "tflops": 800.0},
                     {"dtype": "fp8", "m": 1024, "n": 1024, "k": 1024, "tflops": 1600.0}])
    spreads = calibration_spreads(prof)
    moved = spread_profile(prof, spreads, +1)
    k = math.exp(next(s.spread for s in spreads if s.match == {"dtype": "fp8"}))
    assert [r["tflops"] for r in moved.tables["gemm"]] == pytest.approx([400.0, 800 * k, 800 * k, 1600 * k])
    assert [r["tflops"] for r in prof.tables["gemm"]] == [400.0, 800.0, 800.0, 1600.0]  # the original is untouched


def test_dense_bf16_scenario_lists_only_the_tables_it_reads():
    cal = prediction_bands(load("llama3-405b"))["calibration"]
    tables = [s["table"] for s in cal["spreads"]]
    assert "gemm bf16" in tables and not any("fp8" in t for t in tables)
    assert [s["spread_pct"] for s in cal["spreads"]] == sorted((s["spread_pct"] for s in cal["spreads"]), reverse=True)


def test_predict_interval_cli(capsys):
    assert main(["predict", "deepseekmoe-2b", "--interval", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    iv = doc["interval"]
    assert iv["base"] == pytest.approx(doc["gpu_hours_per_trillion_tokens"])
    assert iv["validation"]["low"] <= iv["validation"]["high"]
    assert iv["calibration"]["low"] <= doc["gpu_hours_per_trillion_tokens"] <= iv["calibration"]["high"]
    assert main(["predict", "deepseekmoe-2b", "--interval"]) == 0
    out = capsys.readouterr().out
    assert "validation band" in out and "calibration band" in out and "not a confidence interval" in out
    assert main(["predict", "deepseekmoe-2b", "--json"]) == 0
    assert "interval" not in json.loads(capsys.readouterr().out)


def test_lifecycle_run_bands_move_modelled_phases_only():
    """Table 1's total carries both bands; the post-training phase, given as GPU-hours, does not move."""
    sc = load("deepseek-v3-lifecycle")
    bands = prediction_bands(sc)
    run = bands["run"]
    v = bands["validation"]
    from simulator.api import run_cost

    cost = run_cost(sc)
    given = sum(p["gpu_hours"] for p in cost["phases"] if not p["modelled"])
    modelled = cost["total_gpu_hours"] - given
    assert given > 0 and run["total_gpu_hours"] == pytest.approx(cost["total_gpu_hours"])
    assert run["validation"]["low"] == pytest.approx(given + modelled * v["ratio_low"])
    assert run["validation"]["high"] == pytest.approx(given + modelled * v["ratio_high"])
    assert run["calibration"]["low"] < cost["total_gpu_hours"] < run["calibration"]["high"]
    assert prediction_bands(load("deepseekmoe-2b"))["run"] is None


def test_des_bands_sit_around_the_des_prediction(capsys):
    """`predict --engine des --interval` printed the analytic engine's bands (base 175,777) under the DES
    headline (176,037): the low end was not the headline times the low ratio."""
    assert main(["predict", "deepseek-v3", "--engine", "des", "--interval", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    band = rep["interval"]
    assert band["base"] == pytest.approx(rep["gpu_hours_per_trillion_tokens"], rel=1e-12)
    v = band["validation"]
    assert v["low"] == pytest.approx(band["base"] * v["ratio_low"]) and "DES" in v["method"]
    assert band["run"]["total_gpu_hours"] == pytest.approx(rep["total_gpu_hours"], rel=1e-12)
    analytic = prediction_bands(load("deepseek-v3"))
    assert analytic["base"] != band["base"] and "DES" not in analytic["validation"]["method"]
