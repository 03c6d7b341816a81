"""gpuhours validate: every included row predicted or listed with its reason."""

import json
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.validate import DEFAULT_CSV, read_csv, row_to_raw, validate_rows


def test_validate_json_contract(capsys):
    assert main(["validate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    included = [r for r in read_csv(DEFAULT_CSV) if r["include"] == "true"]
    assert len(out["rows"]) == len(included) == 25
    for r in out["rows"]:
        assert set(("run_id", "predicted", "measured", "error_pct")) <= set(r)
        assert r["error_pct"] is not None or r.get("reason")
    assert out["mape_pct"] > 0


def test_llama3_rows_compare_mfu():
    rows = [r for r in read_csv(DEFAULT_CSV) if r["run_id"].startswith("LLAMA3")]
    results, _ = validate_rows(rows)
    assert all(r.metric.startswith("MFU") for r in results)


def test_unmodellable_row_listed_with_reason(tmp_path):
    rows = read_csv(DEFAULT_CSV)
    bad = dict(rows[0], run_id="X", gpu="TPU-v5", include="true")
    results, _ = validate_rows([bad])
    assert results[0].error_pct is None and "gpu" in results[0].reason


def test_validate_profile_option(capsys, tmp_path):
    assert main(["validate", "--profile", "no-such-profile"]) == 2
    assert "profile" in capsys.readouterr().err
    # An H100-only CSV validated on the H100 profile predicts the same as the cluster default.
    rows = (Path(__file__).parent / "data" / "public.csv").read_text().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if r.startswith("MLM24-1.7B,")]
    csv_path = tmp_path / "h100.csv"
    csv_path.write_text("\n".join(keep) + "\n")
    assert main(["validate", "--csv", str(csv_path), "--profile", "h100-published", "--json"]) == 0
    with_profile = json.loads(capsys.readouterr().out)
    assert main(["validate", "--csv", str(csv_path), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert with_profile["rows"][0]["predicted"] == pytest.approx(default["rows"][0]["predicted"])
    assert main(["validate", "--csv", str(csv_path), "--profile", "a100-published", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["rows"][0]["predicted"] != pytest.approx(default["rows"][0]["predicted"])


SUPPLEMENTARY = Path(__file__).parent / "data" / "supplementary.csv"
PLAN_FIELDS = ("layers", "hidden", "experts_total", "expert_ffn", "seq_len", "micro_batch", "num_gpus", "tp", "pp", "vpp",
               "ep", "dp", "precision")


def test_supplementary_rows_all_modelled_with_the_same_schema(capsys):
    """The Megatron-Bridge rows kept beside the public set (docs/benchmarks.md) read and predict."""
    assert list(read_csv(SUPPLEMENTARY)[0]) == list(read_csv(DEFAULT_CSV)[0])
    assert main(["validate", "--csv", str(SUPPLEMENTARY), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 8
    assert all(r["error_pct"] is not None and r["measured"] > 0 for r in out["rows"])


def test_supplementary_ep_overlap_pair_differs_only_in_the_overlap_switch():
    """Megatron-Bridge's A0/A1 smoke pair (PRs #3862/#3868): one plan, all-to-all overlap off then on.
    validate reads the switch from the notes, so the two predictions differ by the overlap alone."""
    rows = {r["run_id"]: r for r in read_csv(SUPPLEMENTARY)}
    off, on = rows["MBPR-QWEN3-30B-NO-OVERLAP"], rows["MBPR-QWEN3-30B-EP-OVERLAP"]
    assert all(off[k] == on[k] for k in PLAN_FIELDS)
    raw_off, raw_on = row_to_raw(off)[0], row_to_raw(on)[0]
    assert raw_off["plan"]["ep_overlap"] == "auto" and raw_on["plan"]["ep_overlap"] == "on"
    assert {**raw_off["plan"], "ep_overlap": "on"} == raw_on["plan"]
    assert raw_on["plan"]["dispatcher"] == "alltoall"
    measured_gain = float(on["tokens_per_s_per_gpu"]) / float(off["tokens_per_s_per_gpu"])
    assert measured_gain == pytest.approx(41.25 / 31.31, rel=1e-3)


def test_supplementary_qwen3_30b_is_the_public_rows_plan_a_release_earlier():
    """Same plan, two releases: the 2x between them is software, not the plan (named in the notes)."""
    pub = {r["run_id"]: r for r in read_csv(DEFAULT_CSV)}["MB2511-QWEN3-30B-A3B"]
    sup = {r["run_id"]: r for r in read_csv(SUPPLEMENTARY)}["MB2509-QWEN3-30B-A3B"]
    assert all(pub[k] == sup[k] for k in PLAN_FIELDS)
    assert float(sup["tokens_per_s_per_gpu"]) / float(pub["tokens_per_s_per_gpu"]) == pytest.approx(1.99, abs=0.01)


def test_mfu_divides_by_the_peak_the_definition_states_else_the_rows_gpu():
    from simulator import api
    from simulator.validate import mfu_under

    sc = api.load("llama3-405b")
    base = mfu_under("palm 6N+attn (BF16 MFU, peak 989)", sc, 100.0)
    assert mfu_under("palm 6N+attn (peak 312)", sc, 100.0) == pytest.approx(base * 989 / 312)
    # No peak stated: the BF16 peak of the row's GPU (H100 989.4).
    assert mfu_under("palm 6N+attn", sc, 100.0) == pytest.approx(base * 989 / 989.4)
    mega = mfu_under("megatron-72 no recompute (TFLOP/s / 312)", sc, 100.0)
    assert mega * 312 == pytest.approx(mfu_under("megatron-72 no recompute (TFLOP/s / 989)", sc, 100.0) * 989)
