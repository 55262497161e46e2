"""Periodic jobs in Plone: schedules that an add-on declares in its
profile's ``zasync.xml``, run in the site as the named user, removed when
the add-on is uninstalled; and the REST API ``@async-schedules``.

The add-on is zasync.plone.tests.addon (its profiles ``default``,
``uninstall``, ``remove`` and ``broken``), installed through Plone's own
installer in a real site.
"""

from __future__ import annotations

import datetime
import json
import re
import unittest
from zoneinfo import ZoneInfo

import pytest
import transaction
from plone.app.testing import (
    SITE_OWNER_NAME,
    SITE_OWNER_PASSWORD,
    TEST_USER_ID,
    TEST_USER_NAME,
    TEST_USER_PASSWORD,
    applyProfile,
    login,
)
from plone.base.utils import get_installer
from plone.testing.zope import Browser
from tests.plone.helpers import WAIT
from tests.plone.test_restapi import (
    DOCS,
    SCHEDULES,
    http_blocks,
    matches,
    split_message,
)
from zope.component import getGlobalSiteManager
from zope.configuration import xmlconfig
from zope.configuration.exceptions import ConfigurationError
from zope.pytestlayer import fixture
from ZPublisher.HTTPRequest import HTTPRequest

import zasync.plone
from zasync.plone import exportimport, schedules
from zasync.plone.interfaces import IJobFailure, IJobSuccess, UserNotFoundError
from zasync.plone.runner import run_as_user
from zasync.plone.schedules import Declaration, ScheduleError, ScheduleOrigin
from zasync.plone.tests.addon import jobs as addon_jobs
from zasync.plone.tests.addon.testing import (
    ADDON,
    SCHEDULES_FUNCTIONAL_TESTING,
    SCHEDULES_INTEGRATION_TESTING,
)
from zasync.queue import Queue
from zasync.schedules import ScheduleError as CoreScheduleError
from zasync.testing import wait_for_result, wait_until


class TestIntegrationLayer(unittest.TestCase):
    """The integration layer, as a TestCase: zope.pytestlayer then makes its
    fixtures for the whole session, which the test functions here ask for
    and on which tests/plone/test_browser_schedules.py's layer builds."""

    layer = SCHEDULES_INTEGRATION_TESTING

    def test_the_addon_is_known_not_installed(self):
        installer = get_installer(self.layer["portal"])
        assert installer.is_product_installable(ADDON)
        assert not installer.is_product_installed(ADDON)


class TestFunctionalLayer(unittest.TestCase):
    """The functional layer, as a TestCase (see TestIntegrationLayer)."""

    layer = SCHEDULES_FUNCTIONAL_TESTING

    def test_a_worker_serves_the_test_database(self):
        assert self.layer["dispatcher"].db is self.layer["zodbDB"]


@pytest.fixture
def site(request):
    """The integration layer's site, with the add-on's profiles known (not
    installed)."""
    name = fixture.LAYERS[SCHEDULES_INTEGRATION_TESTING]["function"]
    return request.getfixturevalue(name)["portal"]


@pytest.fixture
def working(request):
    """The functional layer (a worker on the test's own database)."""
    return request.getfixturevalue(
        fixture.LAYERS[SCHEDULES_FUNCTIONAL_TESTING]["function"]
    )


def install(portal):
    assert get_installer(portal).install_product(ADDON)


def uninstall(portal):
    assert get_installer(portal).uninstall_product(ADDON)


def queue(portal, name=""):
    return schedules.get_queues(portal._p_jar)[name]


def names(portal):
    return sorted(s.name for _, s in schedules.site_schedules(portal))


# -- declaring in a profile ------------------------------------------------------


