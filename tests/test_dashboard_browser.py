"""The dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``) via Playwright.

Run with ``pytest -m browser tests/test_dashboard_browser.py``. Screenshots go to a
temporary folder and, when ``GPUHOURS_SCREENSHOTS`` is set, to that folder too.
"""

from __future__ import annotations

import os
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
PAGES = ["timeline", "compare", "memory", "cost", "calibration", "validation"]


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


def test_whatif_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = [tmp_path]
    if os.environ.get("GPUHOURS_SCREENSHOTS"):
        extra = Path(os.environ["GPUHOURS_SCREENSHOTS"])
        extra.mkdir(parents=True, exist_ok=True)
        shots.append(extra)

    def snap(page, name):
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
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
            assert "GPU·h" in before
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
            snap(page, "02_whatif_pp8")

            for i, name in enumerate(PAGES, start=3):
                page.goto(f"{server}/{name}", wait_until="domcontentloaded")
                page.locator("h1").first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)
                assert page.locator('[data-testid="stException"]').count() == 0, name
                snap(page, f"{i:02d}_{name}")
        finally:
            browser.close()
    assert (tmp_path / "01_whatif.png").stat().st_size > 10_000
