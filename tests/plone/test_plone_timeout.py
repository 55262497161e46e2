"""The registry's default timeout of the jobs the service queues
(``zasync.plone.default_timeout``, upgrade step 1001), and jobs that do
not check in a Plone site: interrupted, or abandoned with ``stuck_since``
shown by the REST API (issue #21)."""

from __future__ import annotations

import pytest
import transaction
from plone.app.testing import SITE_OWNER_NAME, SITE_OWNER_PASSWORD, applyProfile
from plone.base.utils import get_installer
from plone.registry.interfaces import IRegistry
from plone.testing.zope import Browser
from tests.plone import spinjobs
from tests.plone.helpers import WAIT, service
from zope.component import getUtility
from zope.schema.interfaces import TooSmall

from plone import api
from zasync.interfaces import JobTimeout
from zasync.plone.service import makeJob
from zasync.plone.testing import DISPATCHER_UUID, start_dispatcher
from zasync.stuck import stuck_since
from zasync.testing import wait_for_result, wait_until

RECORD = "zasync.plone.default_timeout"
PROFILE = "zasync.plone:default"


@pytest.fixture(autouse=True)
def _spinjobs():
    spinjobs.started.clear()
    spinjobs.release.clear()
    yield
    spinjobs.release.set()  # no worker thread stays blocked


def test_no_default_timeout_at_install(integration):
    assert api.portal.get_registry_record(RECORD) is None
    job = service().queueJob(spinjobs.spin, integration["portal"], "t", 0.1)
    assert job.timeout is None


def test_the_record_gives_the_service_jobs_their_timeout(integration):
    portal = integration["portal"]
    api.portal.set_registry_record(RECORD, 30.0)
    job = service().queueJob(spinjobs.spin, portal, "t", 0.1)
    assert job.timeout == 30.0
    batch = service().queueSerialJobs(
        makeJob(spinjobs.spin, portal, "a", 0.1),
        makeJob(spinjobs.spin, portal, "b", 0.1),
    )
    assert [member.timeout for member in batch.jobs] == [30.0, 30.0]


def test_the_record_refuses_a_timeout_under_a_second(integration):
    with pytest.raises(TooSmall):
        getUtility(IRegistry)[RECORD] = 0.5
    assert api.portal.get_registry_record(RECORD) is None


def test_the_upgrade_step_adds_the_record(integration):
    portal = integration["portal"]
    setup = portal.portal_setup
    registry = getUtility(IRegistry)
    del registry.records[RECORD]
    setup.setLastVersionForProfile(PROFILE, "1000")
    assert [step["dest"] for step in setup.listUpgrades(PROFILE)] == [("1001",)]
    setup.upgradeProfile(PROFILE)
    assert RECORD in registry.records
    assert registry[RECORD] is None
    assert setup.getLastVersionForProfile(PROFILE) == ("1001",)
    # The other records keep their values.
    assert api.portal.get_registry_record("zasync.plone.queues") == [""]


def quick_watchdog(layer):
    """Replace the layer's dispatcher by one that interrupts after 0.3 s
    and abandons 0.5 s later (stopped by the layer after the test)."""
    layer["dispatcher"].stop(10)
    layer["dispatcher"] = start_dispatcher(
        layer["queuesDB"], uuid=DISPATCHER_UUID, interrupt_grace=0.3, stuck_delay=0.5
    )


def test_a_plone_job_past_the_default_timeout_is_interrupted(functional):
    quick_watchdog(functional)
    api.portal.set_registry_record(RECORD, 1.0)
    job = service().queueJob(spinjobs.spin, functional["portal"], "spin")
    transaction.commit()
    failure = wait_for_result(job, WAIT)
    assert failure.check(JobTimeout)
    assert "ran past its timeout of 1 s and did not stop within 0.3 s" in (
        failure.getErrorMessage()
    )
    assert stuck_since(job) is None


def test_rest_and_the_control_panel_show_since_when_a_job_was_stuck(functional):
    quick_watchdog(functional)
    portal = functional["portal"]
    applyProfile(portal, "plone.restapi:default")
    api.portal.set_registry_record(RECORD, 1.0)
    job = service().queueJob(spinjobs.blocked, portal, "stuck")
    plain = service().queueJob(spinjobs.spin, portal, "plain", 0.01)
    transaction.commit()
    assert wait_for_result(job, WAIT).check(JobTimeout)
    # Its thread was replaced: the next job runs on the one-thread worker.
    assert wait_for_result(plain, WAIT) == "spun to the end"
    wait_until(lambda: functional["dispatcher"].pool.abandoned)
    app = Browser(functional["app"]).testapp
    app.set_authorization(("Basic", (SITE_OWNER_NAME, SITE_OWNER_PASSWORD)))
    base = portal.absolute_url()
    data = app.get(
        f"{base}/@async-jobs/{job.id}", headers={"Accept": "application/json"}
    ).json
    assert data["stuck_since"] == stuck_since(job).isoformat()
    assert "its worker thread was abandoned and replaced" in data["error"]
    other = app.get(
        f"{base}/@async-jobs/{plain.id}", headers={"Accept": "application/json"}
    ).json
    assert "stuck_since" not in other
    # The control panel's page of the job says it too.
    page = app.get(f"{base}/@@async-jobs/{job.id}").text
    assert "Stuck since" in page
    assert "its worker thread was abandoned and replaced" in page
    assert "Stuck since" not in app.get(f"{base}/@@async-jobs/{plain.id}").text


def test_uninstall_removes_the_record(integration):
    installer = get_installer(integration["portal"], integration["request"])
    installer.uninstall_product("zasync.plone")
    try:
        assert RECORD not in getUtility(IRegistry).records
    finally:
        installer.install_product("zasync.plone")
    assert RECORD in getUtility(IRegistry).records
