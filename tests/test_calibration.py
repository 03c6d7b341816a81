"""Calibration harness on the CPU: shapes, timing, checks, the runner end to end, profiles.

Everything here runs without a GPU (tiny shapes, perf_counter timing). Tests
marked ``gpu`` exercise the CUDA paths and are skipped without CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from calibration import runner, shapes  # noqa: E402
from calibration.kernels import fp8 as q8  # noqa: E402
from calibration.kernels.common import Context, KernelCheckError, check_close, rel_error, run_variants  # noqa: E402
from calibration.timing import TimingConfig, rotation_count, time_fn  # noqa: E402
from simulator.profile import ProfileError, load_profile, save_profile, validate_profile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _cpu_ctx(**kw) -> Context:
    return Context(device=torch.device("cpu"), timing=TimingConfig(warmup=1, min_reps=2, max_reps=3, budget_ms=5), **kw)


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    """One quick CPU calibration run shared by the tests below: (path, exit code, stderr)."""
    out = tmp_path_factory.mktemp("calib") / "cpu.json"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = runner.main(["--quick", "--device", "cpu", "--out", str(out)])
    return out, rc, err.getvalue()


# --------------------------------------------------------------------------- shapes


def test_v3_scenario_shapes_are_the_ones_deepseek_runs():
    d = shapes.validate_dims(shapes.V3_DIMS)
    assert shapes.experts_per_gpu(d) == 4 and shapes.tokens_per_expert(d) == 8192
    fwd = {(s.m, s.n, s.k) for s in shapes.forward_gemms(d)}
    # DeepGEMM's V3 training shapes (anchors/kernels_and_links.json) at M = 4096.
    for n, k in [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]:
        assert (4096, n, k) in fwd
    grouped = {(s.groups, s.m_per_group, s.n, s.k) for s in shapes.scenario_grouped(d)}
    assert (4, 8192, 4096, 7168) in grouped and (4, 8192, 7168, 2048) in grouped
    att = shapes.scenario_attention(d)
    assert (att.batch, att.seq, att.heads, att.qk_dim, att.v_dim, att.causal) == (1, 4096, 128, 192, 128, True)


def test_sweep_brackets_every_scenario_shape():
    plan = shapes.sweep_plan(shapes.V3_DIMS, quick=True)
    rows = [(s.m, s.n, s.k) for s in plan.gemm]
    for s in shapes.scenario_gemms(shapes.validate_dims(shapes.V3_DIMS)):
        ms = [m for m, n, k in rows if (n, k) == (s.n, s.k)]
        assert min(ms) < s.m < max(ms), s
    full = shapes.sweep_plan(shapes.V3_DIMS, quick=False)
    assert len(full.gemm) > len(plan.gemm) and {s.groups for s in full.grouped} == {2, 4, 8}
    assert all(m.m % 128 == 0 for m in full.memory if m.op in shapes.QUANT_OPS)


def test_dims_errors_name_the_key():
    bad = dict(shapes.V3_DIMS)
    del bad["ep"]
    with pytest.raises(shapes.ShapeError, match="'ep'"):
        shapes.validate_dims(bad)
    with pytest.raises(shapes.ShapeError, match="hidden"):
        shapes.validate_dims(dict(shapes.V3_DIMS, hidden=0))


def test_shapes_from_scenario_fallbacks(monkeypatch, capsys, tmp_path):
    assert shapes.shapes_from_scenario(None) == dict(shapes.V3_DIMS)
    assert shapes.shapes_from_scenario("tiny") == dict(shapes.TINY_DIMS)
    # An unknown name is refused, never swapped for V3's shapes.
    with pytest.raises(shapes.ShapeError, match="--shapes: 'no-such-scenario' is neither a preset"):
        shapes.shapes_from_scenario("no-such-scenario")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden: [1, 2\n")
    with pytest.raises(shapes.ShapeError, match="--shapes: .*bad.yaml cannot be read"):
        shapes.shapes_from_scenario(str(bad))
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(shapes.ShapeError, match="no mapping"):
        shapes.shapes_from_scenario(str(bad))
    # A YAML of dims is read directly (missing keys from V3, with a warning), with or without
    # simulator.scenario.
    f = tmp_path / "dims.yaml"
    f.write_text("hidden: 2048\nheads: 16\nmoe_intermediate: 1408\n")
    for loader in ("real", None):
        if loader is None:
            monkeypatch.setitem(sys.modules, "simulator.scenario", None)
        got = shapes.shapes_from_scenario(str(f))
        assert got["hidden"] == 2048 and got["heads"] == 16 and got["ep"] == 64
        assert "lacks" in capsys.readouterr().err


def test_shapes_from_scenario_uses_the_loader(monkeypatch):
    import types

    fake = types.ModuleType("simulator.scenario")

    class Sc:
        def calibration_dims(self):
            return dict(shapes.TINY_DIMS, hidden=512)

    fake.load_scenario = lambda name: Sc()
    monkeypatch.setitem(sys.modules, "simulator.scenario", fake)
    assert shapes.shapes_from_scenario("anything")["hidden"] == 512


# --------------------------------------------------------------------------- fp8, timing, checks


def test_fp8_block_quantization_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g) * torch.logspace(-2, 2, 256)  # outliers along K
    q, s = q8.quantize_1x128(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (64, 2)
    assert torch.allclose(s, x.abs().reshape(64, 2, 128).amax(-1) / 448.0)
    assert rel_error(q8.dequantize_1x128(q, s), x) < 0.05
    w = torch.randn(160, 256, generator=g)  # N not a multiple of 128: partial last block
    qw, sw = q8.quantize_128x128(w)
    assert sw.shape == (2, 2) and qw.shape == w.shape
    assert rel_error(q8.dequantize_128x128(qw, sw), w) < 0.05
    xt = torch.randn(256, 128, generator=g)
    _, _, qt, st = q8.quantize_transpose_1x128(xt)
    assert qt.shape == (128, 256) and st.shape == (128, 2)
    assert q8.quant_transpose_bytes(256, 128) == 256 * 128 * 2 + 2 * 256 * 128 + 4 * (256 + 2 * 128)


def test_timing_rotation_and_median():
    assert rotation_count(100 << 20, 50 << 20) == 1  # one set already exceeds 2x L2
    assert rotation_count(1 << 20, 50 << 20) == 16  # capped
    assert rotation_count(20 << 20, 50 << 20) == 5
    calls = []
    t = time_fn(lambda i: calls.append(i), [0, 1, 2], torch.device("cpu"),
                TimingConfig(warmup=2, min_reps=4, max_reps=4, budget_ms=1))
    assert t.reps == 4 and t.buffers == 3 and t.min_ms <= t.median_ms <= t.max_ms
    assert set(calls) == {0, 1, 2} and t.method == "perf_counter"


def test_check_rejects_wrong_and_nan():
    ref = torch.ones(8, dtype=torch.float64)
    assert check_close(ref.float(), ref, 1e-6, "ok") == 0.0
    with pytest.raises(KernelCheckError, match="exceeds tolerance"):
        check_close(ref * 1.1, ref, 1e-2, "wrong")
    bad = ref.clone()
    bad[3] = float("nan")
    assert math.isinf(rel_error(bad, ref))


def test_failing_check_aborts_timing_and_writes_no_row(monkeypatch):
    from calibration.kernels import gemm

    ctx = _cpu_ctx()
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: real(a, b) * 1.05)  # a subtly wrong kernel
    row = gemm.measure(ctx, shapes.GemmShape(64, 128, 128), "bf16")
    assert row is None
    assert ctx.failures and "exceeds tolerance" in ctx.failures[0]["error"]


def test_fp8_blockwise_path_with_an_emulated_scaled_mm():
    """The blockwise code path (taken on GPUs whose scaled_mm accepts 1x128/128x128 scales),
    driven here by a dequantize-per-block emulation since CPU torch refuses block scales."""
    from calibration.kernels import gemm, grouped_gemm

    def emulated(a, b, sa, sb):
        return (q8.dequantize_1x128(a, sa) @ q8.dequantize_128x128(b, sb).t()).bfloat16()

    ctx = _cpu_ctx()
    ctx.fp8 = gemm.Fp8Support(blockwise_api="emulated:blockwise-1x128/128x128 (test)", blockwise_call=emulated,
                              prep_a=lambda s: s, prep_b=lambda s: s)
    row = gemm.measure(ctx, shapes.GemmShape(64, 160, 256), "fp8")
    assert row["fp8_scaling"] == "blockwise-1x128/128x128" and row["variant"] == "emulated:blockwise-1x128/128x128"
    assert row["check_rel_error"] < 2e-2
    grow = grouped_gemm.measure(ctx, shapes.GroupedShape(3, 32, 128, 256), "fp8")
    assert grow["variant"].startswith("loop-emulated") and grow["tflops"] > 0
    # A wrong blockwise kernel (scales ignored) is caught by the check, and no row is written.
    ctx2 = _cpu_ctx()
    ctx2.fp8 = gemm.Fp8Support(blockwise_api="broken", prep_a=lambda s: s, prep_b=lambda s: s,
                               blockwise_call=lambda a, b, sa, sb: (a.float() @ b.float().t()).bfloat16())
    assert gemm.measure(ctx2, shapes.GemmShape(64, 128, 256), "fp8") is None
    assert ctx2.failures


def test_probe_fp8_on_this_machine():
    from calibration.kernels import gemm

    sup = gemm.probe_fp8(torch.device("cpu"))
    assert sup.tensorwise is not None  # CPU torch runs tensorwise FP8 scaled_mm
    if sup.blockwise_call is None:
        assert "not accepted" in sup.describe() and sup.tried


def test_run_variants_keeps_fastest_and_records_unavailable():
    from calibration.kernels.common import Measured, VariantUnavailable
    from calibration.timing import Timing

    ctx = _cpu_ctx()

    def t(ms):
        return lambda: Measured(Timing(ms, ms, ms, 3, 1, "perf_counter"), 1e-3)

    def missing():
        raise VariantUnavailable("not here")

    name, best, alts = run_variants(ctx, "k", [("slow", t(2.0)), ("fast", t(1.0)), ("none", missing)])
    assert name == "fast" and alts == {"slow": 2.0, "fast": 1.0}
    assert ctx.skipped == [{"kernel": "k", "variant": "none", "reason": "not here"}]


def test_memory_bound_byte_counts():
    from calibration.kernels.memory_bound import op_bytes

    m, n, k = 256, 512, 8
    assert op_bytes("norm", m, n) == 4 * m * n + 2 * n
    assert op_bytes("residual", m, n) == 6 * m * n
    assert op_bytes("act", m, n) == 6 * m * n
    assert op_bytes("quant", m, n) == 3 * m * n + 4 * m * n // 128
    assert op_bytes("permute", m, n, k) == 4 * m * k * n + 8 * m * k
    assert op_bytes("*", m, n) == 4 * m * n
    with pytest.raises(ValueError, match="unknown op"):
        op_bytes("nope", 1, 1)


def test_collectives_bus_bandwidth_over_gloo():
    from calibration.kernels import collectives

    assert collectives.bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert collectives.bus_factor("all_gather", 8) == pytest.approx(0.875)
    rows = collectives.measure(2, [1 << 16], ops=("all_reduce",), backend="gloo", reps=2, link="loopback")
    assert len(rows) == 1
    r = rows[0]
    assert r["op"] == "all_reduce" and r["ranks"] == 2 and r["bytes"] == 1 << 16 and r["gbps"] > 0
    assert r["gbps"] == pytest.approx(r["algbw_gbps"] * 1.0, rel=1e-3)  # 2(n-1)/n = 1 at n = 2


# --------------------------------------------------------------------------- the runner, end to end


def test_register_adds_calibrate_subcommand():
    parser = argparse.ArgumentParser(prog="gpuhours")
    sub = parser.add_subparsers(dest="cmd")
    runner.register(sub)
    args = parser.parse_args(["calibrate", "--quick", "--out", "x.json", "--shapes", "tiny"])
    assert args.func is runner.run and args.quick and args.shapes == "tiny"


def test_cpu_harness_writes_a_valid_profile(cpu_profile):
    path, rc, err = cpu_profile
    assert rc == 0, err
    for fam in ("[gemm]", "[grouped_gemm]", "[attention]", "[memory_bound]", "[sustained]"):
        assert fam in err  # one progress line per family
    prof = load_profile(path)
    data = prof.data
    validate_profile(data)
    assert data["device"]["kind"] == "cpu" and data["device"]["torch"]
    assert data["calibration"]["failures"] == []
    t = data["tables"]
    assert {r["dtype"] for r in t["gemm"]} == {"bf16", "fp8"}
    assert {r["dtype"] for r in t["grouped_gemm"]} == {"bf16", "fp8"}
    assert {r["direction"] for r in t["attention"]} == {"fwd", "bwd"}
    assert {r["op"] for r in t["memory_bound"]} == set(shapes.MEMORY_OPS)
    assert "sm_scaling" not in t and any("sm_scaling: skipped" in n for n in data["notes"])
    for table, rows in t.items():
        for r in rows:
            assert r["ms"] > 0 and r["variant"] and r["source"] == "measured", (table, r)
    fp8_rows = [r for r in t["gemm"] if r["dtype"] == "fp8"]
    assert all(r["fp8_scaling"] in ("tensorwise", "blockwise-1x128/128x128") for r in fp8_rows)
    assert any("skewed" in r for r in t["grouped_gemm"])
    # Attention FLOPs follow the simulator's convention: backward = 2.5 x forward.
    by = {(r["seq"], r["direction"]): r["flops"] for r in t["attention"]}
    for (seq, d), f in by.items():
        if d == "bwd":
            assert f == pytest.approx(2.5 * by[(seq, "fwd")])


def test_profile_round_trip(cpu_profile, tmp_path):
    path, _, _ = cpu_profile
    first = load_profile(path)
    again = tmp_path / "again.json"
    save_profile(first.data, again)
    assert json.loads(again.read_text()) == json.loads(Path(path).read_text())
    assert load_profile(again).data == first.data


def test_interpolated_gemm_time_grows_with_m(cpu_profile):
    prof = load_profile(cpu_profile[0])
    rows = [r for r in prof.tables["gemm"] if r["dtype"] == "bf16"]
    by_nk: dict = {}
    for r in rows:
        by_nk.setdefault((r["n"], r["k"]), set()).add(r["m"])
    (n, k), ms = max(by_nk.items(), key=lambda kv: len(kv[1]))
    assert len(ms) >= 3
    lo, hi = min(ms), max(ms)
    grid = [lo * (hi / lo) ** (i / 12) for i in range(13)]
    times = []
    for m in grid:
        res = prof.gemm_tflops("bf16", m, n, k)
        assert res.status in ("measured", "interpolated")
        times.append(2 * m * n * k / (res.value * 1e12))
    assert all(b > a for a, b in zip(times, times[1:])), times


def test_check_failure_in_runner_exit_code_and_no_row(tmp_path, monkeypatch, capsys):
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: real(a, b) * 1.05)
    out = tmp_path / "p.json"
    rc = runner.main(["--quick", "--device", "cpu", "--families", "gemm", "--out", str(out)])
    assert rc == 1
    assert "CHECK FAILED" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert not [r for r in data["tables"]["gemm"] if r["dtype"] == "bf16"]
    assert data["calibration"]["failures"]


def test_update_merges_family_runs(tmp_path):
    out = tmp_path / "p.json"
    assert runner.main(["--quick", "--device", "cpu", "--families", "memory_bound", "--out", str(out)]) == 0
    assert runner.main(["--quick", "--device", "cpu", "--families", "attention", "--out", str(out), "--update"]) == 0
    data = load_profile(out).data
    assert set(data["tables"]) == {"memory_bound", "attention"}
    assert data["calibration"]["tables_kept_from_previous_run"] == ["memory_bound"]


def test_update_keeps_rows_at_other_shapes(tmp_path):
    """Several scenarios' shapes go into one profile, one --shapes per run: a re-measured shape
    replaces its row, other rows stay; tables describing one GEMM (sm_scaling) are replaced whole."""
    import copy

    out = tmp_path / "p.json"
    assert runner.main(["--quick", "--device", "cpu", "--families", "gemm", "--out", str(out)]) == 0
    old = copy.deepcopy(load_profile(out).data)  # not the loader's cached object
    old["tables"]["sm_scaling"] = [{"sms": 100, "total_sms": 132, "relative_throughput": 0.9, "source": "measured"}]
    save_profile(old, out)
    new = copy.deepcopy(old)
    first, second = old["tables"]["gemm"][0], old["tables"]["gemm"][1]
    again = dict(first, tflops=first["tflops"] * 2)  # the same shape measured again
    fresh = dict(second, m=second["m"] * 1024)  # a shape the old profile lacks
    new["tables"] = {"gemm": [again, fresh],
                     "sm_scaling": [{"sms": 66, "total_sms": 132, "relative_throughput": 0.7, "source": "measured"}]}
    new["calibration"]["shapes"] = "second-scenario"
    old_clock, new_clock = {"sm_clock_mhz": 1500.0}, {"sm_clock_mhz": 1400.0}
    old["calibration"]["clocks_during"] = {"sm_scaling": old_clock, "gemm": old_clock}
    save_profile(old, out)
    new["calibration"]["clocks_during"] = {"gemm": new_clock}
    merged = runner.merge_into_existing(new, out)
    assert merged["calibration"]["clocks_during"] == {"sm_scaling": old_clock, "gemm": new_clock}
    gemm = merged["tables"]["gemm"]
    assert len(gemm) == len(old["tables"]["gemm"]) + 1
    same = [r for r in gemm if (r["dtype"], r["m"], r["n"], r["k"]) == (first["dtype"], first["m"], first["n"], first["k"])]
    assert same == [again]
    assert fresh in gemm
    assert merged["tables"]["sm_scaling"] == new["tables"]["sm_scaling"]
    assert merged["calibration"]["rows_kept_from_previous_run"] == {"gemm": len(old["tables"]["gemm"]) - 1}
    assert merged["calibration"]["shapes_merged"][-1] == "second-scenario"
    runs = merged["calibration"]["runs"]
    assert [r["shapes"] for r in runs] == [old["calibration"]["shapes"], "second-scenario"]
    assert runs[1]["tables"] == ["gemm", "sm_scaling"]
    failure = {"kernel": "gemm x", "variant": "v", "error": "e"}
    new["calibration"]["failures"], new["calibration"]["dims"] = [failure], {}
    again = runner.merge_into_existing(new, out)
    assert again["calibration"]["failures"] == old["calibration"]["failures"] + [failure]
    assert again["calibration"]["dims"] == old["calibration"]["dims"]  # a dims-less run keeps the old dims
    validate_profile(merged)


def test_dense_scenario_shapes_come_from_the_simulators_ops():
    """A model without MLA dims (Llama 3, MHA/GQA) is measured at the GEMMs the op timer will ask
    for: every GEMM op's (M, N, K) per GPU is in the plan, in the precision the plan runs."""
    from simulator.scenario import load_scenario

    dims, plan, source = shapes.plan_for("llama3-405b", quick=True)
    assert dims is None and "ops" in source
    assert plan.dtypes == ("bf16",)
    ops, tokens = shapes.scenario_ops(load_scenario("llama3-405b"))
    wanted = {(round(o.m), round(o.n), round(o.k)) for o in ops if o.kind == "gemm"}
    assert wanted and wanted <= {(g.m, g.n, g.k) for g in plan.gemm}
    heads = {o.heads for o in ops if o.kind == "attention"}
    assert {a.heads for a in plan.attention} == heads
    assert {(a.qk_dim, a.v_dim) for a in plan.attention} == {(128, 128)}
    assert not plan.memory  # read by bytes; a profile's rows are kept by --update
    # an MLA scenario takes both: its ops' exact shapes (separate q and kv down projections, which the
    # dims path fuses) and the dims sweep with its N/K sweeps and memory-bound ops
    dims, plan, source = shapes.plan_for("deepseek-v3", quick=True)
    assert dims is not None and "ops and model dims" in source and plan.memory
    v3 = {(round(o.m), round(o.n), round(o.k)) for o in shapes.scenario_ops(load_scenario("deepseek-v3"))[0]
          if o.kind == "gemm"}
    have = {(g.m, g.n, g.k) for g in plan.gemm}
    assert v3 <= have and (4096, 1536, 7168) in have and (4096, 2112, 7168) in have
    assert shapes.plan_for("v3", quick=True)[2] == "model dims"
    # attention at the scenario's micro-batch (4 x 2048 tokens), not one sequence
    sc = load_scenario("deepseekmoe-2b")
    att = shapes.plan_for("deepseekmoe-2b", quick=True)[1].attention
    own = [a for a in att if a.seq == sc.training.seq_len]
    assert own and all(a.batch == sc.plan.micro_batch for a in own) and sc.plan.micro_batch > 1
    # a BF16 scenario with MLA dims measures BF16 GEMMs only
    assert shapes.plan_for("deepseek-v2", quick=True)[1].dtypes == ("bf16",)


