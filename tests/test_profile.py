"""Profiles: schema, atomic writes, interpolation."""

import json
import re

import pytest

from simulator.profile import ProfileError, list_profiles, load_profile, save_profile, validate_profile


def _doc(rows, table="gemm"):
    return {"schema": "gpuhours.profile", "schema_version": 1, "name": "t", "device": {"name": "x", "kind": "cpu"},
            "tables": {table: rows}}


def test_shipped_profiles_load_and_carry_sources():
    # Every shipped profile, h800-2024 (the one deepseek-v3 runs on) included.
    names = list_profiles()
    assert {"h800-anchors", "h800-2024", "h100-published", "a100-published"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.tables
        for table, rows in p.tables.items():
            assert rows, (name, table)
            for r in rows:
                assert r.get("source"), (name, table, r)


def test_shipped_profiles_are_rebuilt_exactly_from_their_published_sources():
    """The shipped JSONs hold no hand-edited number: `python -m calibration.anchor_profiles` gives
    them back row for row from the anchors and published_measurements.json."""
    from calibration import anchor_profiles as ap
    from simulator.profile import PROFILES_DIR

    if not ap.ANCHORS.is_file():
        pytest.skip(f"{ap.ANCHORS} not found (set GPUHOURS_SHARED to the shared folder)")
    anchors, pub = ap._load(ap.ANCHORS), ap._load(ap.PUBLISHED)
    built = (ap.build_h800(anchors, pub), ap.build_h800_2024(anchors, pub), ap.build_h100(pub, anchors),
             ap.build_a100(pub))
    for prof in built:
        shipped = json.loads((PROFILES_DIR / f"{prof['name']}.json").read_text())
        assert shipped == json.loads(json.dumps(prof)), prof["name"]


def test_measured_profiles_carry_their_device_and_checks():
    """The profiles measured on a lent GPU say where and how: device, driver, software, the clock each
    family ran at, and a passed float64 check on every kernel row."""
    for name in ("h100-measured", "h100-e2e-measured"):
        p = load_profile(name)
        dev = p.device
        assert dev["kind"] == "gpu" and "H100" in dev["name"] and dev["sms"] == 132
        assert dev["driver"] and dev["torch"] and dev["triton"]
        assert not p.data["calibration"]["failures"]
        for table in ("gemm", "grouped_gemm", "attention", "memory_bound"):
            for r in p.tables[table]:
                assert r["source"] == "measured" and r["check_rel_error"] < 4e-2, (name, table, r)
        assert p.tables["sustained"] and p.data["calibration"]["clocks_during"]["sustained"]["sm_clock_mhz"] > 0


def test_a_one_gpu_profile_takes_the_clusters_network():
    """A calibration on one GPU measures no collectives: a prediction with it takes the cluster profile's
    network rows (and says so), rather than the bare link rates."""
    from simulator.analytic import resolve_profile
    from simulator.api import predict
    from simulator.scenario import load_scenario

    sc = load_scenario("llama3-405b")
    measured = load_profile("h100-measured")
    assert not measured.tables.get("collectives")
    got = resolve_profile(sc, "h100-measured")
    assert got.tables["collectives"] == load_profile(sc.cluster.profile).tables["collectives"]
    assert got.data["collectives_from"] == sc.cluster.profile
    assert resolve_profile(sc, measured) is got  # one copy per pair: the lookups keep their caches
    assert got.tables["gemm"] is measured.tables["gemm"]
    pred = predict(sc, profile="h100-measured")
    assert any("collectives" in w and sc.cluster.profile in w for w in pred.warnings)
    # keyed by the profile object: a namesake with other rows (a reloaded, edited file) gets its own copy
    import copy as _copy

    namesake_data = _copy.deepcopy(load_profile(sc.cluster.profile).data)
    for r in namesake_data["tables"]["collectives"]:
        r["gbps"] = r["gbps"] / 10
    from simulator.profile import Profile

    namesake = Profile(namesake_data)
    other = measured.with_collectives_from(namesake)
    assert other is not got and other.tables["collectives"] == namesake_data["tables"]["collectives"]
    # a measured profile that happens to share the cluster profile's name still takes its network
    same_name = Profile(dict(_copy.deepcopy(measured.data), name=sc.cluster.profile))
    assert resolve_profile(sc, same_name).tables["collectives"]
    # a profile with its own network keeps it
    assert resolve_profile(sc, "h800-anchors").name == "h800-anchors"
    assert "collectives_from" not in resolve_profile(sc, "h800-anchors").data


def test_eager_memory_rows_give_way_to_the_device_copy_rows():
    """A calibrated memory-bound row times torch's eager chain (RMSNorm in five kernels, FP8 quantization in
    several); the simulator's op is one fused kernel. Where the profile has device-copy ('*') rows, they
    price such ops, with a warning; rows of fused kernels (published profiles) still answer their ops."""
    from simulator.scenario import load_scenario
    from simulator.timer import OpTimer

    measured = load_profile("h100-measured")
    assert {"norm", "quant", "act"} <= set(measured.eager_ops)
    copy_rate = measured.memory_gbps("*", 469.8e6).value
    assert measured.memory_gbps("quant", 469.8e6).value == copy_rate
    eager_quant = [r["gbps"] for r in measured.tables["memory_bound"] if r["op"] == "quant"]
    assert max(eager_quant) < copy_rate / 5  # what the eager rows would have said
    timer = OpTimer(load_scenario("deepseek-v3").cluster.gpu, measured)
    assert "eager" in timer.warnings["memory:eager"] and "quant" in timer.warnings["memory:eager"]
    # An op with fused rows too (a later run's, --update keeping the eager ones) is priced from those alone
    import copy as _copy

    from simulator.profile import Profile

    data = _copy.deepcopy(measured.data)
    quant = [r for r in data["tables"]["memory_bound"] if r["op"] == "quant"]
    for r, gbps in ((quant[1], 2500.0), (quant[3], 2600.0)):
        r["variant"], r["gbps"] = "triton-fused", gbps
    mixed = Profile(data)
    assert "quant" not in mixed.eager_ops
    assert all(2500.0 - 1e-6 <= mixed.memory_gbps("quant", r["bytes"]).value <= 2600.0 + 1e-6 for r in quant)
    assert mixed.memory_gbps("quant", quant[0]["bytes"], own=True).value == pytest.approx(quant[0]["gbps"])
    published = load_profile("h100-published")
    assert published.eager_ops == ()
    assert "memory:eager" not in OpTimer(load_scenario("deepseek-v3").cluster.gpu, published).warnings


def test_unknown_version_refused(tmp_path):
    d = _doc([])
    d["schema_version"] = 99
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="unknown schema_version 99"):
        load_profile(path)


