"""The "Asynchronous jobs" control panel (``@@async-jobs``), through a test
browser on a real Plone site with a worker (ZASYNC_PLONE_FUNCTIONAL_TESTING):
who may see and act, the overview, the lists and their filters, a job's
page (escaped arguments, traceback, progress) and the confirmed,
CSRF-protected actions."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
import transaction
from plone.app.testing import (
    SITE_OWNER_NAME,
    SITE_OWNER_PASSWORD,
    TEST_USER_ID,
    TEST_USER_NAME,
    TEST_USER_PASSWORD,
    login,
)
from plone.testing.zope import Browser
from tests.plone import uijobs
from tests.plone.helpers import WAIT, run, service
from ZPublisher.HTTPRequest import HTTPRequest

from zasync import Job
from zasync.interfaces import JobCancelled
from zasync.testing import wait_for_result, wait_for_start, wait_until

SITE_ADMIN = "siteadmin"
SITE_ADMIN_PASSWORD = "secret-siteadmin"


@pytest.fixture
def site(functional, monkeypatch):
    """The layer, with a Site Administrator ``siteadmin``. The publisher
    retries a request that conflicts (with the worker's commits) three
    times, as Zope does by default (zope.conf ``max-conflict-retries``; 0
    in test set-ups)."""
    monkeypatch.setattr(HTTPRequest, "retry_max_count", 3)
    portal = functional["portal"]
    portal.acl_users.userFolderAddUser(
        SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
    )
    transaction.commit()
    return functional


def browser(layer, user=SITE_ADMIN, password=SITE_ADMIN_PASSWORD):
    b = Browser(layer["app"])
    b.handleErrors = True
    if user is not None:
        b.addHeader("Authorization", f"Basic {user}:{password}")
    return b


def url(layer, path=""):
    return f"{layer['portal'].absolute_url()}/@@async-jobs{path}"


def queue_as(layer, user, func, context, *args, **kwargs):
    """Queue a job as ``user`` of the site (the test runs as the test user, a
    Member, Contributor in test-folder)."""
    login(layer["portal"], user)
    try:
        return service().queueJob(func, context, *args, **kwargs)
    finally:
        login(layer["portal"], TEST_USER_NAME)


def text_of(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- who may see it -----------------------------------------------------------


def test_configlet_and_permissions(site):
    portal = site["portal"]
    (ours,) = [
        action
        for action in portal.portal_controlpanel.listActions()
        if action.id == "zasync-jobs"
    ]
    assert ours.title == "Asynchronous jobs"
    assert ours.category == "plone-advanced"
    assert ours.permissions == ("zasync: View jobs",)
    assert ours.getActionExpression() == "string:${portal_url}/@@async-jobs"
    for permission in ("zasync: View jobs", "zasync: Manage jobs"):
        roles = {
            r["name"] for r in portal.rolesOfPermission(permission) if r["selected"]
        }
        assert roles == {"Manager", "Site Administrator"}
    b = browser(site)
    b.open(f"{portal.absolute_url()}/@@overview-controlpanel")
    assert "Asynchronous jobs" in b.contents
    member = browser(site, TEST_USER_NAME, TEST_USER_PASSWORD)
    member.open(f"{portal.absolute_url()}/@@overview-controlpanel")
    assert "Asynchronous jobs" not in member.contents


@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_anonymous_and_members_are_refused(site, who):
    job = service().queueJob(uijobs.fail_with, site["portal"], "secret failure")
    run(job)
    user = (None, None) if who == "anonymous" else (TEST_USER_NAME, TEST_USER_PASSWORD)
    b = browser(site, *user)
    for path in ("", "?status=failed", f"/{job.id}", "/parts", f"/{job.id}/parts"):
        b.open(url(site, path))
        # Plone answers Unauthorized with its login form (a member: with
        # "insufficient privileges"), never with the page.
        assert re.search(r"/(require_login|login|insufficient-privileges)", b.url)
        assert "secret failure" not in b.contents
        assert 'id="zasync-jobs"' not in b.contents
    b.raiseHttpErrors = False
    b.post(url(site, f"/{job.id}"), "action=retry")
    assert "zasync-jobs" not in b.contents
    transaction.begin()
    assert job.failed, "the job was retried"


def test_site_administrators_see_this_sites_jobs_only(site):
    """Queues are shared by the sites of a database: a job queued without
    this site (here: no Plone at all) is seen by a Zope manager only."""
    portal = site["portal"]
    foreign = service().getQueues()[""].put(Job(uijobs.fail_with, None, "elsewhere"))
    ours = service().queueJob(uijobs.fail_with, portal, "here")
    run(foreign)
    run(ours)
    admin = browser(site)
    admin.open(url(site, "?status=failed"))
    assert ours.id in admin.contents
    assert foreign.id not in admin.contents
    admin.raiseHttpErrors = False
    admin.open(url(site, f"/{foreign.id}"))
    assert admin.headers["status"].startswith("404")
    owner = browser(site, SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
    owner.open(url(site, "?status=failed"))
    assert ours.id in owner.contents and foreign.id in owner.contents
    assert "every site in this database" in owner.contents
    owner.open(url(site, f"/{foreign.id}"))
    assert "elsewhere" in owner.contents


# -- the overview --------------------------------------------------------------


def test_overview_counts_quotas_workers_and_throughput(site):
    portal = site["portal"]
    done = service().queueJob(uijobs.echo, portal, 1)
    failed = service().queueJob(uijobs.fail_with, portal, "no")
    run(done)
    run(failed)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    service().queueJobWithDelay(None, later, uijobs.echo, portal, 2)
    transaction.commit()
    b = browser(site)
    b.open(url(site))
    page = b.contents
    row = re.search(r'<tr data-queue="">(.*?)</tr>', page, re.S).group(1)
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', row))
    assert counts == {
        "pending": "0",
        "scheduled": "1",
        "active": "0",
        "completed": "1",
        "failed": "1",
    }
    assert re.search(r'data-quota="default"><code>default</code>\s*0 / 1', row)
    throughput = re.search(r'data-window="60m">(.*?)</tr>', page, re.S).group(1)
    assert dict(re.findall(r'data-count="(\w+)">(\d+)<', throughput)) == {
        "completed": "1",
        "failed": "1",
    }
    worker = re.search(r'<tr data-worker="([^"]+)">(.*?)</tr>', page, re.S)
    assert worker.group(1) == site["dispatcher"].uuid
    assert "alive" in worker.group(2) and "not alive" not in worker.group(2)
    assert "No job is running." in page
    # The tabs carry the counts too.
    assert re.search(r'data-zasync-count="scheduled">1<', page)
    # The page refreshes from its parts.
    assert 'data-zasync-parts="http://nohost/plone/@@async-jobs/parts"' in page
    assert "++resource++zasync.plone/jobs.js" in page


def test_parts_show_the_progress_of_running_jobs(site):
    portal = site["portal"]
    token = uuid.uuid4().hex
    job = service().queueJob(uijobs.stepped, portal, token, 2)
    transaction.commit()
    b = browser(site)

    def progress():
        b.open(url(site, "/parts"))
        found = re.search(
            rf'data-job-id="{job.id}".*?data-zasync-progress="(\d+)"', b.contents, re.S
        )
        return found and found.group(1)

    # Each check renders a page: every 50 ms is often enough.
    shown = wait_until(progress, timeout=WAIT, interval=0.05, message="progress 0")
    assert shown == "0"
    uijobs.release(token)
    wait_until(
        lambda: progress() == "50", timeout=WAIT, interval=0.05, message="progress 50%"
    )
    assert "step 1 of 2 done" in b.contents
    b.open(url(site, f"/{job.id}/parts"))
    assert 'data-zasync-kind="active"' in b.contents
    assert 'data-zasync-progress="50"' in b.contents
    uijobs.release(token)
    assert wait_for_result(job, WAIT) == "2 steps done"
    b.open(url(site, f"/{job.id}/parts"))
    assert 'data-zasync-kind="completed"' in b.contents
    assert "&#x27;2 steps done&#x27;" in b.contents or "'2 steps done'" in b.contents
    assert b.headers["Cache-Control"] == "no-store"


# -- the lists -------------------------------------------------------------------


def test_lists_filter_by_callable_user_path_and_queue(site):
    portal, folder = site["portal"], site["test-folder"]
    mine = service().queueJob(uijobs.echo, folder, "mine")
    admins = queue_as(site, SITE_ADMIN, uijobs.fail_with, portal, "admin's")
    run(mine)
    run(admins)
    b = browser(site)

    def listed(**query):
        b.open(url(site, "?" + "&".join(f"{k}={v}" for k, v in query.items())))
        return set(re.findall(r'<tr data-job-id="(\w+)"', b.contents))

    assert listed(status="completed") == {mine.id}
    assert listed(status="failed") == {admins.id}
    assert listed(status="completed", callable="uijobs.echo") == {mine.id}
    assert listed(status="completed", callable="fail_with") == set()
    assert listed(status="completed", user=TEST_USER_ID) == {mine.id}
    assert listed(status="failed", user=TEST_USER_ID) == set()
    assert listed(status="completed", path="/test-folder") == {mine.id}
    assert listed(status="completed", path="/plone/test-folder") == {mine.id}
    assert listed(status="failed", path="/test-folder") == set()
    assert listed(status="completed", queue="") == {mine.id}
    assert listed(status="completed", queue="other") == set()
    # The filter form keeps what was asked.
    b.open(url(site, f"?status=completed&user={TEST_USER_ID}"))
    assert b.getControl(name="user").value == TEST_USER_ID
    assert "test-folder" in b.contents  # the context, linked
    assert 'href="http://nohost/plone/test-folder"' in b.contents


def test_a_list_says_when_it_searched_only_the_newest_finished_jobs(site, monkeypatch):
    from zasync.plone.browser import controlpanel, jobs

    folder = site["test-folder"]
    older = service().queueJob(uijobs.echo, folder, "older")
    run(older)
    newer = service().queueJob(uijobs.echo, folder, "newer")
    run(newer)
    b = browser(site)
    b.open(url(site, "?status=completed&callable=uijobs.echo"))
    assert "zasync-scan-limit" not in b.contents
    monkeypatch.setattr(jobs, "FILTER_SCAN_LIMIT", 1)
    monkeypatch.setattr(controlpanel.JobsControlPanel, "scan_limit", 1)
    b.open(url(site, "?status=completed&callable=uijobs.echo"))
    assert f'data-job-id="{newer.id}"' in b.contents
    assert f'data-job-id="{older.id}"' not in b.contents
    assert "Searched the newest 1 finished jobs only" in b.contents


def test_lists_page_newest_first(site):
    portal = site["portal"]
    made = [service().queueJob(uijobs.echo, portal, n) for n in range(5)]
    transaction.commit()
    for job in made:
        wait_for_result(job, WAIT)
    newest_first = [job.id for job in reversed(made)]
    b = browser(site)
    b.open(url(site, "?status=completed&b_size=2"))
    assert re.findall(r'<tr data-job-id="(\w+)"', b.contents) == newest_first[:2]
    assert "Jobs 1 to 2" in b.contents
    b.getLink("Older →").click()
    assert re.findall(r'<tr data-job-id="(\w+)"', b.contents) == newest_first[2:4]
    b.getLink("Older →").click()
    assert re.findall(r'<tr data-job-id="(\w+)"', b.contents) == newest_first[4:]
    assert "Older →" not in b.contents
    b.getLink("← Newer").click()
    assert re.findall(r'<tr data-job-id="(\w+)"', b.contents) == newest_first[2:4]


# -- one job ---------------------------------------------------------------------


def test_job_page_shows_everything_escaped(site):
    folder = site["test-folder"]
    job = service().queueJob(
        uijobs.echo, folder, "<script>alert('x')</script>", "y" * 500, key=1
    )
    run(job)
    b = browser(site)
    b.open(url(site, f"/{job.id}"))
    page = b.contents
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page
    text = text_of(page)
    assert "tests.plone.uijobs.echo" in text
    assert "key=1" in text
    assert "y" * 198 + "…" in text and "y" * 200 not in text  # shortened
    assert re.search(
        r'id="zasync-context" href="http://nohost/plone/test-folder"', page
    )
    for field in ("User test_user_1_", "Queue (default)", "Quotas default"):
        assert field in text
    assert "Attempts 1" in text
    assert re.search(r"Started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert 'id="zasync-result"' in page


def test_failed_job_page_shows_the_traceback(site):
    job = service().queueJob(uijobs.fail_with, site["portal"], "the <b>reason</b>")
    run(job)
    b = browser(site)
    b.open(url(site, f"/{job.id}"))
    traceback = re.search(
        r'<pre id="zasync-traceback"[^>]*>(.*?)</pre>', b.contents, re.S
    )
    assert "Traceback (most recent call last)" in traceback.group(1)
    assert 'uijobs.py", line' in traceback.group(1)
    assert "RuntimeError: the &lt;b&gt;reason&lt;/b&gt;" in traceback.group(1)
    assert "zasync-job-actions" in b.contents


def test_unknown_job_is_not_found(site):
    b = browser(site)
    b.raiseHttpErrors = False
    for job_id in ("0", "zzz", "deadbeef"):
        b.open(url(site, f"/{job_id}"))
        assert b.headers["status"].startswith("404")


# -- actions ---------------------------------------------------------------------


def test_retry_a_failed_job_is_confirmed_and_reported(site):
    job = service().queueJob(uijobs.fail_with, site["portal"], "once")
    run(job)
    b = browser(site)
    b.open(url(site, f"/{job.id}"))
    b.getLink("Retry…").click()
    assert "Queue this failed job again?" in b.contents
    transaction.begin()
    assert job.failed, "asking to confirm did nothing yet"
    b.getControl("Retry").click()
    assert f"Job {job.id} (tests.plone.uijobs.fail_with) is queued again." in b.contents
    assert b.url == url(site, f"/{job.id}")

    def run_again():
        transaction.begin()  # see the worker's commit
        return job.attempts == 2

    wait_until(run_again, timeout=WAIT, message="a second run")
    assert wait_for_result(job, WAIT).getErrorMessage() == "once"


def test_cancel_a_running_job(site):
    """A running job's cancel is requested; it stops at its next check."""
    token = "panel-cancel"
    job = service().queueJob(uijobs.stepped, site["portal"], token, 3)
    transaction.commit()
    wait_for_start(job, WAIT)
    b = browser(site)
    b.open(url(site, f"/{job.id}"))
    b.getLink("Cancel job…").click()
    assert "It stops at its next check" in b.contents
    b.getControl("Cancel job").click()
    assert (
        f"Cancel requested for job {job.id} (tests.plone.uijobs.stepped); the "
        f"job stops at its next check, or is interrupted after the worker's "
        f"grace period." in b.contents
    )
    uijobs.release(token, 3)
    assert wait_for_result(job, WAIT).check(JobCancelled)


def test_cancel_a_scheduled_job(site):
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    job = service().queueJobWithDelay(None, later, uijobs.echo, site["portal"], 1)
    transaction.commit()
    b = browser(site)
    b.open(url(site, "?status=scheduled"))
    assert f'data-job-id="{job.id}"' in b.contents
    b.open(url(site, f"/{job.id}"))
    assert "Retry…" not in b.contents
    b.getLink("Cancel job…").click()
    b.getControl("Cancel job").click()
    assert f"Job {job.id} (tests.plone.uijobs.echo) is cancelled." in b.contents
    failure = wait_for_result(job, WAIT)
    assert "CancelledError" in failure.type_name


def test_remove_a_finished_job(site):
    job = service().queueJob(uijobs.echo, site["portal"], 1)
    run(job)
    b = browser(site)
    b.open(url(site, f"/{job.id}?confirm=remove"))
    b.getControl("Remove").click()
    assert f"Job {job.id} (tests.plone.uijobs.echo) is removed." in b.contents
    assert b.url == url(site)
    b.open(url(site, "?status=completed"))
    assert f'data-job-id="{job.id}"' not in b.contents


def test_clear_finished_jobs_older_than_an_age(site):
    portal = site["portal"]
    jobs = [service().queueJob(uijobs.echo, portal, n) for n in range(3)]
    transaction.commit()
    for job in jobs:
        wait_for_result(job, WAIT)
    b = browser(site)
    b.open(url(site))
    b.getControl(name="older_than").value = ["1"]
    b.getControl("Clear…").click()
    assert "Remove older than 1 hour" in text_of(b.contents)
    b.getControl("Remove them").click()
    assert "Removed 0 finished jobs (older than 1 hour)." in b.contents
    b.open(url(site, "?confirm=prune&older_than=0"))
    b.getControl("Remove them").click()
    assert "Removed 3 finished jobs (all finished jobs)." in b.contents
    b.open(url(site, "?status=completed"))
    assert "No jobs." in b.contents


@pytest.mark.parametrize("older_than", ["inf", "1e400", "nan", "-1", "soon"])
def test_clearing_with_an_age_that_is_no_age_is_a_bad_request(site, older_than):
    job = service().queueJob(uijobs.echo, site["portal"], 1)
    run(job)
    b = browser(site)
    b.raiseHttpErrors = False
    b.open(url(site, "?confirm=prune&older_than=0"))  # a form with a token
    token = b.getForm(id="zasync-confirm").getControl(name="_authenticator").value
    b.post(url(site), f"action=prune&older_than={older_than}&_authenticator={token}")
    assert b.headers["status"].startswith("400"), b.headers["status"]
    transaction.begin()
    assert job.status == "completed-status"  # nothing removed


def test_actions_need_the_authenticator_and_a_post(site):
    job = service().queueJob(uijobs.fail_with, site["portal"], "stays")
    run(job)
    b = browser(site)
    b.raiseHttpErrors = False
    b.post(url(site, f"/{job.id}"), "action=retry")
    assert b.headers["status"].startswith("403")
    b.post(url(site, f"/{job.id}"), "action=retry&_authenticator=forged")
    assert b.headers["status"].startswith("403")
    b.post(url(site), "action=prune&older_than=0")
    assert b.headers["status"].startswith("403")
    # A GET that names an action only asks to confirm it.
    b.open(url(site, f"/{job.id}?action=retry&confirm=retry"))
    assert "Queue this failed job again?" in b.contents
    transaction.begin()
    assert job.failed and job.attempts == 1


def test_an_action_the_status_does_not_allow_says_so(site):
    job = service().queueJob(uijobs.echo, site["portal"], 1)
    run(job)
    b = browser(site)
    b.open(url(site, f"/{job.id}?confirm=remove"))  # a form with a token
    token = b.getControl(name="_authenticator").value
    b.post(url(site, f"/{job.id}"), f"action=cancel&_authenticator={token}")
    assert "Nothing done: job" in b.contents
    assert "only pending, scheduled or running jobs can be cancelled" in b.contents


def test_queues_in_their_own_database(multidb, monkeypatch):
    """With the queues in the ``async`` database, the panel finds its jobs
    there and acts on them."""
    monkeypatch.setattr(HTTPRequest, "retry_max_count", 3)
    job = service().queueJob(uijobs.fail_with, multidb["portal"], "in async")
    run(job)
    assert job._p_jar.db().database_name == "async"
    b = browser(multidb, SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
    b.open(url(multidb, "?status=failed"))
    assert f'data-job-id="{job.id}"' in b.contents
    b.open(url(multidb, f"/{job.id}?confirm=retry"))
    assert "RuntimeError: in async" in b.contents
    b.getControl("Retry").click()
    assert "is queued again" in b.contents
    assert wait_for_result(job, WAIT).getErrorMessage() == "in async"


def test_uninstall_removes_the_configlet(site):
    portal = site["portal"]
    portal.portal_setup.runAllImportStepsFromProfile("profile-zasync.plone:uninstall")
    actions = [action.id for action in portal.portal_controlpanel.listActions()]
    assert "zasync-jobs" not in actions