def test_a_scenario_that_does_not_load_is_refused_with_its_reason(tmp_path):
    import yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "llama3-405b", "cluster": "h100", "plan": {"tp": 7}}))
    with pytest.raises(shapes.ShapeError) as e:
        shapes.plan_for(str(bad), quick=True)
    assert "does not load" in str(e.value) and "tp" in str(e.value)


def test_long_attention_is_checked_on_sampled_rows(monkeypatch):
    """The float64 check of a long sequence covers its first and last query rows and some between, exactly:
    a correct kernel passes, and a kernel wrong only late in the sequence (attending to the future
    there) fails both forward and backward."""
    from calibration.kernels import attention
    from calibration.shapes import AttentionShape

    ctx = Context(device=torch.device("cpu"), timing=TimingConfig(warmup=1, min_reps=2, max_reps=2, budget_ms=1.0))
    s = AttentionShape(1, 64, 2, 24, 16)
    monkeypatch.setattr(attention, "CHECK_ELEMENTS", 15 * 64)  # 15 of 64 rows: 5 first, 5 between, 5 last
    monkeypatch.setattr(attention, "CHECK_MIN_ROWS", 4)
    rows = attention._checked_rows(s).tolist()
    assert rows[:5] == list(range(5)) and rows[-5:] == list(range(59, 64)) and len(set(rows)) == 15
    assert rows == sorted(rows) and all(5 <= r < 59 for r in rows[5:10])
    for direction in ("fwd", "bwd"):
        row = attention.measure(ctx, s, direction)
        assert row is not None and row["check_rel_error"] < 2e-2, direction
    assert not ctx.failures
    real = torch.nn.functional.scaled_dot_product_attention

    def leaky(q, k, v, is_causal=False):  # wrong from row 48 on: those rows also see the future
        late = (torch.arange(q.shape[-2]) >= 48)[:, None]
        return torch.where(late, real(q, k, v, is_causal=False), real(q, k, v, is_causal=is_causal))

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", leaky)
    for direction in ("fwd", "bwd"):
        assert attention.measure(ctx, s, direction) is None, direction
    assert len(ctx.failures) == 2
    assert "forward" in ctx.failures[0]["error"] and "backward" in ctx.failures[1]["error"]


