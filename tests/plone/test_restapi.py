"""The REST API of the jobs (``@async-jobs``, ``@async-workers``) on a real
Plone site with a worker, and the examples of docs/restapi.md, which run
here request by request against the same site.

Requests go through the Zope publisher in-process (WebTest), as a client's
would over HTTP; plone.restapi is installed in the site as in any Plone 6
site.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

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
    logout,
)
from plone.testing.zope import Browser
from tests.plone import uijobs
from tests.plone.helpers import WAIT, run, service
from ZPublisher.HTTPRequest import HTTPRequest

from zasync import Job
from zasync.interfaces import JobCancelled
from zasync.plone.tests import funcs
from zasync.testing import wait_for_result, wait_until

SITE_ADMIN = "siteadmin"
SITE_ADMIN_PASSWORD = "secret-siteadmin"
BASE = "http://localhost:8080/plone"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def rest(functional, monkeypatch):
    """The functional layer's site with plone.restapi installed and a Site
    Administrator ``siteadmin``. The publisher retries a request that
    conflicts (with the worker's commits) three times, as Zope does by
    default (zope.conf ``max-conflict-retries``; 0 in test set-ups)."""
    monkeypatch.setattr(HTTPRequest, "retry_max_count", 3)
    portal = functional["portal"]
    applyProfile(portal, "plone.restapi:default")
    portal.acl_users.userFolderAddUser(
        SITE_ADMIN, SITE_ADMIN_PASSWORD, ["Site Administrator"], []
    )
    transaction.commit()
    return functional


def client(layer, user=SITE_ADMIN, password=SITE_ADMIN_PASSWORD):
    """A WebTest app on the layer's Zope, as ``user`` (None: anonymous)."""
    app = Browser(layer["app"]).testapp
    if user is not None:
        app.set_authorization(("Basic", (user, password)))
    return app


def call(app, method, path, **kw):
    kw.setdefault("headers", {"Accept": "application/json"})
    return getattr(app, method.lower())(f"{BASE}/{path}", expect_errors=True, **kw)


def queue_as(layer, user, func, context, *args):
    """Queue a job as ``user`` of the site (the test runs as the test user)."""
    login(layer["portal"], user)
    try:
        return service().queueJob(func, context, *args)
    finally:
        login(layer["portal"], TEST_USER_NAME)


# -- permissions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "@async-jobs"),
        ("GET", "@async-jobs/{id}"),
        ("POST", "@async-jobs/{id}/retry"),
        ("POST", "@async-jobs/{id}/cancel"),
        ("DELETE", "@async-jobs/{id}"),
        ("GET", "@async-workers"),
    ],
)
def test_anonymous_and_members_are_refused(rest, method, path):
    job = service().queueJob(uijobs.fail_with, rest["portal"], "private")
    run(job)
    for who in ((None, None), (TEST_USER_NAME, TEST_USER_PASSWORD)):
        response = call(client(rest, *who), method, path.format(id=job.id))
        assert response.status_int in (401, 403), (who, response.status)
        assert response.json["type"] == "Unauthorized"
        assert "private" not in response.text
    transaction.begin()
    assert job.failed and job.attempts == 1


def test_site_administrators_and_managers_are_served(rest):
    job = service().queueJob(uijobs.echo, rest["portal"], 1)
    run(job)
    for who in (
        (SITE_ADMIN, SITE_ADMIN_PASSWORD),
        (SITE_OWNER_NAME, SITE_OWNER_PASSWORD),
    ):
        app = client(rest, *who)
        assert call(app, "GET", "@async-jobs").json["items"][0]["id"] == job.id
        assert call(app, "GET", f"@async-jobs/{job.id}").json["result"] == "[[1], {}]"
        assert call(app, "GET", "@async-workers").status_int == 200


def test_other_sites_jobs_are_not_found_for_site_administrators(rest):
    foreign = service().getQueues()[""].put(Job(uijobs.fail_with, None, "elsewhere"))
    run(foreign)
    app = client(rest)
    assert call(app, "GET", "@async-jobs").json["items"] == []
    for method, path in (
        ("GET", f"@async-jobs/{foreign.id}"),
        ("POST", f"@async-jobs/{foreign.id}/retry"),
        ("DELETE", f"@async-jobs/{foreign.id}"),
    ):
        assert call(app, method, path).status_int == 404
    owner = client(rest, SITE_OWNER_NAME, SITE_OWNER_PASSWORD)
    (item,) = call(owner, "GET", "@async-jobs").json["items"]
    assert item["id"] == foreign.id and item["user"] is None