def test_corrupt_refused(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(path)


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    save_profile(_doc([{"dtype": "bf16", "m": 1, "n": 1, "k": 1, "tflops": 1.0}]), path)
    before = path.read_text()
    import simulator.profile as prof

    def boom(*a, **k):
        raise RuntimeError("crash mid-write")

    monkeypatch.setattr(prof.json, "dump", boom)
    with pytest.raises(RuntimeError):
        save_profile(_doc([]), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_invalid_rows_refused():
    with pytest.raises(ProfileError, match="lacks field 'k'"):
        validate_profile(_doc([{"dtype": "bf16", "m": 1, "n": 1, "tflops": 1}]))
    for bad in ({"tflops": -1}, {"tflops": True}, {"tflops": float("nan")}, {"m": None}, {"k": "abc"}):
        with pytest.raises(ProfileError, match="positive finite number"):
            validate_profile(_doc([{"dtype": "bf16", "m": 1, "n": 1, "k": 1, "tflops": 1, **bad}]))
    with pytest.raises(ProfileError, match="dtype must be text"):
        validate_profile(_doc([{"dtype": 8, "m": 1, "n": 1, "k": 1, "tflops": 1}]))
    doc = _doc([])
    doc["tables"] = {"sm_scaling": [{"sms": 10, "total_sms": 132, "relative_throughput": 50}]}
    with pytest.raises(ProfileError, match="relative_throughput <= 1"):
        validate_profile(doc)


@pytest.mark.parametrize("table,row", [
    ("gemm", {"dtype": "fp8", "m": 1, "n": 1, "k": 1, "tflops": 1e-300}),
    ("gemm", {"dtype": "fp8", "m": 1, "n": 1, "k": 1, "tflops": 1e300}),
    ("memory_bound", {"op": "rmsnorm", "bytes": 1e6, "gbps": 1e-300}),
    ("collectives", {"op": "all_to_all", "ranks": 8, "gbps": 2e7}),
    ("sustained", {"dtype": "bf16", "m": 1, "n": 1, "k": 1, "burst_tflops": 500, "sustained_tflops": 1e-9, "seconds": 20}),
])
def test_rates_out_of_range_are_refused_by_name(table, row):
    """A rate that is positive and finite but absurd (a corrupt or mistyped row) used to pass the
    check and end as an infinite step reported against no field."""
    doc = _doc([])
    doc["tables"] = {table: [row]}
    key = next(k for k in ("tflops", "gbps", "sustained_tflops") if k in row and not 1e-6 <= row[k] <= 1e7)
    with pytest.raises(ProfileError, match=rf"tables\.{table}\[0\]\.{key}: .* is out of range; allowed: 1e-6 \.\. 1e7"):
        validate_profile(doc)


def test_interpolation_monotone_time_and_clamp():
    rows = [{"dtype": "bf16", "m": m, "n": 4096, "k": 4096, "tflops": t} for m, t in ((256, 200), (1024, 500), (4096, 700))]
    path_doc = validate_profile(_doc(rows))
    from simulator.profile import Profile

    p = Profile(path_doc)
    times = [2 * m * 4096 * 4096 / p.gemm_tflops("bf16", m, 4096, 4096).value for m in (256, 400, 700, 1024, 2000, 4096)]
    assert times == sorted(times)
    assert p.gemm_tflops("bf16", 1024, 4096, 4096).status == "measured"
    assert p.gemm_tflops("bf16", 600, 4096, 4096).status == "interpolated"
    assert p.gemm_tflops("bf16", 16384, 4096, 4096).status == "clamped"
    assert p.gemm_tflops("fp8", 1024, 4096, 4096).status == "roofline"


def _profile(rows, table="gemm"):
    from simulator.profile import Profile

    return Profile(validate_profile(_doc(rows, table)))


def test_ceiling_rows_bound_the_answer_and_are_not_interpolated():
    """A MAMF row (best rate over a search of shapes) caps every shape; it must not lend its
    rate to the shapes around it, as an ordinary measurement would."""
    ordinary = [{"dtype": "bf16", "m": m, "n": m, "k": m, "tflops": t} for m, t in ((1024, 200), (4096, 600))]
    mamf = {"dtype": "bf16", "m": 2048, "n": 2048, "k": 8192, "tflops": 800, "ceiling": True}
    with_ceiling = _profile(ordinary + [mamf])
    without = _profile(ordinary)
    q = (2048, 2048, 8192)
    assert with_ceiling.gemm_tflops("bf16", *q).value == pytest.approx(without.gemm_tflops("bf16", *q).value)
    capped = _profile(ordinary + [{**mamf, "tflops": 300}])
    assert capped.gemm_tflops("bf16", 4096, 4096, 4096).value == pytest.approx(300)
    alone = _profile([mamf])
    res = alone.gemm_tflops("bf16", 1024, 1024, 1024)
    assert res.status == "clamped" and "ceiling" in res.detail and res.value == pytest.approx(800)


def test_repeated_measurements_of_one_shape_are_averaged_not_overwritten():
    """Two sources timing the same GEMM shape both count (geometric mean), whichever is listed last."""
    a = {"dtype": "bf16", "m": 2048, "n": 2048, "k": 2048, "tflops": 500}
    b = {**a, "tflops": 640}
    other = {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "tflops": 780}
    for rows in ([a, b, other], [b, a, other]):
        res = _profile(rows).gemm_tflops("bf16", 2048, 2048, 2048)
        assert res.status == "measured" and res.value == pytest.approx((500 * 640) ** 0.5)


def test_collectives_at_one_rank_count_answer_with_the_largest_message():
    """nccl-tests rows at one rank count differ by message size (imported smallest first): the
    lookup gives the last, asymptotic one, not an average over sizes."""
    rows = [{"op": "all_reduce", "ranks": 8, "bytes": b, "gbps": g, "link": "nvlink"}
            for b, g in ((1 << 20, 40.0), (1 << 26, 250.0), (1 << 30, 360.0))]
    from simulator.profile import Profile

    doc = _doc([])
    doc["tables"]["collectives"] = rows
    p = Profile(validate_profile(doc))
    assert p.collective_gbps("all_reduce", 8).value == pytest.approx(360.0)


def test_unmeasured_cells_follow_the_rows_they_can_be_ordered_against():
    """Scattered rows: a shape at least as large as a measured one in every dimension runs at
    least as fast as it, and one no larger runs no faster; in between, the geometric mean."""
    rows = [{"dtype": "bf16", "m": 1024, "n": 1024, "k": 1024, "tflops": 100},
            {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "tflops": 400},
            {"dtype": "bf16", "m": 1024, "n": 4096, "k": 1024, "tflops": 300}]
    p = _profile(rows)
    # (4096, 1024, 4096) is a grid cell: above (1024,1024,1024), below (4096,4096,4096).
    assert p.gemm_tflops("bf16", 4096, 1024, 4096).value == pytest.approx((100 * 400) ** 0.5)
    # (4096, 4096, 1024) dominates both 1024-k rows and is below the largest: sqrt(300 * 400).
    assert p.gemm_tflops("bf16", 4096, 4096, 1024).value == pytest.approx((300 * 400) ** 0.5)


def test_shipped_profiles_mark_mamf_rows_as_ceilings_and_h100_fp8_has_shapes():
    for name in list_profiles():
        rows = load_profile(name).tables["gemm"]
        for r in rows:
            assert bool(r.get("ceiling")) == ("MAMF" in r["source"]), (name, r)
    h100 = load_profile("h100-published")
    fp8 = [r for r in h100.tables["gemm"] if r["dtype"] == "fp8" and not r.get("ceiling")]
    assert len(fp8) >= 10 and h100.tables.get("grouped_gemm")
    assert h100.gemm_tflops("fp8", 4096, 7168, 2048).status in ("measured", "interpolated")


def test_small_memory_bound_kernels_run_below_the_hbm_rate_where_a_size_sweep_is_published():
    """A100's published sweep (PyTorch's add, 49 kB to 1.6 GB moved) prices a small kernel at what that
    size reached, not at the large-tensor rate; time still grows with bytes."""
    from simulator.scenario import load_cluster
    from simulator.timer import OpTimer
    from simulator.workload import Op

    prof = load_profile("a100-published")
    sizes = sorted(r["bytes"] for r in prof.tables["memory_bound"])
    assert len(sizes) >= 8 and sizes[0] < 1e6 and sizes[-1] > 1e9
    timer = OpTimer(load_cluster("a100").gpu, prof)
    ops = [Op(name=f"x.norm{i}", kind="memory", phase="F", block="other", bytes=b) for i, b in enumerate((1e6, 1e7, 3.4e7, 1e8, 1e9, 4e9))]
    gbps = [op.bytes / timer.time(op) / 1e9 for op in ops]
    times = [timer.time(op) for op in ops]
    assert gbps[0] < gbps[2] < gbps[4]
    assert gbps[2] < 0.75 * gbps[-1]  # a 34 MB kernel (a 2048-token, 4096-wide BF16 norm) is far from the asymptote
    assert all(a < b for a, b in zip(times, times[1:]))
    # Hopper: PyTorch's relu from 67 MB to 2.1 GB moved, and below it Liger's RMSNorm from 8.4 MB (H100 SXM)
    for name in ("h100-published", "h800-anchors", "h800-2024"):
        prof = load_profile(name)
        rows = sorted(prof.tables["memory_bound"], key=lambda r: r["bytes"])
        assert rows[0]["bytes"] < 1e7 and rows[0]["gbps"] < 0.4 * rows[-1]["gbps"]
        timer = OpTimer(load_cluster("h100").gpu, prof)
        ops = [Op(name=f"x.norm{i}", kind="memory", phase="F", block="other", bytes=b) for i, b in enumerate((1e7, 3.4e7, 1e9))]
        gbps = [op.bytes / timer.time(op) / 1e9 for op in ops]
        assert gbps[0] < gbps[1] < gbps[2] and gbps[1] < 2000  # a 34 MB norm: ~1.9 TB/s, not the 67 MB rate


def test_a_memory_kernel_below_the_rows_that_price_it_is_noted_by_those_rows():
    """A kernel smaller than the smallest row that answers for it takes that row's rate, an upper bound,
    with a note. Which rows answer is the op's own when it has some, else the generic '*' rows: a 10 MB
    norm under norm rows from 64 MB is clamped even though generic rows reach 1 MB; a 10 MB quantize,
    priced by those generic rows, is not."""
    from simulator.api import load
    from simulator.profile import Profile
    from simulator.timer import OpTimer
    from simulator.workload import Op

    doc = _doc([])
    doc["tables"]["memory_bound"] = [{"op": "norm", "bytes": 6.4e7, "gbps": 2000}, {"op": "norm", "bytes": 1e9, "gbps": 2800},
                                     {"op": "*", "bytes": 1e6, "gbps": 500}, {"op": "*", "bytes": 1e9, "gbps": 3000}]
    timer = OpTimer(load("deepseek-v3").cluster.gpu, Profile(validate_profile(doc)))
    timer.time(Op(name="moe.quant", kind="memory", phase="F", block="moe", bytes=1e7))
    assert not any(k.startswith("clamped:memory") for k in timer.warnings)
    t = timer.time(Op(name="attn.norm", kind="memory", phase="F", block="attn", bytes=1e7))
    assert t == pytest.approx(1e7 / 2000e9)
    assert "memory-bound kernels (norm) below 64 MB" in timer.warnings["clamped:memory:norm"]


def test_a_profile_from_another_device_is_named_in_a_warning(capsys):
    """Kernel rates of an A100 (or of a CPU) pricing an H800 cluster: the prediction says so."""
    from simulator.api import load, predict
    from simulator.cli import main
    from simulator.profile import Profile
    from simulator.timer import device_mismatch

    sc = load("deepseek-v3")
    assert not [w for w in predict(sc).warnings if "measured on" in w]
    other = predict(sc, profile="a100-published").warnings
    assert any("measured on NVIDIA A100" in w and "H800" in w for w in other), other
    cpu = Profile(validate_profile(dict(_doc([]), device={"name": "AMD EPYC", "kind": "cpu"})))
    assert "measured on a CPU" in device_mismatch(cpu, sc.cluster.gpu)
    assert device_mismatch(load_profile("h800-2024"), sc.cluster.gpu) is None
    assert main(["validate", "--profile", "h800-anchors", "--json"]) == 0
    warns = json.loads(capsys.readouterr().out)["warnings"]
    assert any("A100" in w for w in warns) and any("H100" in w for w in warns)


def _attention_profile(rows):
    base = {"dtype": "bf16", "heads": 16, "qk_dim": 128, "v_dim": 128}
    return _profile([{**base, **r} for r in rows], "attention")


def test_causal_and_non_causal_attention_rows_answer_only_their_own_kind():
    """A causal kernel is credited half the query-key pairs and does not reach the non-causal rate,
    so the two are different measurements: a causal lookup never reads a non-causal row of the same
    direction when causal rows exist, nor the other way round."""
    p = _attention_profile([{"direction": "fwd", "seq": 4096, "causal": True, "tflops": 579},
                            {"direction": "fwd", "seq": 4096, "causal": False, "tflops": 638}])
    assert p.attention_tflops("bf16", "fwd", 4096, 16, 128, 128).value == pytest.approx(579)
    assert p.attention_tflops("bf16", "fwd", 4096, 16, 128, 128, causal=False).value == pytest.approx(638)
    assert p.attention_tflops("bf16", "bwd", 4096, 16, 128, 128, causal=False).status == "roofline"


def test_causal_backward_is_derived_from_non_causal_rows_and_the_forward_ratio():
    """The FA3 paper's backward figure is non-causal: a causal backward rate is its non-causal rate
    times the causal/non-causal ratio the same library measured forward at the same shape, flagged."""
    rows = [{"direction": "fwd", "seq": 4096, "causal": True, "tflops": 579},
            {"direction": "fwd", "seq": 4096, "causal": False, "tflops": 638},
            {"direction": "bwd", "seq": 4096, "causal": False, "tflops": 542},
            {"direction": "bwd", "seq": 4096, "causal": True, "tflops": 300, "library": "cudnn"}]
    res = _attention_profile(rows).attention_tflops("bf16", "bwd", 4096, 16, 128, 128)
    assert res.status == "derived" and res.value == pytest.approx(542 * 579 / 638) and "0.91" in res.detail
    # Without the forward pair the non-causal rate is only an upper bound, said so.
    res = _attention_profile(rows[2:]).attention_tflops("bf16", "bwd", 4096, 16, 128, 128)
    assert res.status == "clamped" and res.value == pytest.approx(542) and "upper bound" in res.detail
    # A measured causal backward row is read as is (here cuDNN's), never derived.
    res = _attention_profile(rows).attention_tflops("bf16", "bwd", 4096, 16, 128, 128, library="cudnn")
    assert res.status == "measured" and res.value == pytest.approx(300)


def test_shipped_hopper_attention_rows_keep_the_causal_flag_each_figure_was_measured_with():
    """FA3 paper: forward measured with and without the causal mask, backward without it (its
    standard-attention bars match the non-causal forward's), for FA3, cuDNN and FA2. Tritonbench's FA3
    runs (48 heads) time the causal backward itself, so FA3's causal backward is read, not derived; the
    other libraries' is derived from the forward's causal/non-causal ratio, with a warning."""
    from simulator.timer import OpTimer
    from simulator.workload import Op

    for name in ("h800-anchors", "h800-2024", "h100-published"):
        rows = load_profile(name).tables["attention"]
        for lib in (None, "cudnn", "fa2"):
            kinds = {(r["direction"], r["causal"]) for r in rows if r.get("library") == lib}
            assert kinds == {("fwd", True), ("fwd", False), ("bwd", False)} | ({("bwd", True)} if lib is None else set())
    from simulator.api import load

    timer = OpTimer(load("deepseek-v3").cluster.gpu, load_profile("h100-published"))
    fwd = Op("attn.core", "attention", "F", "attn", 1e12, 1e8, "bf16", seq=4096, heads=16, qk_dim=128, v_dim=128,
             library="cudnn")
    bwd = Op("attn.core.bwd", "attention", "B", "attn", 2.5e12, 2.5e8, "bf16", seq=4096, heads=16, qk_dim=128,
             v_dim=128, library="cudnn")
    assert timer.compute_tflops(fwd) == pytest.approx(518)
    assert timer.compute_tflops(bwd) == pytest.approx(499 * 518 / 609)
    assert any("causal attention bwd" in w for w in timer.warnings.values())
    # FA3 at tritonbench's shape: 4643.46 us for B=4, H=48, S=4096, D=128 causal backward.
    timer = OpTimer(load("deepseek-v3").cluster.gpu, load_profile("h100-published"))
    fa3 = Op("attn.core.bwd", "attention", "B", "attn", 2.5e12, 2.5e8, "bf16", seq=4096, heads=48, qk_dim=128, v_dim=128)
    assert timer.compute_tflops(fa3) == pytest.approx(2.5 * 4 * 4 * 48 * 4096**2 * 128 / 2 / 4643.46e-6 / 1e12, rel=1e-3)
    assert not any("causal attention bwd" in w for w in timer.warnings.values())


def test_grouped_gemm_below_the_grouped_rows_in_k_takes_the_dense_rows_k_falloff():
    """Small experts (k=768) sit below DeepGEMM's grouped rows (k >= 2048): their rate is the
    grouped rate at the smallest measured k times the dense rows' change between the two k, flagged
    ``derived``; smaller m or n, and larger shapes, clamp as before."""
    from simulator.profile import Profile

    doc = _doc([{"dtype": "fp8", "m": 4096, "n": 4096, "k": k, "tflops": t} for k, t in ((512, 600), (2048, 1200))])
    doc["tables"]["grouped_gemm"] = [{"dtype": "fp8", "groups": 8, "m_per_group": 4096, "n": 4096, "k": 2048,
                                      "tflops": 1300}]
    p = Profile(validate_profile(doc))
    res = p.grouped_gemm_tflops("fp8", 8, 4096, 4096, 512)
    assert res.status == "derived" and res.value == pytest.approx(1300 * 600 / 1200) and "x 0.50" in res.detail
    # In between the dense rows the ratio follows their log-log interpolation: k=1024 halfway.
    mid = p.grouped_gemm_tflops("fp8", 8, 4096, 4096, 1024).value
    assert 1300 * 600 / 1200 < mid < 1300
    for shape in ((8, 4096, 4096, 8192), (8, 1024, 4096, 2048), (8, 4096, 1024, 2048), (16, 4096, 4096, 2048)):
        res = p.grouped_gemm_tflops("fp8", *shape)
        assert res.value == pytest.approx(1300) and res.status in ("measured", "clamped"), shape
    # Without dense rows of the dtype nothing can be derived: the clamped grouped rate, flagged as such.
    doc["tables"]["gemm"] = [{"dtype": "bf16", "m": 4096, "n": 4096, "k": 512, "tflops": 400}]
    res = Profile(validate_profile(doc)).grouped_gemm_tflops("fp8", 8, 4096, 4096, 512)
    assert res.status == "clamped" and res.value == pytest.approx(1300)


def test_op_timer_warns_when_a_small_expert_rate_is_derived():
    from simulator.api import load
    from simulator.timer import OpTimer
    from simulator.workload import Op

    timer = OpTimer(load("deepseek-v3").cluster.gpu, load_profile("h100-published"))
    op = Op("moe.experts.down", "grouped_gemm", "F", "moe", 2 * 16 * 4096 * 2048 * 768, 1.0, "fp8",
            m=4096, n=2048, k=768, groups=16)
    timer.time(op)
    assert "k=768 below the grouped rows" in timer.warnings["derived:grouped_gemm:fp8"]


def test_burst_measured_tables_are_slowed_to_the_gpus_sustained_clock():
    """A table its sources timed in short bursts (DeepGEMM's harness idles between runs) ran at full
    clock; a training step holds the GPU at its power limit and a lower clock (H800: ~1600 of 1830 MHz).
    Such rows take sustained/peak; rows not known to be bursts, memory-bound ops, a GPU with no clocks
    given and a profile that measured its own sustained rate do not."""
    import dataclasses

    from simulator.api import load
    from simulator.profile import Profile
    from simulator.timer import OpTimer
    from simulator.workload import Op

    doc = _doc([{"dtype": "fp8", "m": 4096, "n": 4096, "k": 4096, "tflops": 1200},
                {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "tflops": 600}])
    doc["tables"]["memory_bound"] = [{"op": "*", "bytes": 1e8, "gbps": 2000}]
    plain = Profile(validate_profile(doc))
    burst = Profile(validate_profile({**doc, "burst_tables": {"gemm/fp8": "timed with idle gaps"}}))
    gpu = load("deepseek-v3").cluster.gpu
    assert (gpu.peak_clock_mhz, gpu.sustained_clock_mhz) == (1830, 1600)
    fp8 = Op("g", "gemm", "F", "x", 2 * 4096**3, 1.0, "fp8", m=4096, n=4096, k=4096)
    bf16 = fp8._replace(dtype="bf16")
    mem = Op("n", "memory", "F", "x", 0.0, 1e8, "bf16")
    t_plain, t_burst = OpTimer(gpu, plain), OpTimer(gpu, burst)
    assert t_burst.time(fp8) == pytest.approx(t_plain.time(fp8) * 1830 / 1600)
    assert t_burst.time(bf16) == pytest.approx(t_plain.time(bf16))
    assert t_burst.time(mem) == pytest.approx(t_plain.time(mem))
    note = t_burst.warnings["sustained:gemm:fp8"]
    assert "x 0.874" in note and "1600 of 1830 MHz" in note and "timed with idle gaps" in note
    assert not any(k.startswith("sustained") for k in t_plain.warnings)
    # No clocks given: rates as measured, and said.
    unknown = dataclasses.replace(gpu, peak_clock_mhz=0.0, sustained_clock_mhz=0.0)
    t_unknown = OpTimer(unknown, burst)
    assert t_unknown.time(fp8) == pytest.approx(t_plain.time(fp8))
    assert "gives no sustained clock" in t_unknown.warnings["sustained:gemm:fp8"]
    # A grouped GEMM with no grouped table reads the dense rows, and takes their correction.
    grouped = Op("e", "grouped_gemm", "F", "x", 2 * 4 * 1024 * 4096 * 4096, 1.0, "fp8", m=1024, n=4096, k=4096, groups=4)
    assert t_burst.time(grouped) == pytest.approx(t_plain.time(grouped) * 1830 / 1600)
    assert "sustained:grouped_gemm:fp8" not in t_burst.warnings
    # A profile's own sustained measurement answers instead of the clocks.
    own = {"dtype": "fp8", "m": 4096, "n": 4096, "k": 4096, "burst_tflops": 1000, "sustained_tflops": 950, "seconds": 20}
    measured = Profile(validate_profile({**doc, "burst_tables": {"gemm/fp8": "x"},
                                         "tables": {**doc["tables"], "sustained": [own]}}))
    assert OpTimer(gpu, measured).time(fp8) == pytest.approx(t_plain.time(fp8) / 0.95)


def test_memory_bound_and_ceiling_rows_keep_their_burst_rate():
    """A burst-timed row that streams its weights from HBM (DeepGEMM's M = 64: ~120 FLOP per byte, below
    the H800's FP8 ridge of ~520 at 1600 MHz) is paced by HBM, whose clock the SM clock does not move; a
    ceiling row comes from another benchmark. Neither is lowered; the compute-bound row is."""
    from simulator.api import load
    from simulator.profile import Profile, row_intensity

    small = {"dtype": "fp8", "m": 64, "n": 2112, "k": 7168, "tflops": 206}
    big = {"dtype": "fp8", "m": 4096, "n": 7168, "k": 2048, "tflops": 1168}
    cap = {"dtype": "fp8", "m": 8192, "n": 8192, "k": 8192, "tflops": 1400, "ceiling": True}
    assert row_intensity("gemm", small) < 520 < row_intensity("gemm", big)
    doc = {**_doc([small, big, cap]), "burst_tables": {"gemm/fp8": "x"}}
    doc["device"] = {**doc["device"], "hbm_gbps": 3350}
    gpu = load("deepseek-v3").cluster.gpu
    peaks = {"fp8": gpu.fp8_tflops, "bf16": gpu.bf16_tflops}
    rows = Profile(validate_profile(doc)).at_sustained_clock(1600 / 1830, gpu.hbm_gbps, peaks).tables["gemm"]
    assert [r["tflops"] for r in rows] == [206, pytest.approx(1168 * 1600 / 1830), 1400]


def test_a_burst_entry_may_name_the_sources_timed_in_bursts():
    """One table may mix harnesses: XLA's GEMM table was timed kernel by kernel between host copies, a
    Triton loop back to back. An entry listing source prefixes slows only the rows whose source begins
    with one, and the note names them."""
    from simulator.api import load
    from simulator.profile import Profile
    from simulator.timer import OpTimer
    from simulator.workload import Op

    xla = {"dtype": "bf16", "m": 4096, "n": 4096, "k": 4096, "tflops": 780, "source": "xla table, row 1"}
    loop = {"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "tflops": 700, "source": "triton loop"}
    doc = {**_doc([xla, loop]), "burst_tables": {"gemm/bf16": [{"source": "xla table", "evidence": "host copies"}]}}
    gpu = load("deepseek-v3").cluster.gpu
    prof = Profile(validate_profile(doc))
    clocked = prof.at_sustained_clock(gpu.sustained_clock_fraction, gpu.hbm_gbps, {"bf16": gpu.bf16_tflops})
    assert [r["tflops"] for r in clocked.tables["gemm"]] == [pytest.approx(780 * 1600 / 1830), 700]
    # One copy per GPU, kept: every timer of that GPU then shares its lookups' caches.
    assert prof.at_sustained_clock(gpu.sustained_clock_fraction, gpu.hbm_gbps, {"bf16": gpu.bf16_tflops}) is clocked
    assert prof.burst_evidence("gemm", "bf16") == "the rows from xla table: host copies"
    timer = OpTimer(gpu, prof)
    timer.time(Op("g", "gemm", "F", "x", 2 * 4096**3, 1.0, "bf16", m=4096, n=4096, k=4096))
    assert "the rows from xla table: host copies" in timer.warnings["sustained:gemm:bf16"]


@pytest.mark.parametrize("burst,message", [
    ({"memory_bound/bf16": "x"}, "burst_tables key 'memory_bound/bf16'; allowed: TABLE/DTYPE"),
    ({"gemm": "x"}, "burst_tables key 'gemm'; allowed"),
    ({"gemm/fp8": ""}, "burst_tables.gemm/fp8 must say, in text, why"),
    ({"gemm/FP8": "x"}, "burst_tables key 'gemm/FP8'; allowed: TABLE/DTYPE"),  # a typo was silently never applied
    ([], "field 'burst_tables' must be an object"),
    ({"gemm/fp8": []}, "burst_tables.gemm/fp8 must be a text (every row) or a list of"),
    ({"gemm/fp8": [{"source": "a"}]}, "burst_tables.gemm/fp8[0] must be {\"source\": PREFIX, \"evidence\": TEXT}"),
    # A prefix that begins no row of that table and dtype would never apply.
    ({"gemm/fp8": [{"source": "nowhere", "evidence": "x"}]}, "burst_tables.gemm/fp8[0].source 'nowhere' begins no gemm fp8 row"),
])
def test_burst_tables_are_checked(burst, message):
    row = {"dtype": "fp8", "m": 64, "n": 64, "k": 64, "tflops": 1, "source": "somewhere"}
    with pytest.raises(ProfileError, match=re.escape(message)):
        validate_profile({**_doc([row]), "burst_tables": burst})


def test_shipped_profiles_mark_deepgemms_tables_and_xlas_gemm_rows_as_bursts():
    for name in ("h800-anchors", "h800-2024", "h100-published"):
        p = load_profile(name)
        bursts = p.data["burst_tables"]
        assert set(bursts) == {"gemm/fp8", "grouped_gemm/fp8", "gemm/bf16"}
        assert all("DeepGEMM PR #68" in bursts[k] for k in ("gemm/fp8", "grouped_gemm/fp8"))
        [xla] = bursts["gemm/bf16"]
        assert "TransferLiteralsToDevice" in xla["evidence"]
        mine = [r for r in p.tables["gemm"] if r["dtype"] == "bf16" and r["source"].startswith(xla["source"])]
        assert len(mine) == 20  # XLA's rows only; the Triton, MAMF, fast.cu and vLLM rows are taken as measured
    assert "burst_tables" not in load_profile("a100-published").data


def test_fp8_gemms_of_another_scaling_than_the_rows_are_named_in_a_warning():
    """Per-tensor and blockwise FP8 GEMMs are different kernels: a plan whose recipe matches no fp8 row's
    ``fp8_scaling`` is told which scaling priced it; a matching row (or a calibrated one that says so)
    silences it."""
    from simulator.api import load
    from simulator.profile import Profile
    from simulator.timer import OpTimer
    from simulator.workload import Op

    gpu = load("deepseek-v3").cluster.gpu

    def warned(profile, scaling: str) -> list[str]:
        timer = OpTimer(gpu, profile)
        timer.time(Op("mlp.up", "gemm", "F", "mlp", 2 * 4096**3, 1.0, "fp8", m=4096, n=4096, k=4096, scaling=scaling))
        return [w for k, w in timer.warnings.items() if k.startswith("scaling:")]

    shipped = load_profile("h100-published")  # DeepGEMM's blockwise rows and one row that does not say
    assert warned(shipped, "blockwise") == []
    (note,) = warned(shipped, "tensorwise")
    assert "blockwise-1x128/128x128, unstated scaling price the plan's tensorwise" in note
    row = {"dtype": "fp8", "m": 4096, "n": 4096, "k": 4096, "tflops": 1200, "fp8_scaling": "tensorwise"}
    assert warned(Profile(validate_profile(_doc([row]))), "tensorwise") == []


def test_a_per_tensor_recipe_that_must_find_its_scale_first_costs_more_than_one_that_knows_it():
    """Current scaling (tensorwise) reads every FP8 input once more for its amax than delayed scaling."""
    from simulator.api import load, predict

    step = {r: predict(load("deepseek-v3", [f"plan.fp8_recipe={r}"])).step_time_s for r in ("delayed", "tensorwise")}
    assert step["tensorwise"] > step["delayed"]
