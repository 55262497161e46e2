"""A job's priority, unique key and lock in the jobs control panel (in
headless Chromium, as tests/plone/test_browser.py) and in ``@async-jobs``
(through the Zope publisher, as tests/plone/test_restapi.py), on one site
served over HTTP with a worker: shown on the lists and on a job's page,
filtered by query parameters, bad filter values refused with a message.

Needs ``/usr/bin/chromium`` and the ``playwright`` package: without them
these tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import datetime
import unittest
import uuid

import transaction
from plone.app.testing import applyProfile
from tests.plone import test_browser, uijobs
from tests.plone.test_browser import (
    ZASYNC_PLONE_BROWSER_TESTING,
    check_layout,
    chromium,  # noqa: F401 - the module's browser fixture
    expect,
)
from tests.plone.test_restapi import call, client

from zasync.plone import api
from zasync.testing import wait_for_result, wait_until

LATER = datetime.timedelta(hours=1)


class TestJobOptionsShownAndFiltered(unittest.TestCase):
    layer = ZASYNC_PLONE_BROWSER_TESTING
    #: a Site Administrator logged in through the login form (its page is
    #: ``self.page``); errors in the page's scripts fail the test
    logged_in = test_browser.TestControlPanelInChromium.logged_in

    def setUp(self):
        """Three jobs scheduled for later (they keep still): ``urgent``
        (priority 5, lock ``report:1``), ``nightly`` (unique key, held
        until it finishes) and ``behind`` (priority -3, lock
        ``report:1``)."""
        portal = self.layer["portal"]
        later = datetime.datetime.now(datetime.UTC) + LATER
        self.urgent = api.queue(
            uijobs.echo, portal, 1, begin_after=later, priority=5, lock="report:1"
        )
        self.nightly = api.queue(
            uijobs.echo,
            portal,
            2,
            begin_after=later,
            unique_key="nightly",
            unique_until="finished",
        )
        self.behind = api.queue(
            uijobs.echo, portal, 3, begin_after=later, priority=-3, lock="report:1"
        )
        transaction.commit()

    def hold_the_lock(self):
        """A job running under ``report:1`` until the test's end."""
        token = uuid.uuid4().hex
        job = api.queue(
            uijobs.stepped, self.layer["portal"], token, 1, True, lock="report:1"
        )
        transaction.commit()
        self.addCleanup(wait_for_result, job, 30)
        self.addCleanup(uijobs.release, token, 2)

        def running() -> bool:
            transaction.begin()
            return job.status == "active-status"

        wait_until(running, timeout=30, message="the job holding the lock to run")
        return job

    # -- @async-jobs ------------------------------------------------------------

    def test_rest_items_carry_the_options_and_filter_on_them(self):
        applyProfile(self.layer["portal"], "plone.restapi:default")
        transaction.commit()
        app = client(self.layer)

        def listed(query: str) -> list[str]:
            response = call(app, "GET", f"@async-jobs?status=scheduled&{query}")
            assert response.status_int == 200, response.text
            return [item["id"] for item in response.json["items"]]

        items = call(app, "GET", "@async-jobs?status=scheduled").json["items"]
        by_id = {item["id"]: item for item in items}
        urgent, nightly = by_id[self.urgent.id], by_id[self.nightly.id]
        assert (urgent["priority"], urgent["lock"], urgent["unique_key"]) == (
            5,
            "report:1",
            None,
        )
        assert (nightly["priority"], nightly["lock"]) == (0, None)
        assert (nightly["unique_key"], nightly["unique_until"]) == (
            "nightly",
            "finished",
        )

        assert listed("priority=5") == [self.urgent.id]
        assert listed("priority=-3") == [self.behind.id]
        assert listed("min_priority=0") == [self.urgent.id, self.nightly.id]
        assert listed("lock=report:1") == [self.urgent.id, self.behind.id]
        assert listed("lock=report:1&min_priority=0") == [self.urgent.id]
        assert listed("unique_key=nightly") == [self.nightly.id]
        assert listed("unique_key=other") == []
        # The list's @id asks for the same filter again.
        response = call(app, "GET", "@async-jobs?lock=report:1&priority=5")
        assert response.json["@id"].endswith("@async-jobs?priority=5&lock=report%3A1")

        for query, message in (
            ("priority=abc", "priority='abc' must be a whole number"),
            ("min_priority=5000000", "min_priority=5000000 is out of range"),
            ("lock=" + "x" * 201, "lock is 201 characters long: at most 200"),
        ):
            response = call(app, "GET", f"@async-jobs?{query}")
            assert response.status_int == 400, (query, response.status)
            assert response.json["type"] == "BadRequest"
            assert message in response.json["message"], response.json

        holder = self.hold_the_lock()
        one = call(app, "GET", f"@async-jobs/{self.behind.id}").json
        assert (one["lock"], one["lock_holder"]) == ("report:1", holder.id)
        one = call(app, "GET", f"@async-jobs/{self.nightly.id}").json
        assert "lock_holder" not in one and one["unique_key"] == "nightly"

    # -- the control panel ------------------------------------------------------

    def test_the_lists_and_a_jobs_page_show_and_filter_the_options(self):
        page = self.page
        base = f"{self.site_url}/@@async-jobs"
        page.goto(f"{base}?status=scheduled")
        rows = page.locator("#zasync-jobs-table tbody tr")
        expect(rows).to_have_count(3)
        urgent = page.locator(f'tr[data-job-id="{self.urgent.id}"]')
        expect(urgent.locator("[data-zasync-priority]")).to_have_text("priority 5")
        expect(urgent.locator("[data-zasync-lock]")).to_have_text("lock report:1")
        nightly = page.locator(f'tr[data-job-id="{self.nightly.id}"]')
        expect(nightly.locator("[data-zasync-unique-key]")).to_have_text(
            "unique nightly"
        )
        assert nightly.locator("[data-zasync-priority]").count() == 0  # 0: no badge
        check_layout(page, "the scheduled jobs with their options")
        page.shots("options-listed")

        # The filter form: by lock, then by priority as well.
        page.fill("#zasync-lock", "report:1")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(2)
        assert "lock=report%3A1" in page.url
        expect(page.locator("#zasync-lock")).to_have_value("report:1")
        page.fill("#zasync-min-priority", "0")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-job-id", self.urgent.id)
        page.fill("#zasync-lock", "")
        page.fill("#zasync-min-priority", "")
        page.fill("#zasync-unique-key", "nightly")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-job-id", self.nightly.id)
        page.shots("options-filtered")

        # A bad value in the URL: a message on the page, no list.
        response = page.goto(f"{base}?status=scheduled&priority=high&lock=report:1")
        assert response.status == 200
        expect(page.locator("#zasync-filter-problem")).to_contain_text(
            "priority='high' must be a whole number"
        )
        assert page.locator("#zasync-jobs-table").count() == 0
        expect(page.locator("#zasync-lock")).to_have_value("report:1")
        page.shots("options-bad-filter")

        # A job's page: its priority, its lock and who holds it now.
        holder = self.hold_the_lock()
        page.goto(f"{base}/{self.behind.id}")
        expect(page.locator("#zasync-priority-field")).to_contain_text("-3")
        lock = page.locator("#zasync-lock-field")
        expect(lock).to_contain_text("report:1")
        expect(lock).to_contain_text(f"held now by job {holder.id}")
        expect(page.locator("#zasync-unique-key-field")).to_have_text("none")
        page.shots("options-job-page")
        lock.get_by_role("link", name=holder.id).click()
        expect(page.locator("#zasync-lock-field")).to_contain_text(
            "this job holds it now"
        )
        page.goto(f"{base}/{self.nightly.id}")
        expect(page.locator("#zasync-unique-key-field")).to_contain_text(
            "nightly (no other job of its queue with this key is queued until it "
            "completes)"
        )
        expect(page.locator("#zasync-lock-field")).to_have_text("none")

        # At a phone's width too, the badges and fields fit and read well.
        page.set_viewport_size({"width": 390, "height": 844})
        for path in (
            "?status=scheduled",
            "?status=scheduled&priority=high",
            f"/{self.behind.id}",
        ):
            page.goto(f"{base}{path}")
            expect(page.locator("#zasync-jobs")).to_be_visible()
            check_layout(page, f"{path} at 390 px")
        page.shots("options-phone")