# -- reading -------------------------------------------------------------------------


def test_list_filters_and_batching(rest):
    portal, folder = rest["portal"], rest["test-folder"]
    mine = [queue_as(rest, TEST_USER_NAME, uijobs.echo, folder, n) for n in range(3)]
    failed = queue_as(rest, SITE_ADMIN, uijobs.fail_with, portal, "<script>x</script>")
    transaction.commit()
    for job in [*mine, failed]:
        wait_for_result(job, WAIT)
    app = client(rest)

    def ids(query):
        response = call(app, "GET", f"@async-jobs?{query}")
        assert response.status_int == 200, response.text
        return [item["id"] for item in response.json["items"]], response.json

    newest_first = [job.id for job in reversed(mine)]
    assert ids("status=completed")[0] == newest_first
    assert ids("status=failed")[0] == [failed.id]
    assert ids("status=completed&status=failed")[0] == [failed.id, *newest_first]
    assert ids("status=completed,failed")[0] == [failed.id, *newest_first]
    assert ids(f"user={TEST_USER_ID}")[0] == newest_first
    assert ids("path=/test-folder")[0] == newest_first
    assert ids("callable=fail_with")[0] == [failed.id]
    assert ids("queue=&status=failed")[0] == [failed.id]
    assert ids("queue=nosuch")[0] == []
    found, data = ids("status=completed&b_size=2")
    assert found == newest_first[:2]
    assert data["batching"] == {
        "@id": f"{BASE}/@async-jobs?status=completed&b_size=2",
        "first": f"{BASE}/@async-jobs?status=completed&b_size=2",
        "next": f"{BASE}/@async-jobs?status=completed&b_start=2&b_size=2",
    }
    found, data = ids("status=completed&b_size=2&b_start=2")
    assert found == newest_first[2:]
    assert "next" not in data["batching"]
    assert data["batching"]["prev"] == f"{BASE}/@async-jobs?status=completed&b_size=2"
    assert "batching" not in ids("status=completed")[1]
    # The argument comes back as text, for a client to escape.
    item = call(app, "GET", f"@async-jobs/{failed.id}").json
    assert item["args"] == ["'<script>x</script>'"]
    assert item["error"] == "builtins.RuntimeError: <script>x</script>"
    for bad in ("status=bogus", "b_size=0", "b_start=-1", "b_size=x"):
        response = call(app, "GET", f"@async-jobs?{bad}")
        assert response.status_int == 400, bad
        assert response.json["type"] == "BadRequest"


def test_one_job_with_progress(rest):
    token = "rest-progress"
    job = service().queueJob(uijobs.stepped, rest["portal"], token, 4)
    transaction.commit()
    app = client(rest)

    def progress():
        return call(app, "GET", f"@async-jobs/{job.id}").json["progress"]

    uijobs.release(token)
    value = wait_until(
        lambda: (found := progress()) is not None and found["done"] >= 1 and found,
        timeout=WAIT,
        interval=0.05,
        message="progress reported after step 1",
    )
    assert value == {
        "done": 1,
        "total": 4,
        "message": "step 1 of 4 done",
        "percent": 25,
    }
    workers = call(app, "GET", "@async-workers").json["items"]
    (running,) = workers[0]["jobs"]
    assert running["id"] == job.id and running["progress"]["percent"] == 25
    uijobs.release(token, 3)
    wait_for_result(job, WAIT)
    assert call(app, "GET", f"@async-jobs/{job.id}").json["progress"] is None


# -- acting ------------------------------------------------------------------------


