"""The dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``) via Playwright.

Run with ``pytest -m browser tests/test_dashboard_browser.py``. One full-page screenshot
per page goes to a temporary folder and, when ``GPUHOURS_SCREENSHOTS`` names a folder
(``screenshots/`` at the repository root is git-ignored), there too: look at them after
changing a page.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium); browser test skipped")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
           "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"streamlit did not start: {out[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _metric(page, label_start: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label_start).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _nav(page, title: str) -> None:
    """Switch page through the sidebar navigation (keeps the session, unlike a new URL)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.locator("h1", has_text=HEADINGS[title]).first.wait_for(timeout=60_000)


def _settled(page) -> None:
    """Wait until the script run is over (no running-man icon in the header) and the mouse is out of the way."""
    page.mouse.move(5, 995)
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')",
                           timeout=60_000)
    page.wait_for_timeout(300)


def _tables_fit(page, name: str, width: int = 1280) -> None:
    """Every table of the page is as wide as its box at a ``width``-px window (sidebar open): no column hides
    behind a horizontal scrollbar."""
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": size["height"]})
    _settled(page)
    widths = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
                              .map(s => [s.scrollWidth, s.clientWidth])""")
    page.set_viewport_size(size)
    assert widths, name
    assert all(sw <= cw + 1 for sw, cw in widths), (name, widths)


# sidebar title -> page heading, in the order the screenshots are taken after the What-if ones
HEADINGS = {"What-if": "What-if", "Timeline": "Pipeline timeline", "Search plans": "Plan search",
            "Compare plans": "Compare plans", "Sensitivity": "Sensitivity", "Memory": "Memory per pipeline stage",
            "Cost": "Training cost of the whole run", "Calibration": "Calibration profile",
            "Validation": "Validation against published runs"}


def test_every_page_in_chromium(server, tmp_path):
    """Drive each page like a user; save a full-page screenshot of each (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    shots = [tmp_path]
    if os.environ.get("GPUHOURS_SCREENSHOTS"):
        extra = Path(os.environ["GPUHOURS_SCREENSHOTS"])
        extra.mkdir(parents=True, exist_ok=True)
        shots.append(extra)

    def snap(page, name):
        _settled(page)
        assert page.locator('[data-testid="stException"]').count() == 0, name
        # Streamlit scrolls inside its own containers: grow the window to the content to capture all of it.
        tall = page.evaluate("""() => Math.max(...['[data-testid="stMain"]', '[data-testid="stSidebarContent"]']
                 .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))""")
        page.set_viewport_size({"width": 1500, "height": max(1000, min(int(tall) + 40, 6000))})
        page.wait_for_timeout(300)
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        page.set_viewport_size({"width": 1500, "height": 1000})
        for d in shots[1:]:
            shutil.copy(tmp_path / f"{name}.png", d / f"{name}.png")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(server, wait_until="domcontentloaded")
            page.get_by_text("GPU-hours per trillion tokens").first.wait_for(timeout=60_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            before = _metric(page, "GPU-hours per trillion")
            assert re.fullmatch(r"[0-9][0-9,]*", before), before  # the unit is in the label: the value is not cut
            fig_before = page.locator(".js-plotly-plot").first.inner_text()
            snap(page, "01_whatif")

            pp = page.get_by_label("PP", exact=True)
            pp.fill("8")
            pp.press("Enter")
            page.wait_for_function(
                """(b) => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
                      .find(e => e.innerText.includes('GPU-hours per trillion'));
                      return m && !m.innerText.includes(b); }""", arg=before, timeout=30_000)
            after = _metric(page, "GPU-hours per trillion")
            assert after != before
            page.wait_for_function(
                "(t) => { const f = document.querySelector('.js-plotly-plot'); return f && f.innerText !== t; }",
                arg=fig_before, timeout=30_000)

            page.get_by_role("button", name="Run discrete-event simulation").click()
            page.get_by_text("Discrete-event simulation", exact=True).first.wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            snap(page, "02_whatif_pp8_des")

            _nav(page, "Timeline")
            page.get_by_text("Download Perfetto trace").first.wait_for(timeout=60_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            snap(page, "03_timeline_des")

            _nav(page, "Search plans")
            page.get_by_role("button", name="Search plans").click()
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            snap(page, "04_search")
            _tables_fit(page, "search")
            # tick the first two ranked plans in the table (the row-selection column is at its left edge).
            # Each tick reruns the script and redraws the grid: wait for that rerun to show the new count
            # before the next tick, or a slow machine loses the second click inside the redraw.
            # The table may sit below the 1000-px window (fonts differ between machines): scroll it into view
            # first, since a click outside the viewport reaches nothing.
            table = page.locator('[data-testid="stDataFrame"]').first
            for row in (1, 2):
                table.scroll_into_view_if_needed()
                grid = table.bounding_box()
                assert 0 <= grid["y"] + 35 * row + 17 < page.viewport_size["height"], grid
                page.mouse.click(grid["x"] + 12, grid["y"] + 35 * row + 17)
                page.get_by_role("button", name=f"Send {row} to Compare").wait_for(timeout=30_000)
                _settled(page)
            send = page.get_by_role("button", name="Send 2 to Compare")
            send.click()
            page.get_by_text("2 plans added to Compare").first.wait_for(timeout=30_000)

            for i, (title, ready) in enumerate((
                    ("Compare plans", ".js-plotly-plot"), ("Sensitivity", ".js-plotly-plot"),
                    ("Memory", ".js-plotly-plot"), ("Cost", '[data-testid="stMetric"]'),
                    ("Calibration", ".js-plotly-plot"), ("Validation", ".js-plotly-plot")), start=5):
                _nav(page, title)
                page.locator(ready).first.wait_for(timeout=60_000)
                if title == "Compare plans":  # the two plans sent from Search, nothing else
                    assert page.get_by_text("No plans yet").count() == 0
                    page.get_by_text("#2 deepseek-v3").first.wait_for(state="attached", timeout=30_000)  # a grid cell
                    _tables_fit(page, "compare")
                if title == "Validation":  # the runs' descriptions beside their ids
                    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
                    _tables_fit(page, "validation")
                snap(page, f"{i:02d}_{title.split()[0].lower()}")
        finally:
            browser.close()
    assert (tmp_path / "01_whatif.png").stat().st_size > 10_000
