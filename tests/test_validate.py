"""gpuhours validate: every included row predicted or listed with its reason."""

import json

from simulator.cli import main
from simulator.validate import DEFAULT_CSV, read_csv, validate_rows


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