def test_install_declares_the_schedules_of_zasync_xml(site):
    assert names(site) == []
    install(site)
    assert names(site) == ["addon-touch", "addon-whoami"]
    whoami = queue(site).schedules["addon-whoami"]
    assert whoami.cron == "0 3 * * *"
    assert whoami.timezone == "Europe/Amsterdam"
    assert whoami.every is None and whoami.missed == "once"
    assert whoami.description == "Says who runs it, every night at 3"
    assert whoami.quota_names == ("default",) and not whoami.paused
    assert whoami.func is run_as_user
    assert schedules.function_name(whoami) == "zasync.plone.tests.addon.jobs.whoami"
    origin = schedules.origin_of(whoami)
    assert isinstance(origin, ScheduleOrigin)
    assert origin.profile == f"{ADDON}:default"
    assert origin.site_path == site.getPhysicalPath()
    assert origin.context_path == (*site.getPhysicalPath(), "test-folder")
    assert origin.user_id == TEST_USER_ID
    assert origin.user_folder_path == site.acl_users.getPhysicalPath()
    # A Zope root user (admin) is found in the root's user folder.
    touch = queue(site).schedules["addon-touch"]
    assert touch.every == datetime.timedelta(hours=1) and touch.cron is None
    assert schedules.origin_of(touch).user_folder_path == ("", "acl_users")
    assert schedules.origin_of(touch).user_id == SITE_OWNER_NAME
    assert touch.next_run > datetime.datetime.now(datetime.UTC)


def test_importing_again_changes_nothing_and_keeps_a_pause(site):
    install(site)
    before = dict(queue(site).schedules.items())
    before["addon-whoami"].pause()
    setup = site.portal_setup
    result = setup.runAllImportStepsFromProfile(f"profile-{ADDON}:default")
    message = result["messages"]["zasync-schedules"]
    assert "unchanged: addon-whoami, addon-touch" in message
    after = dict(queue(site).schedules.items())
    assert sorted(after) == sorted(before)
    for name, schedule in after.items():
        assert schedule is before[name]
    assert after["addon-whoami"].paused


def test_a_changed_declaration_updates_the_schedule_and_keeps_a_pause(site):
    install(site)
    queue(site).schedules["addon-whoami"].pause()
    changed = Declaration(
        name="addon-whoami",
        function="zasync.plone.tests.addon.jobs.touch",
        user="admin",
        cron="30 4 * * 1",
        timezone="UTC",
        description="Now on Mondays",
    )
    profile = f"{ADDON}:default"
    assert schedules.declare(site, changed, profile=profile) == "updated"
    assert names(site) == ["addon-touch", "addon-whoami"]
    updated = queue(site).schedules["addon-whoami"]
    assert updated.cron == "30 4 * * 1" and updated.paused
    assert schedules.function_name(updated) == "zasync.plone.tests.addon.jobs.touch"
    assert schedules.origin_of(updated).user_id == SITE_OWNER_NAME
    assert schedules.declare(site, changed, profile=profile) == "unchanged"


def test_uninstall_removes_the_addon_schedules_and_no_other(site):
    install(site)
    mine = Declaration(
        name="mine",
        function="zasync.plone.tests.addon.jobs.touch",
        user="admin",
        every=datetime.timedelta(minutes=5),
    )
    assert schedules.declare(site, mine) == "created"
    uninstall(site)
    assert names(site) == ["mine"]
    # Installing again declares them again.
    install(site)
    assert names(site) == ["addon-touch", "addon-whoami", "mine"]


def test_remove_true_removes_a_schedule(site):
    install(site)
    setup = site.portal_setup
    result = setup.runAllImportStepsFromProfile(f"profile-{ADDON}:remove")
    assert "removed: addon-touch" in result["messages"]["zasync-schedules"]
    assert names(site) == ["addon-whoami"]


def test_a_mistake_in_zasync_xml_names_the_file_the_schedule_and_the_fix(site):
    setup = site.portal_setup
    with pytest.raises(ScheduleError) as raised:
        setup.runAllImportStepsFromProfile(f"profile-{ADDON}:broken")
    message = str(raised.value)
    assert message.startswith(f"{ADDON}:broken/zasync.xml, schedule 1 ('addon-broken')")
    assert 'give either cron="0 3 * * *"' in message and "not both" in message
    assert names(site) == []


