"""The jobs control panel in a real browser: headless Chromium (Debian's
``chromium``, driven by Playwright) against a Plone site served over HTTP
by a WSGI server, with a worker running in the same process.

A user logs in, finds "Asynchronous jobs" in Site Setup, watches a job's
progress bar move to the end without reloading the page, reads a failed
job's traceback, retries it and cancels a scheduled job; the pages fit a
phone's width and a desktop's, their buttons are readable, and only POSTs
change anything. Screenshots go to ``var/screenshots/`` (the path is
printed); with ``ZASYNC_DOCS_SCREENSHOT=1`` the desktop overview is also
saved as ``docs/_static/controlpanel.png``, which the docs show (a run
without it leaves the committed picture alone).

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
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "screenshots"
DOCS_SCREENSHOT = ROOT / "docs" / "_static" / "controlpanel.png"
SITE_ADMIN = "siteadmin"
SITE_ADMIN_PASSWORD = "secret-siteadmin"
#: how often the pages refresh in these tests (ms); the default is 2000
REFRESH = 300
#: the longest any step may take (ms): a first page renders its templates,
#: slowly on a busy machine
TIMEOUT = 45_000
#: the longest the server's first page may take (ms)
FIRST_PAGE_TIMEOUT = 180_000

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
    """Numbered screenshots of a test, in var/screenshots/."""

    def __init__(self, page, test_name):
        self.page = page
        self.prefix = re.sub(r"\W+", "-", test_name).strip("-")
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{self.prefix}-*.png"):
            old.unlink()
        print(f"screenshots of {test_name}: {ARTIFACTS}/{self.prefix}-*.png")

    def __call__(self, name):
        self.count += 1
        path = ARTIFACTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def expect(locator):
    """Playwright's assertions, waiting as long as a step may take (its
    own default is 5 s: too short on a busy machine)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    return expect(locator)


def mark_page(page):
    """Mark the document, to check later that it was never reloaded."""
    page.evaluate("window.zasyncNoReload = true")


def assert_not_reloaded(page):
    assert page.evaluate("window.zasyncNoReload === true"), "the page was reloaded"


#: the width of the document beyond the window's, in CSS pixels
OVERFLOW = "document.scrollingElement.scrollWidth - window.innerWidth"

#: the contrast ratio (WCAG 2) of each visible button's text against what
#: is behind it: its own background, or its ancestors' (blended, over white)
CONTRASTS = """
(elements) => {
  const parse = (text) => {
    const m = /^rgba?\\(([^)]*)\\)$/.exec(text);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) =>
    under.map((v, i) => top[i] * top[3] + v * (1 - top[3]));
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  return elements
    .filter((el) => el.offsetParent !== null)
    .map((el) => {
      const style = getComputedStyle(el);
      const colour = parse(style.color);
      const layers = [];
      for (let node = el; node; node = node.parentElement) {
        const raw = getComputedStyle(node).backgroundColor;
        const background = parse(raw);
        if (background === null) return { text: el.textContent.trim(), problem: raw };
        if (background[3] > 0) layers.unshift(background);
        if (background[3] >= 1) break;
      }
      if (colour === null) return { text: el.textContent.trim(), problem: style.color };
      let behind = [255, 255, 255];
      for (const layer of layers) behind = over(layer, behind);
      const front = over(colour, behind);
      const [light, dark] = [luminance(front), luminance(behind)].sort((a, b) => b - a);
      return {
        text: el.textContent.trim(),
        ratio: (light + 0.05) / (dark + 0.05),
        colour: style.color,
        behind: behind.map(Math.round).join(","),
      };
    });
}
"""
#: WCAG AA for normal text
MIN_CONTRAST = 4.5


