"""The jobs control panel in a real browser: headless Chromium (Debian's
``chromium``, driven by Playwright) against a Plone site served over HTTP
by a WSGI server, with a worker running in the same process.

A user logs in, finds "Asynchronous jobs" in Site Setup, watches a job's
progress bar move to the end without reloading the page, reads a failed
job's traceback, retries it and cancels a scheduled job. Screenshots go to
``test-artifacts/browser/``.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (``.ci/run``
installs both): without them these tests are skipped, except under CI,
where they fail.
"""

from __future__ import annotations

import datetime
import os
import re
import unittest
import uuid
from pathlib import Path

import pytest
import transaction
from plone.testing.zope import WSGI_SERVER_FIXTURE
from tests.plone import uijobs
from tests.plone.helpers import service
from zope.pytestlayer import fixture

from zasync.plone.testing import ZASYNC_PLONE_FIXTURE, ZasyncFunctionalTesting
from zasync.testing import wait_for_result

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
SITE_ADMIN = "siteadmin"
SITE_ADMIN_PASSWORD = "secret-siteadmin"
#: how often the pages refresh in these tests (ms); the default is 2000
REFRESH = 300
#: the longest any step may take (ms)
TIMEOUT = 20_000

#: the functional layer (a worker per test), served over HTTP. The tests
#: are a TestCase with this layer, so that zope.pytestlayer runs them after
#: the tests without a layer and tears the server down after them: the
#: server's host and port would otherwise leak into the requests of the
#: functional layer's later tests.
ZASYNC_PLONE_BROWSER_TESTING = ZasyncFunctionalTesting(
    bases=(ZASYNC_PLONE_FIXTURE, WSGI_SERVER_FIXTURE), name="ZasyncPlone:Browser"
)


def missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium, shared by the tests of this module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing(
            "playwright is not installed: pip install -c constraints.txt playwright"
        )
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


class Shots:
    """Numbered screenshots of a test, in test-artifacts/browser/."""

    def __init__(self, page, test_name):
        self.page = page
        self.prefix = re.sub(r"\W+", "-", test_name).strip("-")
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{self.prefix}-*.png"):
            old.unlink()

    def __call__(self, name):
        self.count += 1
        path = ARTIFACTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def mark_page(page):
    """Mark the document, to check later that it was never reloaded."""
    page.evaluate("window.zasyncNoReload = true")


def assert_not_reloaded(page):
    assert page.evaluate("window.zasyncNoReload === true"), "the page was reloaded"