def test_retry_cancel_delete(rest):
    portal = rest["portal"]
    failed = service().queueJob(uijobs.fail_with, portal, "again")
    done = service().queueJob(uijobs.echo, portal, 1)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    scheduled = service().queueJobWithDelay(None, later, uijobs.echo, portal, 2)
    run(failed)
    run(done)
    app = client(rest)
    response = call(app, "POST", f"@async-jobs/{failed.id}/retry")
    assert response.status_int == 200
    assert response.json["kind"] == "pending"
    assert wait_for_result(failed, WAIT).getErrorMessage() == "again"
    assert failed.attempts == 2
    response = call(app, "POST", f"@async-jobs/{scheduled.id}/cancel")
    assert response.status_int == 200 and response.json["failed"]
    assert "CancelledError" in wait_for_result(scheduled, WAIT).type_name
    # What the status does not allow is refused, saying why.
    response = call(app, "POST", f"@async-jobs/{scheduled.id}/cancel")
    assert response.status_int == 400, response.text
    assert (
        "only pending, scheduled or running jobs can be cancelled"
        in response.json["message"]
    )
    response = call(app, "POST", f"@async-jobs/{done.id}/retry")
    assert response.status_int == 400
    assert "only failed jobs can be retried" in response.json["message"]
    response = call(app, "DELETE", f"@async-jobs/{done.id}")
    assert response.status_int == 204 and response.body == b""
    assert call(app, "GET", "@async-jobs?status=completed").json["items"] == []
    assert call(app, "GET", f"@async-jobs/{done.id}").status_int == 200  # until a pack
    for method, path in (
        ("POST", f"@async-jobs/{failed.id}/frobnicate"),
        ("POST", f"@async-jobs/{failed.id}"),
        ("GET", "@async-jobs/ffffffffff"),
        ("GET", f"@async-jobs/{failed.id}/more"),
    ):
        assert call(app, method, path).status_int == 404, (method, path)


def test_cancel_a_running_job(rest):
    """A running job's cancel is a request: the job stops at its next
    progress() with JobCancelled."""
    token = "rest-cancel"
    job = service().queueJob(uijobs.stepped, rest["portal"], token, 3)
    transaction.commit()
    app = client(rest)
    uijobs.release(token)
    wait_until(
        lambda: (
            (found := call(app, "GET", f"@async-jobs/{job.id}").json["progress"])
            and found["done"] >= 1
        ),
        timeout=WAIT,
        interval=0.05,
        message="progress reported after step 1",
    )
    response = call(app, "POST", f"@async-jobs/{job.id}/cancel")
    assert response.status_int == 200, response.text
    assert response.json["cancel"] == "requested"
    assert response.json["kind"] == "active"
    assert "stops at its next check" in response.json["message"]
    uijobs.release(token, 2)
    failure = wait_for_result(job, WAIT)
    assert failure.check(JobCancelled)


# -- the documentation -----------------------------------------------------------


FENCE = re.compile(r"^```(\w*)\s*$")

#: the job ids docs/restapi.md shows, replaced by the real ones
DOC_IDS = {
    "failed": "3b9ac9ff2a61e001",
    "completed": "3b9ac9ff2a61e002",
    "scheduled": "3b9ac9ff2a61e003",
}
DOC_WORKER = "2f1b7a52-5d0c-4b8e-9a51-2a3c1d7e9b01"
#: where docs/restapi.md's section on schedules starts
SCHEDULES = "\n## Schedules\n"


def http_blocks(text):
    """(line number, lines) of the ```http blocks of a markdown text."""
    blocks, kind, lines, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and kind is None:
            kind, lines, start = match.group(1) or "text", [], number
        elif match:
            if kind == "http":
                blocks.append((start, lines))
            kind = None
        elif kind is not None:
            lines.append(line)
    return blocks


def split_message(lines):
    """(first line, headers, body) of an HTTP message."""
    first, *rest = lines
    headers, body = {}, []
    for index, line in enumerate(rest):
        if not line.strip():
            body = rest[index + 1 :]
            break
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return first, headers, "\n".join(body).strip()


def matches(expected, actual, where="$"):
    """Compare a documented JSON value with the actual one: the string
    "..." matches anything, "..." inside a string any text, a list ending
    with "..." any longer list, and a key "..." any further keys."""
    if expected == "...":
        return
    if isinstance(expected, str) and "..." in expected and isinstance(actual, str):
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        assert re.fullmatch(pattern, actual, re.S), f"{where}: {actual!r}"
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        keys = set(expected) - {"..."}
        if "..." not in expected:
            assert set(actual) == keys, f"{where}: keys {sorted(actual)}"
        for key in keys:
            assert key in actual, f"{where}: no key {key!r}"
            matches(expected[key], actual[key], f"{where}.{key}")
        return
    if isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        if expected and expected[-1] == "...":
            expected = expected[:-1]
            assert len(actual) >= len(expected), f"{where}: {actual!r}"
            actual = actual[: len(expected)]
        assert len(actual) == len(expected), f"{where}: {actual!r}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            matches(e, a, f"{where}[{index}]")
        return
    assert expected == actual, f"{where}: {actual!r}, documented {expected!r}"


