"""The dashboard in a real browser (`make slow`): headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium watches a job run against the stand-in, cancels it and resumes it from the page.

Install the browser with `apt-get install -y chromium chromium-driver` (`.ci/run` does); without it the
test is skipped. `ENRICHKIT_SCREENSHOT=1` also writes the running job's page to docs/dashboard.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import JOBS, ROOT, Workspace, expected_ids, make_rows, read_json, wait_for, write_csv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no Chromium: install Debian's browser with "
                       "`apt-get install -y chromium chromium-driver`"),
    # `make slow` (CI runs it): `make test` shows the same flow (a live run listed, cancelled, resumed to the end)
    # through the API the page calls, in test_dashboard.py's test_cancel_stops_a_live_run_and_resume_finishes_it...
    pytest.mark.slow,
]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def dashboard(ws: Workspace) -> Iterator[str]:
    """`jobs.py serve` over the workspace on a free port; yields the URL it prints (carrying its token once:
    the page then holds a session cookie). Runs it starts inherit its environment, so they talk to the
    stand-in."""
    proc = subprocess.Popen([sys.executable, str(JOBS), "serve", str(ws.tmp), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ws.env(), cwd=ws.tmp, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", first)
    assert match, first + (proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
    try:
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, element_id: str) -> str:
    """An element's text read in one step (the page rebuilds parts of itself as the job changes)."""
    return str(driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.textContent : ''",
                                     element_id))


def _done(driver: Any) -> int:
    """Records done, as the job page's progress line says."""
    match = re.search(r"· ([\d,]+) done", _text(driver, "progress-text"))
    return int(match.group(1).replace(",", "")) if match else -1


def _state(driver: Any) -> str:
    return _text(driver, "state")


def test_watch_cancel_and_resume_a_job_from_the_page(ws: Workspace, dashboard: str, browser: Any,
                                                     tmp_path: Path) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def until(what: str, condition: Any, timeout: float = 30) -> None:
        WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(lambda d: condition(d), message=what)

    def click(element_id: str) -> None:
        until(f"a click on #{element_id}", lambda d: d.find_element(By.ID, element_id).click() or True)

    write_csv(ws.input, make_rows(300))
    ws.fake.configure(latency=0.05)
    run = ws.start("--max-workers", "2")
    try:
        wait_for(lambda: ws.checkpoint.exists() and read_json(ws.checkpoint)["completed_count"] > 0,
                 what="the first checkpoint")
        job_id = read_json(ws.checkpoint)["job_id"]

        browser.get(dashboard)
        assert "token=" not in browser.current_url  # the link opened a session; the token left the address bar
        until("the job listed as running", lambda d: job_id in d.page_source and "running" in d.page_source)
        browser.save_screenshot(str(tmp_path / "1-jobs.png"))
        until("a click on the job", lambda d: d.find_element(By.LINK_TEXT, job_id).click() or True)
        until("the job page", lambda d: _state(d) == "running" and _done(d) > 0)
        first = _done(browser)
        until("progress to rise", lambda d: _done(d) > first)
        browser.save_screenshot(str(tmp_path / "2-running.png"))
        if os.environ.get("ENRICHKIT_SCREENSHOT"):  # docs/dashboard.md's picture: the whole page
            browser.set_window_size(1280, browser.execute_script("return document.body.scrollHeight") + 120)
            browser.save_screenshot(str(ROOT / "docs" / "dashboard.png"))

        click("cancel")
        until("interrupted", lambda d: _state(d) == "interrupted")
        assert run.wait(timeout=30) == 130
        until("the Resume button", lambda d: d.find_elements(By.ID, "resume"))
        browser.save_screenshot(str(tmp_path / "3-interrupted.png"))
        stopped_at = _done(browser)
        assert 0 < stopped_at < 300

        ws.fake.configure(latency=0)
        click("resume")
        until("completed", lambda d: _state(d) == "completed")
        until("the final count", lambda d: _done(d) == 300)
        browser.save_screenshot(str(tmp_path / "4-completed.png"))
        assert "Resume" in _text(browser, "launch")
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=30)
    assert set(ws.output_ids()) == expected_ids(ws)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["1-jobs.png", "2-running.png", "3-interrupted.png",
                                                             "4-completed.png"]
