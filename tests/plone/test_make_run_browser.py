"""``make run`` (examples/run.py) in a real browser, as a newcomer meets
it: headless Chromium loads the site's pages, opens the demo page it
prints, presses "Queue a demo job", follows the link to the job in the
control panel and sees it complete. Meanwhile waitress never queues a
request ("Task queue depth is N", which 4 threads logged on every page
load). Screenshots go to test-artifacts/browser/.

Needs ``/usr/bin/chromium`` and playwright, as tests/plone/test_browser.py.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.processes import ROOT, subprocess_env

from zasync.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.multiprocess]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
START = 180  # seconds for examples/run.py to create the site and serve it
TIMEOUT = 30_000  # ms for a page to load or a job to complete


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def make_run(tmp_path: Path):
    """examples/run.py on a free port and a fresh var directory: (site
    URL, log path); stopped with SIGINT after the test."""
    port = free_port()
    log_path = tmp_path / "run.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "run.py"),
                "--port",
                str(port),
                "--var",
                str(tmp_path / "var"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            start_new_session=True,
        )
    try:
        site_url = f"http://localhost:{port}/Plone"

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text(errors="replace"))
            return answers(site_url)

        wait_until(up, timeout=START, message=lambda: log_path.read_text())
        yield site_url, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_a_newcomer_queues_the_demo_job_and_watches_it_complete(make_run):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing(
            "playwright is not installed: pip install -c constraints.txt playwright"
        )
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is missing: apt-get install chromium")
    site_url, log_path = make_run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    login = base64.b64encode(b"admin:admin").decode()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_context(
                extra_http_headers={"Authorization": f"Basic {login}"}
            ).new_page()
            page.set_default_timeout(TIMEOUT)
            for _ in range(3):  # a page's resources, over several connections
                page.goto(site_url, wait_until="networkidle")

            page.goto(f"{site_url}/@@zasync-demo-queue", wait_until="networkidle")
            assert page.locator("#portal-footer-wrapper, footer").count()
            page.get_by_role("button", name="Queue a demo job").click()
            link = page.locator("#zasync-demo-job")
            link.wait_for()
            job_id = link.inner_text()
            assert link.get_attribute("href") == f"{site_url}/@@async-jobs/{job_id}"
            page.screenshot(path=ARTIFACTS / "make-run-demo-queued.png")
            link.click()
            page.locator('[data-zasync-kind="completed"]').wait_for()
            page.screenshot(path=ARTIFACTS / "make-run-demo-completed.png")
        finally:
            browser.close()
    assert "Task queue depth" not in log_path.read_text(errors="replace")