def test_matches():
    matches(
        {"a": "...", "b": [1, "..."], "c": "x...z"}, {"a": 3, "b": [1, 2], "c": "xyz"}
    )
    matches({"a": 1, "...": "..."}, {"a": 1, "b": 2})
    for expected, actual in (
        ({"a": 1}, {"a": 1, "b": 2}),
        ([1], [1, 2]),
        ("x...z", "xy"),
        ({"a": "..."}, {}),
    ):
        with pytest.raises(AssertionError):
            matches(expected, actual)


def prepare_documented_jobs(layer):
    """The jobs docs/restapi.md starts from: a failed job queued by
    siteadmin, a completed one queued by the test user in test-folder, and
    one scheduled for later by anonymous."""
    portal, folder = layer["portal"], layer["test-folder"]
    failed = queue_as(layer, SITE_ADMIN, funcs.failingJob, portal)
    completed = service().queueJob(funcs.addNumbers, folder, 40, 2)
    later = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
    logout()
    try:
        scheduled = service().queueJobWithDelay(
            None, later, funcs.addNumbers, portal, 1, 1
        )
    finally:
        login(portal, TEST_USER_NAME)
    transaction.commit()
    wait_for_result(failed, WAIT)
    wait_for_result(completed, WAIT)
    return {
        DOC_IDS["failed"]: failed.id,
        DOC_IDS["completed"]: completed.id,
        DOC_IDS["scheduled"]: scheduled.id,
        DOC_WORKER: layer["dispatcher"].uuid,
    }


def test_restapi_documentation(rest):
    """Every request of docs/restapi.md gets the documented response."""
    ids = prepare_documented_jobs(rest)
    path = DOCS / "restapi.md"
    # (its section on schedules runs in test_schedules_plone.py)
    blocks = http_blocks(path.read_text(encoding="utf-8").split(SCHEDULES)[0])
    assert len(blocks) >= 2 and len(blocks) % 2 == 0, "requests and responses pair"
    app = Browser(rest["app"]).testapp

    def real(text):
        for documented, actual in ids.items():
            text = text.replace(documented, actual)
        return text

    for (line, request), (_, response) in zip(blocks[::2], blocks[1::2], strict=True):
        first, headers, body = split_message([real(x) for x in request])
        method, target, _version = first.split()
        assert "Host" in headers, f"{path.name}:{line}: the request names its Host"
        url = f"http://{headers.pop('Host')}{target}"
        reply = app.request(
            url,
            method=method,
            headers=headers,
            body=body.encode() if body else b"",
            expect_errors=True,
        )
        status_line, expected_headers, expected_body = split_message(response)
        where = f"{path.name}:{line}: {method} {target}"
        assert reply.status == status_line.split(" ", 1)[1], (
            f"{where}: {reply.status} {reply.text}"
        )
        for name, value in expected_headers.items():
            assert reply.headers.get(name) == value, f"{where}: {name}"
        if expected_body:
            matches(json.loads(real(expected_body)), reply.json, where)
        else:
            assert not reply.body, f"{where}: {reply.body!r}"


# -- @async-health -------------------------------------------------------------------


def test_health_is_anonymous_and_status_only(rest):
    anonymous = client(rest, None)
    wait_until(
        lambda: call(anonymous, "GET", "@async-health").status_int == 200,
        timeout=WAIT,
        message="the layer's worker fresh",
    )
    response = call(anonymous, "GET", "@async-health")
    assert response.json == {"status": "ok"}
    # no worker was seen within the last millisecond
    response = call(anonymous, "GET", "@async-health?max_age=0.001")
    assert response.status_int == 503
    assert response.json == {"status": "unhealthy"}
    assert call(anonymous, "GET", "@async-health?max_age=x").status_int == 400
    assert call(anonymous, "GET", "@async-health?max_age=600").json == {"status": "ok"}