class TestControlPanelInChromium(unittest.TestCase):
    layer = ZASYNC_PLONE_BROWSER_TESTING

    @pytest.fixture(autouse=True)
    def logged_in(self, chromium, request):
        """Add a Site Administrator and log in as it through the login form;
        errors in the page's scripts fail the test. The layer's per-test
        set-up is a fixture that pytest would run after this autouse one:
        it is asked for first."""
        request.getfixturevalue(fixture.LAYERS[self.layer]["function"])
        portal = self.layer["portal"]
        portal.acl_users.userFolderAddUser(
            SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
        )
        transaction.commit()
        self.site_url = f"http://{self.layer['host']}:{self.layer['port']}/plone"
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT)
        page = self.page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{self.site_url}/login")
        page.fill("#__ac_name", SITE_ADMIN)
        page.fill("#__ac_password", SITE_ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("#personaltools-logout", state="attached")
        page.shots = Shots(page, request.node.name)
        page.shots("logged-in")
        yield
        context.close()
        assert not errors, f"errors in the page's scripts: {errors}"

    def test_progress_of_a_running_job_without_reloading(self):
        site_url, page = self.site_url, self.page
        page.goto(f"{site_url}/@@overview-controlpanel")
        page.get_by_role("link", name="Asynchronous jobs").first.click()
        expect(page.locator("h1")).to_have_text("Asynchronous jobs")
        assert page.url == f"{site_url}/@@async-jobs"
        page.shots("overview")
        page.goto(f"{site_url}/@@async-jobs?refresh={REFRESH}")
        mark_page(page)

        token = uuid.uuid4().hex
        job = service().queueJob(uijobs.stepped, self.layer["portal"], token, 3, True)
        transaction.commit()
        # The overview shows it running, with its bar, without a reload.
        row = page.locator(f'#zasync-running tr[data-job-id="{job.id}"]')
        bar = row.locator("[data-zasync-progress]")
        expect(bar).to_have_attribute("data-zasync-progress", "0")
        expect(page.locator('#zasync-queues [data-count="active"]')).to_have_text("1")
        uijobs.release(token)
        expect(bar).to_have_attribute("data-zasync-progress", "33")
        expect(row).to_contain_text("step 1 of 3 done")
        page.shots("overview-running-33")
        assert_not_reloaded(page)

        # Its own page follows it to the end.
        row.get_by_role("link", name=job.id).click()
        expect(page.locator("h1")).to_contain_text(f"Job {job.id}")
        mark_page(page)
        bar = page.locator("#zasync-job-progress [data-zasync-progress]")
        expect(bar).to_have_attribute("data-zasync-progress", "33")
        uijobs.release(token)
        expect(bar).to_have_attribute("data-zasync-progress", "67")
        page.shots("job-67")
        uijobs.release(token)
        expect(bar).to_have_attribute("data-zasync-progress", "100")
        expect(page.locator("#zasync-job-progress .progress-bar")).to_have_attribute(
            "style", "width: 100%"
        )
        expect(page.locator("#zasync-job-progress")).to_contain_text("step 3 of 3 done")
        page.shots("job-100")
        uijobs.release(token)  # let it finish
        assert wait_for_result(job, 30) == "3 steps done"
        expect(page.locator("[data-zasync-kind]")).to_have_text("completed")
        expect(page.locator("#zasync-result")).to_have_text("'3 steps done'")
        page.shots("job-completed")
        assert_not_reloaded(page)

    def test_failed_job_traceback_retry_and_cancel(self):
        site_url, page = self.site_url, self.page
        portal = self.layer["portal"]
        failed = service().queueJob(uijobs.fail_with, portal, "disk <b>full</b>")
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        scheduled = service().queueJobWithDelay(
            None, later, uijobs.echo, portal, "later"
        )
        transaction.commit()
        wait_for_result(failed, 30)

        page.goto(f"{site_url}/@@async-jobs?refresh={REFRESH}")
        expect(page.locator('[data-zasync-count="failed"]')).to_have_text("1")
        page.locator('[data-zasync-tab="failed"]').click()
        row = page.locator(f'tr[data-job-id="{failed.id}"]')
        expect(row).to_contain_text("RuntimeError: disk <b>full</b>")  # as text
        page.shots("failed-list")
        row.get_by_role("link", name=failed.id).click()
        traceback = page.locator("#zasync-traceback")
        expect(traceback).to_contain_text("Traceback (most recent call last)")
        expect(traceback).to_contain_text("RuntimeError: disk <b>full</b>")
        assert page.locator("#zasync-traceback b").count() == 0, (
            "markup was not escaped"
        )
        page.shots("failed-traceback")

        # Retry, confirmed; the page says so, then shows the second run.
        page.get_by_role("link", name="Retry…").click()
        expect(page.locator("#zasync-confirm")).to_contain_text(
            "Queue this failed job again?"
        )
        page.shots("retry-confirm")
        page.locator("#zasync-confirm").get_by_role("button", name="Retry").click()
        expect(page.locator(".portalMessage")).to_contain_text(
            f"Job {failed.id} (tests.plone.uijobs.fail_with) is queued again."
        )
        mark_page(page)
        fields = page.locator("#zasync-job-fields")
        expect(fields.locator("tr", has_text="Attempts")).to_contain_text("2")
        expect(page.locator("[data-zasync-kind]")).to_have_text("failed")
        page.shots("retried-failed-again")
        assert_not_reloaded(page)

        # Cancel the scheduled job, confirmed.
        page.get_by_role("link", name="← Asynchronous jobs").click()
        page.locator('[data-zasync-tab="scheduled"]').click()
        page.locator(f'tr[data-job-id="{scheduled.id}"]').get_by_role(
            "link", name=scheduled.id
        ).click()
        expect(page.locator("[data-zasync-kind]")).to_have_text("scheduled")
        page.get_by_role("link", name="Cancel job…").click()
        page.shots("cancel-confirm")
        page.locator("#zasync-confirm").get_by_role("button", name="Cancel job").click()
        expect(page.locator(".portalMessage")).to_contain_text(
            f"Job {scheduled.id} (tests.plone.uijobs.echo) is cancelled."
        )
        expect(page.locator("[data-zasync-kind]")).to_have_text("failed")
        expect(page.locator("#zasync-error")).to_contain_text("CancelledError")
        page.shots("cancelled")
        assert "CancelledError" in wait_for_result(scheduled, 30).type_name
