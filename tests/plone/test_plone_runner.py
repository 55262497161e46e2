"""The environment of a Plone job (request, URLs, views, browser layers,
plone.api) and its transaction: the function's writes, the result and the
status commit together, so a conflict never repeats side effects."""

from __future__ import annotations

import uuid

import pytest
import transaction
from AccessControl import getSecurityManager
from plone.app.testing import TEST_USER_ID
from tests.plone.helpers import run, service
from zope.component.hooks import getSite
from zope.globalrequest import getRequest

from plone import api
from zasync.plone.request import check_public_url
from zasync.plone.tests import jobs


def test_the_request_gives_urls_views_browser_layers_and_plone_api(functional):
    job = service().queueJob(jobs.request_info, functional["test-folder"])
    assert run(job) == {
        "same_request": True,
        # the URL of the site in the request that queued the job
        "absolute_url": "http://nohost/plone/test-folder",
        "portal_url": "http://nohost/plone",
        "api_portal_url": "http://nohost/plone",
        "layer": True,  # the add-on's browser layer, from its profile
        "navigation_root": "/plone",
    }


@pytest.mark.parametrize(
    "public_url",
    ["https://www.example.com", "https://example.org:8443/intranet/"],
)
def test_the_public_url_in_the_registry_sets_up_virtual_hosting(functional, public_url):
    api.portal.set_registry_record("zasync.plone.public_url", public_url)
    job = service().queueJob(jobs.request_info, functional["test-folder"])
    info = run(job)
    base = public_url.rstrip("/")
    assert info["portal_url"] == base
    assert info["absolute_url"] == f"{base}/test-folder"
    assert info["navigation_root"] == "/plone"


def test_a_public_url_that_is_not_http_is_refused_with_an_example():
    with pytest.raises(ValueError, match="https://www.example.com"):
        check_public_url("www.example.com")


def test_a_conflict_is_retried_without_duplicated_content(functional):
    """plone.app.async committed the work apart from the job's status: when
    the status commit conflicted, the job ran again and created its content
    twice. Here the work and the status are one transaction."""
    folder = functional["test-folder"]
    token = uuid.uuid4().hex
    job = service().queueJob(jobs.create_with_conflict, folder, "Report", token)
    assert run(job) == "report"
    assert jobs.calls[token] == 2  # the first attempt conflicted
    transaction.begin()
    reports = [o for o in folder.objectValues() if o.Title() == "Report"]
    assert [o.getId() for o in reports] == ["report"]
    # the other transaction's write stands; the conflicting attempt's is gone
    assert folder.zasync_test_marker == f"{token}: changed meanwhile"
    catalog = api.portal.get_tool("portal_catalog")
    assert len(catalog.unrestrictedSearchResults(Title="Report")) == 1


def test_a_failing_job_commits_none_of_its_writes(functional):
    folder = functional["test-folder"]
    job = service().queueJob(jobs.write_then_fail, folder, "Half done")
    failure = run(job)
    assert failure.check(ValueError)
    assert "half-done" not in folder.objectIds()
    assert not api.content.find(context=folder, Title="Half done")


def test_the_catalog_is_updated_in_the_job_transaction(functional):
    folder = functional["test-folder"]
    job = service().queueJob(jobs.create_document, folder, "Indexed")
    assert run(job) == "indexed"
    brains = api.content.find(context=folder, id="indexed")
    assert [b.Creator for b in brains] == [TEST_USER_ID]


def test_calling_a_job_directly_restores_the_callers_environment(integration):
    """Outside a worker (here: called in the test), the job runs in the
    current site's connection and puts back site, request and user."""
    folder = integration["test-folder"]
    site, request = getSite(), getRequest()
    user = getSecurityManager().getUser()
    job = service().queueJob(jobs.whoami, folder)
    result = job()
    assert result["user_id"] == TEST_USER_ID
    assert getSite() is site
    assert getRequest() is request
    assert getSecurityManager().getUser() is user