def check_layout(page, where):
    """No horizontal overflow of the page; every button and badge of ours
    readable (Plone's own are Plone's)."""
    overflow = page.evaluate(OVERFLOW)
    assert overflow <= 0, f"{where}: the page is {overflow} px wider than the window"
    ours = ":is(#zasync-jobs, #zasync-demo) :is(.btn, .badge)"
    found = page.locator(ours).evaluate_all(CONTRASTS)
    assert found, (
        f"{where}: no button found at {page.url} ({page.locator(ours).count()} hidden)"
    )
    problems = [f for f in found if "problem" in f or f["ratio"] < MIN_CONTRAST]
    assert not problems, f"{where}: buttons hard to read: {problems}"


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
        # The server's first page compiles the site's templates: slow on a
        # busy machine, so the first load may take longer than a step.
        page.goto(f"{self.site_url}/login", timeout=FIRST_PAGE_TIMEOUT)
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
        expect(page.locator("[data-zasync-kind]")).to_have_text("Completed")
        expect(page.locator("#zasync-job-fields")).to_contain_text("ran ")
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
        expect(page.locator("[data-zasync-kind]")).to_have_text("Failed")
        # The breadcrumbs follow the job's state as it refreshes.
        crumbs = page.locator("#zasync-crumbs")
        expect(crumbs).to_contain_text("Failed jobs")
        expect(crumbs).not_to_contain_text("Pending jobs")
        page.shots("retried-failed-again")
        assert_not_reloaded(page)

        # Cancel the scheduled job, confirmed.
        page.locator("#zasync-crumbs").get_by_role(
            "link", name="Asynchronous jobs"
        ).click()
        page.locator('[data-zasync-tab="scheduled"]').click()
        page.locator(f'tr[data-job-id="{scheduled.id}"]').get_by_role(
            "link", name=scheduled.id
        ).click()
        expect(page.locator("[data-zasync-kind]")).to_have_text("Scheduled")
        expect(page.locator("#zasync-crumbs")).to_contain_text("Scheduled jobs")
        page.get_by_role("link", name="Cancel job…").click()
        page.shots("cancel-confirm")
        page.locator("#zasync-confirm").get_by_role("button", name="Cancel job").click()
        expect(page.locator(".portalMessage")).to_contain_text(
            f"Job {scheduled.id} (tests.plone.uijobs.echo) is cancelled."
        )
        expect(page.locator("[data-zasync-kind]")).to_have_text("Cancelled")
        expect(page.locator("#zasync-crumbs")).to_contain_text("Failed jobs")
        expect(page.locator("#zasync-error")).to_contain_text("CancelledError")
        page.shots("cancelled")
        assert "CancelledError" in wait_for_result(scheduled, 30).type_name

    def test_layout_at_phone_and_desktop_widths(self):
        """Every page of the panel fits 390 px and 1280 px without a
        horizontal scroll of the page, and its buttons are readable; the
        test job's button shows a job run to its end."""
        site_url, page = self.site_url, self.page
        portal = self.layer["portal"]
        failed = service().queueJob(uijobs.fail_with, portal, "x" * 300)
        done = [service().queueJob(uijobs.echo, portal, n) for n in range(3)]
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        service().queueJobWithDelay(None, later, uijobs.echo, portal, "later")
        transaction.commit()
        for job in (failed, *done):
            wait_for_result(job, 30)

        page.goto(f"{site_url}/@@async-jobs?refresh={REFRESH}")
        page.get_by_role("button", name="Queue a test job").click()
        expect(page.locator(".portalMessage")).to_contain_text("Queued the test job")
        expect(page.locator("[data-zasync-kind]")).to_have_text("Completed")
        expect(page.locator("#zasync-crumbs")).to_contain_text("Completed jobs")
        expect(page.locator("#zasync-result")).to_contain_text("demo job done")

        pages = {
            "overview": "",
            "failed": "?status=failed",
            "scheduled": "?status=scheduled",
            "job": f"/{failed.id}",
            "retry-confirm": f"/{failed.id}?confirm=retry",
            "clear-confirm": "?confirm=prune&older_than=24",
        }
        for width, height, device in ((390, 844, "phone"), (1280, 800, "desktop")):
            page.set_viewport_size({"width": width, "height": height})
            for name, path in pages.items():
                page.goto(f"{site_url}/@@async-jobs{path}")
                expect(page.locator("#zasync-jobs")).to_be_visible()
                check_layout(page, f"{name} at {width} px")
                page.shots(f"{device}-{name}")
        page.goto(f"{site_url}/@@async-jobs")
        expect(page.locator("#zasync-chart-finished")).to_have_attribute("role", "img")
        if os.environ.get("ZASYNC_DOCS_SCREENSHOT"):
            DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator("#zasync-jobs").screenshot(path=str(DOCS_SCREENSHOT))

    def test_only_a_post_changes_anything(self):
        """The URLs of the actions, opened (GET) with every field a POST
        would carry, even the token, change nothing; the forms that only
        ask (Clear…, the filters) keep the token out of their URL."""
        site_url, page = self.site_url, self.page
        portal = self.layer["portal"]
        failed = service().queueJob(uijobs.fail_with, portal, "stays failed")
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        scheduled = service().queueJobWithDelay(None, later, uijobs.echo, portal, 1)
        transaction.commit()
        wait_for_result(failed, 30)
        page.goto(f"{site_url}/@@async-jobs?confirm=prune&older_than=0")
        token = page.locator("#zasync-confirm input[name=_authenticator]")
        token = token.get_attribute("value")
        assert token
        queued = len(list(service().getQueues(portal)[""]))

        base = f"{site_url}/@@async-jobs"
        for url in (
            f"{base}/{failed.id}?action=retry&confirmed=1&_authenticator={token}",
            f"{base}/{failed.id}?action=remove&confirmed=1&_authenticator={token}",
            f"{base}/{scheduled.id}?action=cancel&confirmed=1&_authenticator={token}",
            f"{base}?action=prune&older_than=0&confirmed=1&_authenticator={token}",
            f"{base}?action=queue-demo&_authenticator={token}",
        ):
            response = page.goto(url)
            assert response.status == 200, url
            expect(page.locator(".portalMessage")).to_have_count(0)
        transaction.begin()
        assert failed.failed and failed.attempts == 1, "retried by a GET"
        assert scheduled.status == "pending-status", "cancelled by a GET"
        assert len(list(service().getQueues(portal)[""])) == queued, "queued by a GET"
        page.goto(f"{base}?status=failed")
        expect(page.locator(f'tr[data-job-id="{failed.id}"]')).to_have_count(1)

        # The forms that only ask keep the token out of their URL.
        page.goto(base)
        page.get_by_role("button", name="Clear…").click()
        expect(page.locator("#zasync-confirm")).to_contain_text("Remove")
        assert "confirm=prune" in page.url and "_authenticator" not in page.url
        page.goto(f"{base}?status=failed")
        page.get_by_role("button", name="Filter").click()
        assert "status=failed" in page.url and "_authenticator" not in page.url

    def test_the_demo_page_is_html_and_its_form_posts(self):
        site_url, page = self.site_url, self.page
        response = page.goto(f"{site_url}/@@zasync-demo-queue")
        assert response.headers["content-type"].startswith("text/html")
        form = page.locator("#zasync-demo form, form:has(button[name=queue])")
        assert form.first.get_attribute("method") == "post"
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Queue a demo job").click()
        response = navigation.value
        assert response.request.method == "POST"
        assert response.headers["content-type"].startswith("text/html")
        expect(page.locator("#zasync-demo-queued")).to_contain_text("Queued job")
        check_layout(page, "the demo page")