def one(attributes):
    """A zasync.xml text of one schedule with these attributes."""
    return f"<schedules><schedule {attributes}/></schedules>"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<schedules>", "is not well-formed XML"),
        ("<schedule/>", "the root element is <schedule>; write <schedules>"),
        ("<schedules><job/></schedules>", "schedule 1: unknown element <job>"),
        ("<schedules><schedule/></schedules>", 'a schedule needs a name, e.g. name="'),
        (
            one('name="a" function="f" user="u" every="1" color="red"'),
            "schedule 1 ('a'): unknown attribute 'color'; a schedule takes name, ",
        ),
        (
            one('name="a" user="u" every="1"'),
            "the attribute 'function' is missing; name the function to run",
        ),
        (
            one('name="a" function="f" every="1"'),
            "the attribute 'user' is missing; name the user",
        ),
        (
            one('name="a" function="f" user="u"'),
            "not neither",
        ),
        (
            one('name="a" function="f" user="u" every="soon"'),
            "every='soon': give a period above zero in seconds",
        ),
        (
            one('name="a" function="f" user="u" every="0"'),
            "every='0': give a period above zero",
        ),
        (
            one('name="a" function="f" user="u" every="1" paused="maybe"'),
            'paused=\'maybe\': write paused="true" or "false"',
        ),
        (
            '<schedules><schedule name="a" function="f" user="u" every="1"/>'
            '<schedule name="a" function="f" user="u" every="2"/></schedules>',
            "schedule 'a' is declared twice",
        ),
    ],
)
def test_parse_refuses_mistakes(text, expected):
    with pytest.raises(ScheduleError) as raised:
        exportimport.parse(text, where="my.addon:default/zasync.xml")
    assert str(raised.value).startswith("my.addon:default/zasync.xml")
    assert expected in str(raised.value)


def test_parse_reads_periods_flags_and_removals():
    (every, removal) = exportimport.parse(
        '<schedules><schedule name="a" function="m.f" user="u" every="1.5h"'
        ' paused="yes" quotas="" queue="q" description="  two\n words "/>'
        '<schedule name="b" remove="true"/></schedules>'
    )
    declaration = every.declaration
    assert declaration.every == datetime.timedelta(minutes=90)
    assert declaration.paused and declaration.quota_names == ()
    assert declaration.queue == "q" and declaration.description == "two words"
    assert declaration.context == "/" and declaration.timezone == "UTC"
    assert removal.remove and removal.name == "b" and removal.declaration is None


def declaration(**changes):
    values = {
        "name": "nightly",
        "function": "zasync.plone.tests.addon.jobs.whoami",
        "user": "admin",
        "cron": "0 3 * * *",
    }
    values.update(changes)
    return Declaration(**values)


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"function": "no.such.module.func"},
            "'no.such.module.func' cannot be imported",
        ),
        (
            {"function": "zasync.plone.tests.addon.jobs.nothing"},
            "module zasync.plone.tests.addon.jobs has no nothing; check the spelling",
        ),
        ({"function": "zasync.plone.tests.addon.jobs"}, "cannot be imported: give the"),
        ({"user": "nobody-here"}, "user 'nobody-here' exists neither in the site's"),
        (
            {"context": "/no/such/folder"},
            "context '/no/such/folder' is not in the site",
        ),
        ({"queue": "nightly"}, "there is no queue 'nightly' (queues: ['']); add it"),
        ({"cron": "61 * * * *"}, "nightly"),
        ({"timezone": "Europe/Amsterdan"}, "did you mean 'Europe/Amsterdam'"),
        ({"missed": "sometimes"}, "missed='sometimes' is not a policy"),
        ({"quota_names": ("big",)}, "names quota 'big', which queue '' does not have"),
    ],
)
def test_declare_refuses_mistakes(site, changes, expected):
    with pytest.raises(CoreScheduleError) as raised:
        schedules.declare(site, declaration(**changes))
    assert expected in str(raised.value)
    assert names(site) == []


