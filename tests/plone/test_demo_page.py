"""``@@zasync-demo-queue`` (printed by ``make run`` and ``make cluster``):
a page of the site, in its main template, whose button queues the demo job
(zasync.plone.demo) with a CSRF token; the site's worker runs it, and the
page links to it in the control panel. A real Plone site and worker."""

from __future__ import annotations

import re

import pytest
import transaction
from plone.app.testing import (
    SITE_OWNER_NAME,
    SITE_OWNER_PASSWORD,
    TEST_USER_NAME,
    TEST_USER_PASSWORD,
)
from plone.testing.zope import Browser
from tests.plone.helpers import WAIT

from zasync.admin import find_job
from zasync.local import live_annotations
from zasync.testing import wait_for_result, wait_until


def browser(layer, user=SITE_OWNER_NAME, password=SITE_OWNER_PASSWORD) -> Browser:
    b = Browser(layer["app"])
    b.handleErrors = False
    b.addHeader("Authorization", f"Basic {user}:{password}")
    return b


def test_the_page_queues_the_demo_job_and_links_to_it(functional):
    portal = functional["portal"]
    page_url = f"{portal.absolute_url()}/@@zasync-demo-queue"
    b = browser(functional)
    b.open(page_url)
    assert b.headers["Content-Type"].startswith("text/html")
    assert 'id="portal-footer' in b.contents  # the site's main template
    assert b.getControl("Queue a demo job")
    assert 'name="_authenticator"' in b.contents

    b.getControl("Queue a demo job").click()
    assert b.headers["Content-Type"].startswith("text/html")
    link = b.getLink(id="zasync-demo-job")
    job_id = link.text
    assert link.url == f"{portal.absolute_url()}/@@async-jobs/{job_id}"

    transaction.begin()
    job = find_job(portal._p_jar, job_id)
    assert job.callable_name == "zasync.plone.demo.demo_job"

    # It reports its progress while it runs, then completes.
    def progressed() -> bool:
        transaction.begin()
        return bool((live_annotations(job).get("progress") or {}).get("done"))

    wait_until(progressed, timeout=WAIT, message="no progress reported")
    result = wait_for_result(job, WAIT)
    assert result == f"demo job done: 5 steps in {portal.absolute_url()} as admin"

    link.click()  # the job's page in the control panel
    assert job_id in b.contents and 'data-zasync-kind="completed"' in b.contents


def test_a_post_without_the_token_queues_nothing(functional):
    b = browser(functional)
    with pytest.raises(Exception, match="authenticator is invalid"):
        b.post(f"{functional['portal'].absolute_url()}/@@zasync-demo-queue", "queue=1")


def test_members_may_not_queue_it(functional):
    b = browser(functional, TEST_USER_NAME, TEST_USER_PASSWORD)
    b.handleErrors = True
    b.open(f"{functional['portal'].absolute_url()}/@@zasync-demo-queue")
    # Plone answers Unauthorized with its login form, never with the page.
    assert re.search(r"/(require_login|login|insufficient-privileges)", b.url)
    assert "Queue a demo job" not in b.contents
