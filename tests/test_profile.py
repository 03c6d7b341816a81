"""Profiles: schema, atomic writes, interpolation."""

import json

import pytest

from simulator.profile import ProfileError, load_profile, save_profile, validate_profile


def _doc(rows):
    return {"schema": "gpuhours.profile", "schema_version": 1, "name": "t", "device": {"name": "x", "kind": "cpu"},
            "tables": {"gemm": rows}}


def test_shipped_profiles_load_and_carry_sources():
    for name in ("h800-anchors", "h100-published", "a100-published"):
        p = load_profile(name)
        for table, rows in p.tables.items():
            for r in rows:
                assert r.get("source"), (name, table, r)


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
    with pytest.raises(ProfileError, match="positive number"):
        validate_profile(_doc([{"dtype": "bf16", "m": 1, "n": 1, "k": 1, "tflops": -1}]))


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