def test_a_name_in_use_by_another_site_or_without_plone_is_refused(site):
    other = ScheduleOrigin(
        database="", site_path=("", "other"), context_path=("", "other")
    )
    queue(site).schedules.add(
        "nightly", run_as_user, other, addon_jobs.whoami, cron="0 3 * * *"
    )
    queue(site).schedules.add("plain", addon_jobs.whoami, None, every=60)
    with pytest.raises(ScheduleError, match="for the site /other .*another name"):
        schedules.declare(site, declaration())
    with pytest.raises(ScheduleError, match="made without zasync.plone"):
        schedules.declare(site, declaration(name="plain"))
    assert names(site) == []
    assert not schedules.remove(site, "nightly")  # not this site's


def test_another_package_cannot_take_over_a_declared_schedule(site):
    install(site)
    taken = declaration(name="addon-touch")
    with pytest.raises(ScheduleError, match=f"the profile {ADDON}:default declared"):
        schedules.declare(site, taken, profile="other.addon:default")


def test_anonymous_runs(site):
    assert schedules.declare(site, declaration(user="anonymous")) == "created"
    origin = schedules.origin_of(queue(site).schedules["nightly"])
    assert origin.user_id is None and origin.user_folder_path is None


def test_a_schedule_declared_in_zcml_comes_with_its_profile(site):
    install(site)
    setup = site.portal_setup
    result = setup.runAllImportStepsFromProfile(f"profile-{ADDON}:zcml")
    assert "created: addon-zcml" in result["messages"]["zasync-schedules"]
    declared = queue(site).schedules["addon-zcml"]
    assert declared.every == datetime.timedelta(minutes=30)
    assert declared.description == "Declared in ZCML"
    assert schedules.function_name(declared) == "zasync.plone.tests.addon.jobs.whoami"
    assert schedules.profile_of(declared) == f"{ADDON}:zcml"
    again = setup.runAllImportStepsFromProfile(f"profile-{ADDON}:zcml")
    assert "unchanged: addon-zcml" in again["messages"]["zasync-schedules"]
    uninstall(site)
    assert names(site) == []


def test_a_name_in_zasync_xml_and_in_zcml_is_refused(site):
    (twin,) = exportimport.parse(
        one('name="addon-touch" function="m.f" user="u" every="1"')
    )
    exportimport.add_directive(f"{ADDON}:default", twin)
    try:
        with pytest.raises(ScheduleError) as raised:
            install(site)
    finally:
        exportimport._directives.pop(f"{ADDON}:default")
    assert str(raised.value) == (
        f"{ADDON}:default/zasync.xml: schedule 'addon-touch' is declared there "
        f"and by a zasync:schedule directive for {ADDON}:default: keep one of them"
    )


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ('cron="0 3 * * *" every="1h"', 'or every="15m" (a period), not both'),
        ('every="1h" colour="red"', "colour"),
        ('every="1h" paused="maybe"', "Invalid value for 'paused'"),
        ('every="never"', "every='never': give a period above zero"),
    ],
)
def test_zcml_mistakes_are_reported_where_the_zcml_loads(attributes, expected):
    context = xmlconfig.file("meta.zcml", package=zasync.plone, execute=False)
    text = (
        '<configure xmlns="http://namespaces.zope.org/zasync">'
        '<schedule profile="my.addon:default" name="x" user="admin" '
        f'function="zasync.plone.tests.addon.jobs.whoami" {attributes} />'
        "</configure>"
    )
    with pytest.raises(ConfigurationError) as raised:
        xmlconfig.string(text, context=context, execute=False)
    assert expected in str(raised.value)


def test_zcml_needs_a_profile_id():
    context = xmlconfig.file("meta.zcml", package=zasync.plone, execute=False)
    text = (
        '<configure xmlns="http://namespaces.zope.org/zasync">'
        '<schedule profile="my.addon" name="x" user="admin" every="1h" '
        'function="zasync.plone.tests.addon.jobs.whoami" />'
        "</configure>"
    )
    with pytest.raises(ConfigurationError, match="e.g. profile='my.addon:default'"):
        xmlconfig.string(text, context=context, execute=False)


