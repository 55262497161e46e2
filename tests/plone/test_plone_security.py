"""A Plone job runs as the user who queued it, with the roles that user has
when the job runs; anonymous jobs run as anonymous; a user, context or site
gone since fails the job with a message naming it."""

from __future__ import annotations

import transaction
from plone.app.testing import (
    SITE_OWNER_NAME,
    TEST_USER_ID,
    TEST_USER_NAME,
    login,
    logout,
    setRoles,
)
from plone.testing import zope as zope_testing
from tests.plone.helpers import run, service

from plone import api
from zasync import Job
from zasync.plone.interfaces import (
    ContextNotFoundError,
    SiteNotFoundError,
    UserNotFoundError,
)
from zasync.plone.runner import JobOrigin, run_as_user
from zasync.plone.tests import jobs


def test_job_runs_as_the_user_who_queued_it_and_owns_what_it_creates(functional):
    folder = functional["test-folder"]
    who = service().queueJob(jobs.whoami, folder)
    created = service().queueJob(jobs.create_document, folder, "Annual report")
    assert run(who) == {
        "user_id": TEST_USER_ID,
        "user_name": TEST_USER_NAME,
        "anonymous": False,
        "roles_here": ["Authenticated", "Contributor", "Member"],
        "site": "plone",
        "context": "/plone/test-folder",
    }
    doc = folder[run(created)]
    assert doc.getOwner().getId() == TEST_USER_ID
    assert doc.listCreators() == (TEST_USER_ID,)
    assert api.content.get_state(doc) == "private"  # simple_publication_workflow


def test_the_same_job_in_the_portal_root_fails_unauthorized(functional):
    portal = functional["portal"]
    job = service().queueJob(jobs.create_document, portal, "Not here")
    failure = run(job)
    assert job.failed
    assert "Unauthorized" in failure.type_name
    assert "not-here" not in portal.objectIds()


def test_roles_are_those_the_user_has_when_the_job_runs(functional):
    portal = functional["portal"]
    job = service().queueJob(jobs.create_document, portal, "Granted later")
    # Granted after queuing, before the job runs: the job has the role.
    setRoles(portal, TEST_USER_ID, ["Member", "Contributor"])
    assert run(job) == "granted-later"
    assert portal["granted-later"].getOwner().getId() == TEST_USER_ID


def test_anonymous_jobs_run_as_anonymous(functional):
    folder = functional["test-folder"]
    logout()
    who = service().queueJob(jobs.whoami, folder)
    create = service().queueJob(jobs.create_document, folder, "Anonymous")
    result = run(who)
    assert result["anonymous"] is True
    assert result["user_name"] == "Anonymous User"
    assert "Unauthorized" in run(create).type_name


def test_a_user_of_the_zope_root_is_found_in_the_root_user_folder(functional):
    zope_testing.login(functional["app"]["acl_users"], SITE_OWNER_NAME)
    job = service().queueJob(jobs.whoami, functional["portal"])
    origin = job.args[0]
    assert origin.user_folder_path == ("", "acl_users")
    result = run(job)
    assert result["user_id"] == SITE_OWNER_NAME
    assert "Manager" in result["roles_here"]


def test_a_user_deleted_since_fails_the_job_naming_the_user(functional):
    portal, folder = functional["portal"], functional["test-folder"]
    setRoles(portal, TEST_USER_ID, ["Manager"])
    api.user.create(email="gone@example.com", username="gone", password="s3cr3t!pw")
    setRoles(portal, TEST_USER_ID, ["Member"])
    folder.manage_setLocalRoles("gone", ["Contributor"])
    transaction.commit()
    login(portal, "gone")
    job = service().queueJob(jobs.create_document, folder, "Orphan")
    login(portal, TEST_USER_NAME)
    portal.acl_users.source_users.removeUser("gone")
    failure = run(job)
    assert failure.check(UserNotFoundError)
    assert "'gone'" in failure.getErrorMessage()
    assert "/plone/acl_users" in failure.getErrorMessage()
    assert "orphan" not in folder.objectIds()


def test_a_context_deleted_since_fails_the_job_naming_its_path(functional):
    folder = functional["test-folder"]
    setRoles(functional["portal"], TEST_USER_ID, ["Manager"])
    doc = api.content.create(container=folder, type="Document", id="doomed")
    job = service().queueJob(jobs.whoami, doc)
    api.content.delete(doc)
    # A namesake further up must not be taken for it (acquisition).
    api.content.create(container=functional["portal"], type="Document", id="doomed")
    failure = run(job)
    assert failure.check(ContextNotFoundError)
    assert "/plone/test-folder/doomed" in failure.getErrorMessage()


def test_a_site_gone_fails_the_job_naming_its_path(functional):
    origin = JobOrigin(
        database=functional["portal"]._p_jar.db().database_name,
        site_path=("", "no-such-site"),
        context_path=("", "no-such-site", "folder"),
    )
    queue = service().getQueues()[""]
    job = queue.put(Job(run_as_user, origin, jobs.whoami))
    failure = run(job)
    assert failure.check(SiteNotFoundError)
    assert "/no-such-site" in failure.getErrorMessage()
