"""The Search page where the discrete-event simulation orders the plans it re-ran otherwise than the
analytic ranking: its order and its figure of the objective are in the table, and a note names its best."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

from tests.test_dashboard_apptest import SMALL, _app, _button, _ok  # noqa: E402


@pytest.fixture
def reversed_des(monkeypatch):
    """A stand-in DES that reverses the analytic order of the plans it is given (the real one agrees with
    the analytic engine on this small preset's best plans)."""
    import simulator.search as search_mod

    calls = []

    def des(cand, profile):
        calls.append(cand)
        return {"step_time_s": 10.0 - len(calls), "gpu_hours_per_trillion_tokens": 1000.0 - len(calls),
                "usd_per_trillion_tokens": 2000.0 - 2 * len(calls)}

    monkeypatch.setattr(search_mod, "des_metrics", des)
    return calls


def test_search_page_shows_the_des_order_and_its_best(reversed_des):
    at = _app(SMALL)
    at.switch_page("pages/search.py").run()
    at.checkbox(key=f"search:{SMALL}:des").check().run()
    at.number_input(key=f"search:{SMALL}:desk").set_value(3).run()
    _button(at, "Search plans").click().run()
    _ok(at)
    table = at.dataframe[0].value
    assert list(table["DES #"].iloc[:3]) == [3, 2, 1] and table["DES #"].iloc[3:].isna().all()
    note = [i.value for i in at.info if "ranks plan #3 first" in i.value]
    assert note and "0.2 % under #1" in note[0], [i.value for i in at.info]
    # ranked by dollars, the DES column is in dollars too (it showed GPU-hours beside a dollar ranking)
    reversed_des.clear()
    at.selectbox(key=f"search:{SMALL}:obj").set_value("Dollars per trillion tokens").run()
    _button(at, "Search plans").click().run()
    _ok(at)
    table = at.dataframe[0].value
    assert "DES $ / 1T" in table.columns and "DES GPU·h / 1T" not in table.columns
    assert list(table["DES $ / 1T"].iloc[:3]) == [1998.0, 1996.0, 1994.0]