def test_deleting_the_site_removes_its_schedules_only(site):
    install(site)
    other = ScheduleOrigin(
        database="", site_path=("", "other"), context_path=("", "other")
    )
    queue(site).schedules.add(
        "foreign", run_as_user, other, addon_jobs.whoami, cron="0 3 * * *"
    )
    app = site.getPhysicalRoot()
    login(app, SITE_OWNER_NAME)
    queues = schedules.get_queues(site._p_jar)
    app.manage_delObjects(["plone"])
    assert sorted(queues[""].schedules) == ["foreign"]


# -- running -----------------------------------------------------------------------


def test_each_run_runs_as_the_named_user_on_the_context(working):
    portal = working["portal"]
    install(portal)
    transaction.commit()
    whoami = queue(portal).schedules["addon-whoami"]
    job = whoami.run_now()
    transaction.commit()
    assert wait_for_result(job, WAIT) == {
        "user": TEST_USER_ID,
        "context": "/plone/test-folder",
        "may_manage_site": False,
    }
    touch = queue(portal).schedules["addon-touch"].run_now()
    transaction.commit()
    assert wait_for_result(touch, WAIT) == "touched plone 1 times"
    transaction.begin()
    assert portal.zasync_touched == 1


def test_a_slot_fired_by_the_worker_runs_as_the_user(working):
    portal = working["portal"]
    every = Declaration(
        name="often",
        function="zasync.plone.tests.addon.jobs.whoami",
        user=TEST_USER_ID,
        every=datetime.timedelta(seconds=1),
    )
    schedules.declare(portal, every)
    transaction.commit()
    schedule = queue(portal).schedules["often"]

    def fired():
        transaction.begin()
        return schedule.last_job is not None

    wait_until(fired, timeout=WAIT, message="the worker fired no slot")
    result = wait_for_result(schedule.last_job, WAIT)
    assert result["user"] == TEST_USER_ID and result["context"] == "/plone"


def test_a_run_as_a_user_deleted_since_fails_saying_so(working):
    portal = working["portal"]
    portal.acl_users.userFolderAddUser("robot", "secret-robot", ["Member"], [])
    schedules.declare(portal, declaration(user="robot"))
    portal.acl_users.userFolderDelUsers(["robot"])
    job = queue(portal).schedules["nightly"].run_now()
    transaction.commit()
    failure = wait_for_result(job, WAIT)
    assert failure.check(UserNotFoundError)
    assert "user 'robot', who queued this job, no longer exists" in str(failure.value)


def test_runs_notify_job_success_and_job_failure(working):
    portal = working["portal"]
    heard = []

    def handler(event):
        heard.append((type(event).__name__, event.job.id))

    gsm = getGlobalSiteManager()
    for event in (IJobSuccess, IJobFailure):
        gsm.registerHandler(handler, (event,))
    try:
        schedules.declare(portal, declaration(name="works", user="admin"))
        portal.acl_users.userFolderAddUser("robot", "secret-robot", ["Member"], [])
        schedules.declare(portal, declaration(name="fails", user="robot"))
        portal.acl_users.userFolderDelUsers(["robot"])
        works = queue(portal).schedules["works"].run_now()
        transaction.commit()
        wait_for_result(works, WAIT)
        fails = queue(portal).schedules["fails"].run_now()
        transaction.commit()
        wait_for_result(fails, WAIT)
    finally:
        for event in (IJobSuccess, IJobFailure):
            gsm.unregisterHandler(handler, (event,))
    assert heard == [("JobSuccess", works.id), ("JobFailure", fails.id)]


# -- REST: @async-schedules ----------------------------------------------------------

SITE_ADMIN = "siteadmin"
SITE_ADMIN_PASSWORD = "secret-siteadmin"
BASE = "http://localhost:8080/plone"


