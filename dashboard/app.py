"""gpuhours dashboard: ``streamlit run dashboard/app.py``.

The sidebar holds the plan (scenario preset + what-if knobs) shared by all
pages; each page in ``dashboard/pages`` reads it from ``st.session_state``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE.parent),) if p not in sys.path]

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402,F401  (puts the repo on sys.path)

st.set_page_config(page_title="gpuhours", page_icon=":material/timer:", layout="wide")

pages = [
    st.Page(str(HERE / "pages" / "whatif.py"), title="What-if", icon=":material/tune:", default=True),
    st.Page(str(HERE / "pages" / "timeline.py"), title="Timeline", icon=":material/view_timeline:"),
    st.Page(str(HERE / "pages" / "search.py"), title="Search plans", icon=":material/search:"),
    st.Page(str(HERE / "pages" / "compare.py"), title="Compare plans", icon=":material/compare_arrows:"),
    st.Page(str(HERE / "pages" / "sensitivity.py"), title="Sensitivity", icon=":material/swap_vert:"),
    st.Page(str(HERE / "pages" / "memory.py"), title="Memory", icon=":material/memory:"),
    st.Page(str(HERE / "pages" / "cost.py"), title="Cost", icon=":material/payments:"),
    st.Page(str(HERE / "pages" / "calibration.py"), title="Calibration", icon=":material/straighten:"),
    st.Page(str(HERE / "pages" / "validation.py"), title="Validation", icon=":material/fact_check:"),
]
pg = st.navigation(pages)
pg.run()
