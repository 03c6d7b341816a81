"""The Streamlit dashboard under ``streamlit.testing.v1.AppTest`` (no browser)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ["timeline", "compare", "memory", "cost", "calibration", "validation"]
K = "deepseek-v3:"  # widget-key prefix of the default preset


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _gpu_hours(at: AppTest) -> float:
    m = next(m for m in at.metric if m.label.startswith("GPU-hours per trillion"))
    return float(re.sub(r"[^0-9.]", "", m.value.split()[0]))


def test_whatif_opens_on_deepseek_v3():
    at = _app()
    assert at.selectbox(key="scenario").value == "deepseek-v3"
    labels = [m.label for m in at.metric]
    for want in ("GPU-hours per trillion tokens", "Days on this cluster", "Run cost", "Throughput", "MFU",
                 "Pipeline bubble", "Exposed communication", "Peak memory / HBM"):
        assert any(lbl.startswith(want) for lbl in labels), (want, labels)
    assert _gpu_hours(at) > 0
    assert not at.error


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(page):
    at = _app()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title, page


def test_lower_ib_bandwidth_never_lowers_gpu_hours():
    at = _app()
    before = _gpu_hours(at)
    at.number_input(key=K + "ib").set_value(5.0).run()
    assert not at.exception
    after = _gpu_hours(at)
    assert after >= before
    assert at.session_state["current_plan"] == ("deepseek-v3", ("cluster.ib_gbps=5",))


def test_more_gpus_at_fixed_batch_changes_gpu_hours():
    at = _app()
    before = _gpu_hours(at)
    at.number_input(key=K + "gpus").set_value(1024).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert _gpu_hours(at) != before


def test_impossible_plan_shows_one_line_error():
    at = _app()
    at.number_input(key=K + "pp").set_value(5).run()
    assert not at.exception
    msgs = [e.value for e in at.error]
    assert msgs and any("plan" in m and "pp" in m for m in msgs), msgs  # names the field (pp)
    assert "Traceback" not in " ".join(e.value for e in at.error)
    for page in ("timeline", "memory", "cost"):  # other pages show the same error, no exception
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception and at.error


def test_add_to_comparison_and_des_button():
    at = _app()
    at.number_input(key=K + "pp").set_value(8).run()
    at.button[0].click().run()  # Add to comparison
    assert at.session_state["plans"] == [{"scenario": "deepseek-v3", "overrides": ["plan.pp=8"]}]
    des = next(b for b in at.button if "discrete-event" in b.label)
    des.click().run()
    assert not at.exception
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error
    table = at.dataframe[-1].value  # key metrics, one row per plan
    assert len(table) == 1 and "pp=8" in table["plan"].iloc[0]