@pytest.fixture
def rest(working, monkeypatch):
    """The functional layer's site with plone.restapi and the add-on
    installed, and a Site Administrator ``siteadmin``. The publisher
    retries a request that conflicts with the worker's commits, as Zope
    does by default."""
    monkeypatch.setattr(HTTPRequest, "retry_max_count", 3)
    portal = working["portal"]
    applyProfile(portal, "plone.restapi:default")
    portal.acl_users.userFolderAddUser(
        SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
    )
    install(portal)
    transaction.commit()
    return working


def client(layer, user=SITE_ADMIN, password=SITE_ADMIN_PASSWORD):
    """A WebTest app on the layer's Zope, as ``user`` (None: anonymous)."""
    app = Browser(layer["app"]).testapp
    if user is not None:
        app.set_authorization(("Basic", (user, password)))
    return app


def call(app, method, path, **kw):
    kw.setdefault("headers", {"Accept": "application/json"})
    return getattr(app, method.lower())(f"{BASE}/{path}", expect_errors=True, **kw)


def test_rest_lists_and_describes_the_site_schedules(rest):
    app = client(rest)
    listing = call(app, "GET", "@async-schedules")
    assert listing.status_int == 200
    assert listing.json["@id"] == f"{BASE}/@async-schedules"
    items = {item["name"]: item for item in listing.json["items"]}
    assert sorted(items) == ["addon-touch", "addon-whoami"]
    whoami = items["addon-whoami"]
    assert whoami["@id"] == f"{BASE}/@async-schedules/addon-whoami"
    assert whoami["callable"] == "zasync.plone.tests.addon.jobs.whoami"
    assert whoami["user"] == TEST_USER_ID and whoami["context"] == "/plone/test-folder"
    assert whoami["cron"] == "0 3 * * *" and whoami["every"] is None
    assert whoami["timezone"] == "Europe/Amsterdam" and whoami["profile"] == (
        f"{ADDON}:default"
    )
    assert whoami["paused"] is False and whoami["last_job"] is None
    assert whoami["last_run"] is None and whoami["last_status"] is None
    next_run = datetime.datetime.fromisoformat(whoami["next_run"])
    assert next_run.astimezone(ZoneInfo("Europe/Amsterdam")).hour == 3
    assert items["addon-touch"]["every"] == 3600.0
    one = call(app, "GET", "@async-schedules/addon-touch")
    assert one.json == items["addon-touch"]


def test_rest_pause_resume_and_run_now(rest):
    app = client(rest)
    paused = call(app, "POST", "@async-schedules/addon-touch/pause")
    assert paused.status_int == 200 and paused.json["paused"] is True
    transaction.begin()
    assert queue(rest["portal"]).schedules["addon-touch"].paused
    resumed = call(app, "POST", "@async-schedules/addon-touch/resume")
    assert resumed.json["paused"] is False
    ran = call(app, "POST", "@async-schedules/addon-touch/run-now")
    assert ran.status_int == 200
    job_id = ran.json["job"]["id"]
    assert ran.json["job"]["@id"] == f"{BASE}/@async-jobs/{job_id}"

    def finished():
        job = call(app, "GET", f"@async-jobs/{job_id}").json
        return job if job["kind"] == "completed" else None

    job = wait_until(finished, timeout=WAIT, message="the run-now job did not complete")
    assert job["callable"] == "zasync.plone.tests.addon.jobs.touch"
    assert job["user"] == SITE_OWNER_NAME
    assert re.fullmatch(r"'touched plone \d+ times'", job["result"])