def test_e2e_scenario_says_what_the_model_keeps():
    """The e2e model's parameters are BF16, so its gradients and AdamW moments are too, and its loss is
    torch's cross-entropy over float32 logits (unfused): the scenario the simulator predicts says so (a
    float32 model keeps the default dtypes)."""
    from calibration.e2e_step import PRESETS, scenario_dict
    from simulator.scenario import scenario_from_dict

    plan = scenario_dict(PRESETS["gpu"])["plan"]
    assert plan["moment_dtype"] == plan["grad_dtype"] == "bf16" and plan["loss_kernel"] == "unfused"
    sc = scenario_from_dict(scenario_dict(PRESETS["gpu"]), name="e2e")
    assert sc.plan.moment_dtype == "bf16" and sc.cluster.num_gpus == 1
    assert "moment_dtype" not in scenario_dict(PRESETS["tiny"])["plan"]


def test_validation_runs_become_scenario_files(tmp_path, capsys):
    """The public set's H100 runs written as scenarios, one file each, that the calibration takes as --shapes."""
    from calibration import validation_shapes
    from simulator.scenario import load_scenario
    from simulator.validate import DEFAULT_CSV, read_csv

    assert validation_shapes.main(["--gpu", "H100", "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.json"))
    rows = [r for r in read_csv(DEFAULT_CSV) if r["include"].strip() == "true" and "H100" in r["gpu"]]
    assert [f.stem for f in files] == sorted(r["run_id"] for r in rows)
    sc = load_scenario(str(tmp_path / "MLM24-462B.json"))
    assert sc.plan.tp == 8 and sc.model.hidden == 18432
    assert shapes.plan_for(str(tmp_path / "MLM24-462B.json"), quick=True)[1].gemm
    capsys.readouterr()
    assert validation_shapes.main(["--gpu", "B300", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "B300" in err


def test_e2e_kernel_classes():
    from calibration.e2e_step import kernel_class

    assert kernel_class("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "gemm"
    assert kernel_class("_ZN7cutlass13device_kernelIN2at4cuda6detail25enable_3x_kernel_for_sm9x") == "gemm"
    assert kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16") == "attention"
    assert kernel_class("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>") == "optimizer"
    assert kernel_class("void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>") == "memory_bound"


def test_bad_update_target_or_shapes_refused_before_measuring(tmp_path, capsys, monkeypatch):
    # Both are refused with rc 2 before any kernel runs (on a GPU the sweep takes minutes).
    measured = []
    monkeypatch.setattr(runner, "_measure_and_save", lambda *a, **k: measured.append(a) or 0)
    out = tmp_path / "p.json"
    out.write_text("{not json")
    assert runner.main(["--quick", "--device", "cpu", "--families", "gemm", "--out", str(out), "--update"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--update" in err and "not valid JSON" in err
    assert runner.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "q.json"), "--shapes", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shapes: 'nosuch'" in err
    assert not measured and out.read_text() == "{not json"


def test_runner_rejects_unknown_family(tmp_path, capsys):
    assert runner.main(["--out", str(tmp_path / "x.json"), "--families", "gemm,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


# --------------------------------------------------------------------------- profile safety


def test_corrupt_or_unknown_version_profile_is_refused(cpu_profile, tmp_path):
    bad = tmp_path / "corrupt.json"
    bad.write_text(Path(cpu_profile[0]).read_text()[:200])
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(bad)
    future = json.loads(Path(cpu_profile[0]).read_text())
    future["schema_version"] = 99
    f = tmp_path / "future.json"
    f.write_text(json.dumps(future))
    with pytest.raises(ProfileError, match="unknown schema_version 99"):
        load_profile(f)


def test_crash_mid_write_leaves_old_file_intact(cpu_profile, tmp_path, monkeypatch):
    target = tmp_path / "profile.json"
    data = json.loads(Path(cpu_profile[0]).read_text())
    save_profile(data, target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(json, "dump", boom)
    changed = dict(data, name="changed")
    with pytest.raises(OSError, match="simulated"):
        save_profile(changed, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]  # no temp file left


# --------------------------------------------------------------------------- holdout and e2e scripts


def test_holdout_evaluation(cpu_profile, capsys):
    from calibration import holdout

    data = load_profile(cpu_profile[0]).data
    rep = holdout.evaluate(data, fraction=0.3, seed=1)
    assert rep["gemm"]["held"] > 0 and rep["gemm"]["train"] > rep["gemm"]["held"]
    for table in ("gemm", "memory_bound"):
        r = rep[table]
        assert 0 <= r["median_abs_time_error"] <= r["worst_abs_time_error"] < math.inf
        assert set(r["statuses"]) <= {"measured", "interpolated"}  # interior rows only: no clamping
    assert holdout.main([str(cpu_profile[0]), "--fraction", "0.3"]) == 0
    assert "median err" in capsys.readouterr().out


def test_holdout_leave_one_out_never_holds_out_a_ceiling(capsys):
    from calibration import holdout

    rows = [{"dtype": "bf16", "m": m, "n": m, "k": m, "tflops": t, "source": "t"}
            for m, t in ((512, 100), (1024, 200), (2048, 400), (4096, 500))]
    rows.append({"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "tflops": 900, "ceiling": True, "source": "t"})
    data = {"schema": "gpuhours.profile", "schema_version": 1, "name": "t", "device": {"name": "x"},
            "tables": {"gemm": rows}}
    rep = holdout.leave_one_out(data)["gemm"]
    assert rep["held"] == 4  # every ordinary row, never the ceiling
    assert 0 < rep["median_abs_time_error"] <= rep["worst_abs_time_error"]
    split_train, split_held = holdout.split_rows("gemm", rows, 0.9, 0, interior_only=False)
    assert all(not r.get("ceiling") for r in split_held)


def test_holdout_predicts_a_row_only_from_rows_of_its_own_library():
    """FA3 (untagged) and cuDNN rows of one shape differ by design; leaving a cuDNN row out must
    predict it from the other cuDNN rows, as the op timer's lookup does, not from FA3's."""
    from calibration import holdout

    rows = [{"dtype": "bf16", "direction": "fwd", "seq": s, "heads": 16, "qk_dim": 128, "v_dim": 128, "causal": True,
             "tflops": t, "source": "t", **({"library": lib} if lib else {})}
            for lib, t in ((None, 500.0), ("cudnn", 300.0)) for s in (2048, 4096, 8192)]
    data = {"schema": "gpuhours.profile", "schema_version": 1, "name": "t", "device": {"name": "x"},
            "tables": {"attention": rows}}
    rep = holdout.leave_one_out(data)["attention"]
    assert rep["held"] == 6 and rep["worst_abs_time_error"] == pytest.approx(0.0, abs=1e-9)


def test_e2e_step_runs_tiny_on_cpu():
    from calibration import e2e_step

    rep = e2e_step.run_step_benchmark(e2e_step.PRESETS["tiny"], device="cpu", warmup=1, steps=2)
    assert rep["measured_step_ms"] > 0 and rep["steps_timed"] == 2 and math.isfinite(rep["loss_last"])
    shapes.validate_dims(rep["calibration_dims"])
    json.dumps(rep)
    # The matching one-GPU scenario is one the simulator accepts.
    from simulator.scenario import scenario_from_dict

    sc = scenario_from_dict(rep["scenario"])
    assert sc.model.hidden == e2e_step.PRESETS["tiny"].hidden and sc.cluster.num_gpus == 1


def test_e2e_moe_layer_matches_per_token_reference():
    """The grouped (sorted-by-expert) MoE equals routing each token through its experts directly."""
    from calibration import e2e_step

    cfg = e2e_step.PRESETS["tiny"]
    torch.manual_seed(0)
    model = e2e_step.build_model(cfg, torch.device("cpu"), "loop")
    moe = model.blocks[1].ffn
    x = torch.randn(2, 5, cfg.hidden)
    got = moe(x)
    xf = x.reshape(-1, cfg.hidden)
    scores = torch.sigmoid(moe.gate(xf))
    w, e = scores.topk(cfg.experts_per_token, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    ref = torch.zeros_like(xf)
    for t in range(xf.shape[0]):
        for j in range(cfg.experts_per_token):
            g, u = (moe.w13[e[t, j]] @ xf[t]).chunk(2)
            ref[t] += w[t, j] * (moe.w2[e[t, j]] @ (torch.nn.functional.silu(g) * u))
    ref = ref.view_as(x) + moe.shared(x)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- clocks and sustained load


def test_clock_sampler_reads_a_query_stream_and_marks_windows(tmp_path):
    """The sampler keeps what nvidia-smi's looping query prints (power may be [N/A]); ``mark()``
    starts the steady window; without the tool it records nothing."""
    from calibration.clocks import ClockSampler, parse_sample, summarize

    assert parse_sample("1755, 612.34") == (1755.0, 612.34)
    assert parse_sample("1980, [N/A]") == (1980.0, None)
    assert parse_sample("garbage") is None and parse_sample("[N/A], 3") is None
    assert summarize([]) is None
    got = summarize([(1980.0, 300.0), (1600.0, 700.0), (1620.0, None)])
    assert got == {"sm_clock_mhz": 1620.0, "sm_clock_mhz_min": 1600.0, "samples": 3, "power_w": 500.0}
    fake = tmp_path / "nvidia-smi"
    # Answers only the read-only looping query the sampler must send.
    fake.write_text("#!/bin/sh\n"
                    "case \"$*\" in *--query-gpu=clocks.sm,power.draw*--id=0*--loop-ms=*) ;; *) exit 1;; esac\n"
                    "echo '1980, 310.5'\necho '1590, 699.0'\nexec sleep 30\n")
    fake.chmod(0o755)
    with ClockSampler(0, exe=str(fake)) as s:
        for _ in range(200):
            if len(s.samples) == 2:
                break
            import time

            time.sleep(0.02)
        assert s.summary()["sm_clock_mhz_min"] == 1590.0
        s.mark()
        assert s.summary() is None
    with ClockSampler(0, exe="") as none:
        pass
    assert none.summary() is None
    with ClockSampler(None, exe=str(fake)) as cpu:  # the CPU has no SM clock to read
        pass
    assert cpu.summary() is None


def test_back_to_back_run_counts_only_its_second_half():
    from calibration.kernels.sustained import run_back_to_back

    calls = []
    marked = []
    n, ms = run_back_to_back(lambda x: calls.append(x), [1, 2], 0.05, torch.device("cpu"),
                             on_half=lambda: marked.append(len(calls)))
    assert marked and 0 < n < len(calls) and ms > 0
    assert n == len(calls) - marked[0]  # the calls after the mark, timed from the mark


def test_cpu_sustained_family_writes_rows_the_timer_applies(tmp_path):
    """The runner's sustained rows validate, and a profile carrying them slows its own compute
    rates by sustained/burst (memory-bound ops unchanged), with a note; none without rows."""
    from simulator.api import load
    from simulator.profile import Profile
    from simulator.timer import OpTimer
    from simulator.workload import Op

    out = tmp_path / "s.json"
    assert runner.main(["--device", "cpu", "--families", "gemm,sustained", "--quick", "--sustain-seconds", "0.05",
                        "--out", str(out)]) == 0
    rows = load_profile(out).tables["sustained"]
    assert {r["dtype"] for r in rows} <= {"bf16", "fp8"} and rows
    assert all(r["burst_tflops"] > 0 and r["sustained_tflops"] > 0 and r["seconds"] == 0.05 for r in rows)

    def profile(sustained):
        doc = {"schema": "gpuhours.profile", "schema_version": 1, "name": "t", "device": {"name": "x"},
               "tables": {"gemm": [{"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "tflops": 600}],
                          "memory_bound": [{"op": "*", "bytes": 1e8, "gbps": 2000}]}}
        if sustained:
            doc["tables"]["sustained"] = sustained
        return Profile(validate_profile(doc))

    row = {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "burst_tflops": 700, "sustained_tflops": 630,
           "seconds": 20, "burst_sm_clock_mhz": 1980, "sustained_sm_clock_mhz": 1755}
    gpu = load("deepseek-v3").cluster.gpu
    gemm = Op("g", "gemm", "F", "x", 2 * 4096**3, 1.0, "bf16", m=4096, n=4096, k=4096)
    mem = Op("n", "memory", "F", "x", 0.0, 1e8, "bf16")
    plain, slow = OpTimer(gpu, profile(None)), OpTimer(gpu, profile([row]))
    assert slow.time(gemm) == pytest.approx(plain.time(gemm) / 0.9)
    assert slow.time(mem) == pytest.approx(plain.time(mem))
    assert "x 0.90" in slow.warnings["sustained:bf16"] and "1,980 -> 1,755 MHz" in slow.warnings["sustained:bf16"]
    assert not any(k.startswith("sustained") for k in plain.warnings)
    # A longer run cannot be faster: a ratio above 1 is noise and leaves the rates alone.
    fast = OpTimer(gpu, profile([{**row, "sustained_tflops": 720}]))
    assert fast.time(gemm) == pytest.approx(plain.time(gemm))
    # Rows of another dtype answer when the op's own dtype has none.
    fp8_only = profile([{**row, "dtype": "fp8"}])
    assert fp8_only.sustained_fraction("bf16").value == pytest.approx(0.9)


def test_sustain_seconds_is_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["--device", "cpu", "--sustain-seconds", "0", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "--sustain-seconds" in capsys.readouterr().err


# --------------------------------------------------------------------------- GPU paths (skipped without CUDA)


@pytest.mark.gpu
def test_gpu_quick_calibration(tmp_path):
    out = tmp_path / "gpu.json"
    rc = runner.main(["--quick", "--device", "cuda", "--shapes", "tiny", "--out", str(out),
                      "--families", "gemm,grouped_gemm,attention,memory_bound,sm_scaling,sustained",
                      "--sustain-seconds", "2"])
    assert rc == 0
    data = load_profile(out).data
    assert data["device"]["kind"] == "gpu" and data["device"]["sms"] > 0
    assert data["tables"]["sm_scaling"] and data["tables"]["grouped_gemm"] and data["tables"]["sustained"]
    assert any(r["variant"].startswith("triton") or "triton" in str(r.get("alternatives"))
               for r in data["tables"]["grouped_gemm"])


@pytest.mark.gpu
def test_gpu_triton_grouped_gemm_fp8_matches_reference():
    from calibration.kernels import grouped_gemm

    ctx = Context(device=torch.device("cuda"), timing=TimingConfig.quick(), quick=True, triton_mode="gpu")
    m = grouped_gemm.time_triton_grouped(ctx, 4, [300, 0, 129, 1000], 512, 1024, fp8=True, label="gpu test")
    assert m.rel_error < 3e-2 and m.timing.median_ms > 0


@pytest.mark.gpu
def test_gpu_timing_uses_cuda_events():
    a = torch.randn(1024, 1024, device="cuda")
    t = time_fn(lambda x: x @ x, [a], torch.device("cuda"), TimingConfig.quick())
    assert t.method == "cuda-events" and t.median_ms > 0


def test_calibration_package_import_is_light():
    """Registering the CLI must not import torch (``gpuhours predict`` stays light)."""
    import subprocess

    code = ("import sys, argparse; import calibration.runner as r, calibration.network_import as n; "
            "p = argparse.ArgumentParser(); s = p.add_subparsers(); r.register(s); n.register_import(s); "
            "print('torch' in sys.modules, 'triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout.strip()
    assert out == "False False"
