"""The control panel's Schedules tab in a real browser: headless Chromium
(Playwright) against a Plone site served over HTTP, a worker running in
the same process, and the test add-on (zasync.plone.tests.addon)
installed, which declares two schedules in its profile.

A Site Administrator opens the tab from the jobs control panel, pauses and
resumes a schedule, runs one now and watches its job complete, and follows
a schedule's last run to its job. Screenshots go to
``test-artifacts/browser/``. Needs what tests/plone/test_browser.py needs.
"""

from __future__ import annotations

import datetime
import unittest

import pytest
import transaction
from plone.app.testing import TEST_USER_ID
from plone.base.utils import get_installer
from plone.testing.zope import WSGI_SERVER_FIXTURE
from tests.plone.test_browser import (  # noqa: F401 - chromium is a fixture
    SITE_ADMIN,
    SITE_ADMIN_PASSWORD,
    TIMEOUT,
    Shots,
    chromium,
    expect,
)
from zope.pytestlayer import fixture

from zasync.plone import schedules
from zasync.plone.schedules import Declaration
from zasync.plone.testing import ZasyncFunctionalTesting
from zasync.plone.tests.addon.testing import ADDON, SCHEDULES_ADDON_FIXTURE
from zasync.testing import wait_for_result, wait_until

#: the schedules add-on's layer with a worker per test, served over HTTP
#: (a TestCase layer, as in test_browser.py, so that the server is torn
#: down after the other tests)
SCHEDULES_BROWSER_TESTING = ZasyncFunctionalTesting(
    bases=(SCHEDULES_ADDON_FIXTURE, WSGI_SERVER_FIXTURE),
    name="ZasyncSchedules:Browser",
)
WAIT = 30


class TestSchedulesInChromium(unittest.TestCase):
    layer = SCHEDULES_BROWSER_TESTING

    @pytest.fixture(autouse=True)
    def logged_in(self, chromium, request):  # noqa: F811 - the fixture
        """Install the add-on, add a Site Administrator and log in as it;
        errors in the page's scripts fail the test."""
        request.getfixturevalue(fixture.LAYERS[self.layer]["function"])
        portal = self.layer["portal"]
        assert get_installer(portal).install_product(ADDON)
        portal.acl_users.userFolderAddUser(
            SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
        )
        transaction.commit()
        self.site_url = f"http://{self.layer['host']}:{self.layer['port']}/plone"
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT)
        page = self.page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{self.site_url}/login")
        page.fill("#__ac_name", SITE_ADMIN)
        page.fill("#__ac_password", SITE_ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("#personaltools-logout", state="attached")
        page.shots = Shots(page, request.node.name)
        yield
        context.close()
        assert not errors, f"errors in the page's scripts: {errors}"

    def queue(self):
        return schedules.get_queues(self.layer["portal"]._p_jar)[""]

    def schedule(self, name):
        transaction.begin()
        return self.queue().schedules[name]

    def test_pause_resume_and_run_now(self):
        page = self.page
        page.goto(f"{self.site_url}/@@async-jobs")
        page.locator('[data-zasync-tab="schedules"]').click()
        assert page.url == f"{self.site_url}/@@async-schedules"
        rows = page.locator("#zasync-schedule-list tbody tr")
        expect(rows).to_have_count(2)
        touch = page.locator('tr[data-zasync-schedule="addon-touch"]')
        expect(touch).to_contain_text("Touches the site every hour")
        expect(touch).to_contain_text("Every hour")
        expect(touch.locator("[data-zasync-last]")).to_have_text("never")
        expect(touch.locator("[data-zasync-next]")).to_contain_text("in ")
        page.shots("schedules")

        touch.get_by_role("button", name="Pause").click()
        expect(page.locator(".portalMessage")).to_contain_text(
            "Schedule addon-touch is paused"
        )
        touch = page.locator('tr[data-zasync-schedule="addon-touch"]')
        expect(touch.locator("[data-zasync-paused]")).to_have_text("paused")
        expect(touch.locator("[data-zasync-next]")).to_have_text("paused")
        assert self.schedule("addon-touch").paused
        page.shots("paused")

        touch.get_by_role("button", name="Resume").click()
        expect(page.locator(".portalMessage")).to_contain_text(
            "Schedule addon-touch is resumed"
        )
        touch = page.locator('tr[data-zasync-schedule="addon-touch"]')
        expect(touch.locator("[data-zasync-paused]")).to_have_count(0)
        expect(touch.get_by_role("button", name="Pause")).to_be_visible()
        assert not self.schedule("addon-touch").paused

        # Run now: the job's page follows the job to its end.
        whoami = page.locator('tr[data-zasync-schedule="addon-whoami"]')
        whoami.get_by_role("button", name="Run now").click()
        message = page.locator(".portalMessage")
        expect(message).to_contain_text("Schedule addon-whoami runs now: job ")
        job_id = page.url.rsplit("/", 1)[1]
        assert page.url == f"{self.site_url}/@@async-jobs/{job_id}"
        expect(page.locator("h1")).to_contain_text(f"Job {job_id}")
        expect(page.locator("[data-zasync-kind]")).to_have_text(
            "Completed", timeout=WAIT * 1000
        )
        expect(page.locator("#zasync-result")).to_contain_text(
            f"'user': '{TEST_USER_ID}'"
        )
        page.shots("run-now-completed")

    def test_last_run_links_to_its_job(self):
        page = self.page
        portal = self.layer["portal"]
        schedules.declare(
            portal,
            Declaration(
                name="often",
                function="zasync.plone.tests.addon.jobs.touch",
                user="admin",
                every=datetime.timedelta(seconds=1),
                description="Touches the site every second",
            ),
        )
        transaction.commit()
        wait_until(lambda: self.schedule("often").last_job, timeout=WAIT)
        # Pause it, so that the last run the page shows stays that one (a
        # slot fired meanwhile conflicts: try again).
        for attempt in transaction.manager.attempts(5):
            with attempt:
                self.queue().schedules["often"].pause()
        transaction.begin()
        job = self.queue().schedules["often"].last_job
        wait_for_result(job, WAIT)
        page.goto(f"{self.site_url}/@@async-schedules")
        row = page.locator('tr[data-zasync-schedule="often"]')
        expect(row.locator("[data-zasync-status]")).to_have_text("completed")
        expect(row.locator("[data-zasync-last]")).to_contain_text(" ago")
        page.shots("last-run")
        row.locator("[data-zasync-last] a").click()
        expect(page.locator("h1")).to_contain_text(f"Job {job.id}")
        expect(page.locator("[data-zasync-kind]")).to_have_text("Completed")
        page.shots("last-run-job")