def test_rest_last_run_links_to_its_job(rest):
    portal = rest["portal"]
    every = Declaration(
        name="often",
        function="zasync.plone.tests.addon.jobs.whoami",
        user="admin",
        every=datetime.timedelta(seconds=1),
    )
    schedules.declare(portal, every)
    transaction.commit()
    app = client(rest)

    def ran():
        item = call(app, "GET", "@async-schedules/often").json
        return item if item["last_status"] == "completed" else None

    item = wait_until(ran, timeout=WAIT, message="no slot of 'often' completed")
    assert item["last_job"]["@id"] == f"{BASE}/@async-jobs/{item['last_job']['id']}"
    assert item["last_run"] is not None


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "@async-schedules"),
        ("GET", "@async-schedules/addon-touch"),
        ("POST", "@async-schedules/addon-touch/pause"),
        ("POST", "@async-schedules/addon-touch/run-now"),
    ],
)
def test_rest_refuses_anonymous_and_members(rest, method, path):
    for who in ((None, None), (TEST_USER_NAME, TEST_USER_PASSWORD)):
        response = call(client(rest, *who), method, path)
        assert response.status_int in (401, 403), (who, response.status)
        assert response.json["type"] == "Unauthorized"
    transaction.begin()
    assert not queue(rest["portal"]).schedules["addon-touch"].paused


def test_rest_refuses_bad_requests(rest):
    app = client(rest)
    unknown = call(app, "GET", "@async-schedules/nothing")
    assert unknown.status_int == 404 and unknown.json["type"] == "NotFound"
    action = call(app, "POST", "@async-schedules/addon-touch/explode")
    assert action.status_int == 400
    assert action.json["message"] == (
        "unknown action 'explode': use pause, resume, run-now"
    )
    assert call(app, "POST", "@async-schedules/addon-touch").status_int == 404
    assert call(app, "GET", "@async-schedules/addon-touch/pause").status_int == 404
    wrong_queue = call(app, "GET", "@async-schedules/addon-touch?queue=other")
    assert wrong_queue.status_int == 404


def test_rest_a_name_in_two_queues_takes_the_queue(rest):
    portal = rest["portal"]
    queues = schedules.get_queues(portal._p_jar)
    queues["other"] = Queue()
    queues["other"].quotas.create("default", size=1)
    schedules.declare(portal, declaration(name="addon-touch", queue="other"))
    transaction.commit()
    app = client(rest)
    ambiguous = call(app, "GET", "@async-schedules/addon-touch")
    assert ambiguous.status_int == 400
    assert "say which with queue=<name>" in ambiguous.json["message"]
    other = call(app, "POST", "@async-schedules/addon-touch/pause?queue=other")
    assert other.status_int == 200
    assert other.json["@id"] == f"{BASE}/@async-schedules/addon-touch?queue=other"
    transaction.begin()
    assert queues["other"].schedules["addon-touch"].paused
    assert not queues[""].schedules["addon-touch"].paused


