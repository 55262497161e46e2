"""Cancelling a running job that never checks from the control panel, in
a real browser (headless Chromium, as tests/plone/test_browser.py): the
worker's watchdog interrupts it after its grace period, and the job's
page, refreshing by itself, shows it cancelled (issue #21).

Needs ``/usr/bin/chromium`` and the ``playwright`` package: without them
this test is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import time
import unittest
import uuid

import pytest
import transaction
from tests.plone import spinjobs
from tests.plone.helpers import service
from tests.plone.test_browser import (
    REFRESH,
    SITE_ADMIN,
    SITE_ADMIN_PASSWORD,
    TIMEOUT,
    ZASYNC_PLONE_BROWSER_TESTING,
    Shots,
    chromium,  # noqa: F401 - the module's browser fixture
    expect,
)
from zope.pytestlayer import fixture

from zasync.interfaces import JobCancelled
from zasync.plone.testing import DISPATCHER_UUID, start_dispatcher
from zasync.testing import wait_for_result, wait_until

#: seconds the worker gives a cancelled job to stop by itself
GRACE = 1.0


class TestCancelARunningJobInChromium(unittest.TestCase):
    layer = ZASYNC_PLONE_BROWSER_TESTING

    @pytest.fixture(autouse=True)
    def logged_in(self, chromium, request):  # noqa: F811 - the imported fixture
        """A Site Administrator logged in through the login form, and the
        layer's worker replaced by one with a short grace period."""
        request.getfixturevalue(fixture.LAYERS[self.layer]["function"])
        layer = self.layer
        layer["dispatcher"].stop(10)
        layer["dispatcher"] = start_dispatcher(
            layer["queuesDB"], uuid=DISPATCHER_UUID, interrupt_grace=GRACE
        )
        layer["portal"].acl_users.userFolderAddUser(
            SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
        )
        transaction.commit()
        self.site_url = f"http://{layer['host']}:{layer['port']}/plone"
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
        yield
        context.close()
        assert not errors, f"errors in the page's scripts: {errors}"

    def test_cancel_a_running_job_that_never_checks(self):
        site_url, page = self.site_url, self.page
        token = uuid.uuid4().hex
        job = service().queueJob(spinjobs.spin, self.layer["portal"], token, 120.0)
        transaction.commit()
        wait_until(lambda: token in spinjobs.started, message="the job to start")

        page.goto(f"{site_url}/@@async-jobs/{job.id}?refresh={REFRESH}")
        expect(page.locator("[data-zasync-kind]")).to_have_text("Running")
        page.get_by_role("link", name="Cancel job…").click()
        page.shots("cancel-running-confirm")
        page.locator("#zasync-confirm").get_by_role("button", name="Cancel job").click()
        requested = time.monotonic()
        expect(page.locator(".portalMessage")).to_contain_text(
            f"Cancel requested for job {job.id}"
        )
        # The job never checks: the watchdog interrupts it, and the page
        # follows it to its end without a reload.
        expect(page.locator("[data-zasync-kind]")).to_have_text("Cancelled")
        expect(page.locator("#zasync-error")).to_contain_text("JobCancelled")
        expect(page.locator("#zasync-error")).to_contain_text(
            "did not stop within 1 s: interrupted"
        )
        page.shots("cancelled-running")
        assert time.monotonic() - requested < GRACE + 10
        failure = wait_for_result(job, 30)
        assert failure.check(JobCancelled)