def test_rest_hides_other_sites_schedules_from_site_administrators(rest):
    portal = rest["portal"]
    other = ScheduleOrigin(
        database="", site_path=("", "other"), context_path=("", "other")
    )
    queue(portal).schedules.add(
        "foreign", run_as_user, other, addon_jobs.whoami, cron="0 3 * * *"
    )
    transaction.commit()
    app = client(rest)
    names_seen = [i["name"] for i in call(app, "GET", "@async-schedules").json["items"]]
    assert "foreign" not in names_seen
    assert call(app, "GET", "@async-schedules/foreign").status_int == 404
    assert call(app, "POST", "@async-schedules/foreign/pause").status_int == 404
    # A Manager of the Zope application sees every schedule of the database.
    owner = client(rest, SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
    seen = call(owner, "GET", "@async-schedules/foreign").json
    assert seen["site"] == "/other" and seen["user"] == "anonymous"


# -- the control panel's Schedules tab -----------------------------------------------


def text(element):
    return " ".join(element.get_text(" ").split())


def schedule_form(page, name, action):
    """The form of the button ``action`` in the row of schedule ``name``."""
    for form in page.forms.values():
        fields = form.fields
        if "name" in fields and fields["name"][0].value == name:
            if fields["action"][0].value_if_submitted() == action:
                return form
    raise AssertionError(f"no {action} button for {name}")


def test_the_tab_lists_the_schedules_and_acts_by_post(rest):
    app = client(rest)
    overview = app.get(f"{BASE}/@@async-jobs")
    assert f'href="{BASE}/@@async-schedules"' in overview.text
    page = app.get(f"{BASE}/@@async-schedules")
    rows = page.html.select("#zasync-schedule-list tbody tr")
    assert [row["data-zasync-schedule"] for row in rows] == [
        "addon-touch",
        "addon-whoami",
    ]
    whoami = text(rows[1])
    assert "Says who runs it, every night at 3" in whoami
    assert (
        "zasync.plone.tests.addon.jobs.whoami as test_user_1_ on /plone/test-folder"
        in whoami
    )
    assert "0 3 * * *" in whoami and "Europe/Amsterdam" in whoami and "never" in whoami
    assert re.search(r"in (\d+ h \d+ min|\d+ min \d+ s)", whoami)
    assert re.search(r"\d{4}-\d\d-\d\d 03:00:00 CE", whoami)
    assert "Every hour" in text(rows[0])

    done = schedule_form(page, "addon-touch", "pause").submit("action", value="pause")
    assert done.status_int == 303 and done.location == f"{BASE}/@@async-schedules"
    transaction.begin()
    assert queue(rest["portal"]).schedules["addon-touch"].paused
    page = done.follow()
    assert "Schedule addon-touch is paused" in page.text
    row = page.html.select_one('tr[data-zasync-schedule="addon-touch"]')
    assert row.select_one("[data-zasync-paused]") is not None
    schedule_form(page, "addon-touch", "resume").submit("action", value="resume")
    transaction.begin()
    assert not queue(rest["portal"]).schedules["addon-touch"].paused

    page = app.get(f"{BASE}/@@async-schedules")
    ran = schedule_form(page, "addon-whoami", "run-now").submit(
        "action", value="run-now"
    )
    assert ran.status_int == 303 and "/@@async-jobs/" in ran.location
    job_id = ran.location.rsplit("/", 1)[1]
    assert f"job {job_id} is queued" in ran.follow().text


def test_the_tab_refuses_get_forged_and_unauthorized_actions(rest):
    app = client(rest)
    got = app.get(
        f"{BASE}/@@async-schedules?action=pause&name=addon-touch", expect_errors=True
    )
    assert got.status_int == 400
    forged = app.post(
        f"{BASE}/@@async-schedules",
        {"action": "pause", "name": "addon-touch", "queue": ""},
        expect_errors=True,
    )
    assert forged.status_int == 403
    page = app.get(f"{BASE}/@@async-schedules")
    form = schedule_form(page, "addon-touch", "pause")
    form["name"] = "nothing"
    assert form.submit("action", value="pause", expect_errors=True).status_int == 404
    transaction.begin()
    assert not queue(rest["portal"]).schedules["addon-touch"].paused
    member = client(rest, TEST_USER_NAME, TEST_USER_PASSWORD)
    refused = member.get(f"{BASE}/@@async-schedules", expect_errors=True)
    assert refused.status_int in (401, 403) or "require_login" in refused.location


def test_restapi_documentation_of_schedules(rest):
    """Every request of docs/restapi.md's section on schedules gets the
    documented response."""
    path = DOCS / "restapi.md"
    section = path.read_text(encoding="utf-8").split(SCHEDULES)[1]
    blocks = http_blocks(section)
    assert len(blocks) >= 2 and len(blocks) % 2 == 0, "requests and responses pair"
    app = Browser(rest["app"]).testapp
    for (_, request), (_, response) in zip(blocks[::2], blocks[1::2], strict=True):
        first, headers, body = split_message(request)
        method, target, _version = first.split()
        reply = app.request(
            f"http://{headers.pop('Host')}{target}",
            method=method,
            headers=headers,
            body=body.encode() if body else b"",
            expect_errors=True,
        )
        status_line, expected_headers, expected_body = split_message(response)
        where = f"{path.name}: {method} {target}"
        assert reply.status == status_line.split(" ", 1)[1], f"{where}: {reply.text}"
        for name, value in expected_headers.items():
            assert reply.headers.get(name) == value, f"{where}: {name}"
        matches(json.loads(expected_body), reply.json, where)
