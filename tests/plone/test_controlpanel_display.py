"""The control panel as people read it, on a real Plone site with a worker
(ZASYNC_PLONE_FUNCTIONAL_TESTING) through a test browser: statuses in
words, workers by name, relative times and durations, breadcrumbs that
follow a job, the charts of the last hour, the test job's button, and
nothing changed by a GET. Then the wording and the charts alone."""

from __future__ import annotations

import datetime
import re

import transaction
from tests.plone import uijobs
from tests.plone.helpers import WAIT, run, service
from tests.plone.test_controlpanel import browser, site, text_of, url  # noqa: F401

from zasync.activity import Activity, Minute
from zasync.admin import find_job
from zasync.plone.browser import activitycache, charts, display
from zasync.plone.browser.jobs import function_name
from zasync.running import human_duration
from zasync.testing import wait_for_result
from zasync.workers import WorkerRecord

# -- on the site ------------------------------------------------------------------


def _badges(html):
    return re.findall(r'data-zasync-kind="(\w+)"[^>]*>([^<]+)<', html)


def test_statuses_read_as_words(site):  # noqa: F811 - the fixture
    portal = site["portal"]
    done = service().queueJob(uijobs.echo, portal, 1)
    failed = service().queueJob(uijobs.fail_with, portal, "no")
    run(done)
    run(failed)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    cancelled = service().queueJobWithDelay(None, later, uijobs.echo, portal, 2)
    transaction.commit()
    b = browser(site)
    b.open(url(site))
    tabs = text_of(re.search(r'id="zasync-tabs".*?</ul>', b.contents, re.S).group(0))
    for label in ("Pending", "Scheduled", "Running", "Completed", "Failed"):
        assert label in tabs
    b.open(url(site, f"/{done.id}"))
    assert _badges(b.contents) == [("completed", "Completed")]
    assert 'title="completed-status"' in b.contents  # the raw status, aside
    assert "completed-status</small>" not in b.contents
    b.open(url(site, f"/{cancelled.id}?confirm=cancel"))
    b.getControl("Cancel job").click()
    assert _badges(b.contents) in (
        [("callbacks", "Finishing")],  # its failure handlers still to run
        [("failed", "Cancelled")],
    )
    wait_for_result(cancelled, WAIT)
    b.open(url(site, f"/{cancelled.id}"))
    assert _badges(b.contents) == [("failed", "Cancelled")]
    b.open(url(site, "?status=failed"))
    assert sorted(_badges(b.contents)) == [
        ("failed", "Cancelled"),
        ("failed", "Failed"),
    ]


def test_workers_by_name_with_their_uuid_aside(site):  # noqa: F811
    dispatcher = site["dispatcher"]
    b = browser(site)
    b.open(url(site))
    row = re.search(r'<tr data-worker="[^"]+">(.*?)</tr>', b.contents, re.S).group(1)
    transaction.begin()
    record = service().getQueues(site["portal"]).workers[dispatcher.uuid]
    assert f">{record.hostname}:{record.pid}<" in row
    assert f'title="{dispatcher.uuid}"' in row
    assert re.search(r'data-zasync-state="alive"><span class="badge[^"]*">Alive<', row)
    seen = re.search(r'class="zasync-last-seen" title="([^"]+)">([^<]+)<', row)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", seen.group(1))
    assert re.fullmatch(r"(\d+ s|\d+ min \d+ s) ago|just now", seen.group(2))
    # An alive worker is seen at each heartbeat: "12 s ago" is not stale.
    every = re.search(r'class="text-muted zasync-heartbeat">seen every ([^<]+)<', row)
    assert every.group(1) == human_duration(record.heartbeat_interval)
    record.name = "web-1"  # what zasync worker --name sets
    transaction.commit()
    b.open(url(site))
    row = re.search(r'<tr data-worker="[^"]+">(.*?)</tr>', b.contents, re.S).group(1)
    assert 'class="zasync-worker-name">web-1<' in row


def test_durations_and_relative_times(site):  # noqa: F811
    portal = site["portal"]
    done = service().queueJob(uijobs.echo, portal, 1)
    run(done)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    service().queueJobWithDelay(None, later, uijobs.echo, portal, 2)
    transaction.commit()
    b = browser(site)
    b.open(url(site, "?status=completed"))
    when = re.search(r'class="zasync-when"><span title="([^"]+)">([^<]+)<', b.contents)
    assert when.group(1).endswith(" UTC")
    assert re.fullmatch(r"\d+ s ago|just now", when.group(2))
    assert re.search(r'class="text-muted zasync-timing">ran \d\.\d s<', b.contents)
    b.open(url(site, "?status=scheduled"))
    assert re.search(r"zasync-timing\">due in 1 h 59 min<", b.contents)
    b.open(url(site, f"/{done.id}"))
    started = r"Started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+ s ago|just now)\)"
    assert re.search(started, text_of(b.contents))


def test_breadcrumbs_on_every_page(site):  # noqa: F811
    failed = service().queueJob(uijobs.fail_with, site["portal"], "once")
    run(failed)
    b = browser(site)

    def crumbs():
        nav = re.search(r'<nav id="zasync-crumbs".*?</nav>', b.contents, re.S)
        return text_of(nav.group(0)).split()

    b.open(url(site))
    assert crumbs() == ["Site", "Setup", "Asynchronous", "jobs"]
    assert 'aria-current="page">Asynchronous jobs' in re.sub(r"\s+", " ", b.contents)
    b.open(url(site, "?status=failed"))
    assert crumbs()[-2:] == ["Failed", "jobs"]
    b.open(url(site, f"/{failed.id}"))
    assert crumbs()[-4:] == ["Failed", "jobs", "Job", failed.id]
    b.getLink("Retry…").click()
    b.getControl("Retry").click()  # the redirect shows it pending or running
    assert b.url == url(site, f"/{failed.id}")
    assert crumbs()[-4] in ("Pending", "Running", "Failed")
    wait_for_result(failed, WAIT)
    transaction.begin()
    # The parts the page refreshes from carry the crumbs of its state now.
    b.open(url(site, f"/{failed.id}/parts"))
    assert crumbs()[-4:] == ["Failed", "jobs", "Job", failed.id]


def test_charts_of_the_last_hour(site):  # noqa: F811
    portal = site["portal"]
    for job in (
        service().queueJob(uijobs.echo, portal, 1),
        service().queueJob(uijobs.echo, portal, 2),
        service().queueJob(uijobs.fail_with, portal, "no"),
    ):
        run(job)
    b = browser(site)
    for path in ("", "/parts"):
        b.open(url(site, path))
        page = b.contents
        assert page.count('role="img" class="zasync-chart"') == 2
        desc = re.search(r'<desc id="zasync-chart-finished-desc">([^<]*)<', page)
        assert "3 jobs finished, 1 of them failed" in desc.group(1)
        desc = re.search(r'<desc id="zasync-chart-wait-desc">([^<]*)<', page)
        assert "3 jobs started" in desc.group(1)
        assert "60 min ago" in page and ">now<" in page  # the x axis
    b.open(url(site))
    assert "From the finished jobs the database keeps" in b.contents
    b.open(url(site, "?status=failed"))
    assert "zasync-chart" not in b.contents  # the overview's only


def test_the_charts_figures_are_reused_for_a_few_seconds(site, monkeypatch):  # noqa: F811
    portal = site["portal"]
    monkeypatch.setattr(activitycache, "TTL", 3600)
    run(service().queueJob(uijobs.echo, portal, 1))
    b = browser(site)
    b.open(url(site))
    assert "1 job finished, 0 of them failed" in b.contents
    run(service().queueJob(uijobs.echo, portal, 2))
    b.open(url(site, "/parts"))
    assert "1 job finished" in b.contents  # within TTL: the figures kept
    monkeypatch.setattr(activitycache, "TTL", 0)
    b.open(url(site, "/parts"))
    assert "2 jobs finished, 0 of them failed" in b.contents


def test_queue_a_test_job_from_the_panel(site):  # noqa: F811
    b = browser(site)
    b.open(url(site))
    b.getControl("Queue a test job").click()
    assert "Queued the test job" in b.contents
    job_id = re.search(r"/@@async-jobs/(\w+)$", b.url).group(1)
    transaction.begin()
    job = find_job(site["portal"]._p_jar, job_id)
    assert function_name(job) == "zasync.plone.demo.demo_job"
    assert "zasync.plone.demo.demo_job" in b.contents
    result = wait_for_result(job, WAIT)
    assert result.startswith(
        "demo job done: 5 steps in http://nohost/plone as siteadmin"
    )


def test_a_get_changes_nothing(site):  # noqa: F811
    portal = site["portal"]
    done = service().queueJob(uijobs.echo, portal, 1)
    run(done)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    scheduled = service().queueJobWithDelay(None, later, uijobs.echo, portal, 2)
    transaction.commit()
    queues = service().getQueues(portal)
    waiting = len(list(queues[""]))
    b = browser(site)
    b.open(url(site, "?confirm=prune&older_than=0"))
    token = b.getForm(id="zasync-confirm").getControl(name="_authenticator").value
    for path in (
        f"?action=prune&older_than=0&confirmed=1&_authenticator={token}",
        f"?action=queue-demo&_authenticator={token}",
        f"/{scheduled.id}?action=cancel&confirmed=1&_authenticator={token}",
        f"/{done.id}?action=remove&confirmed=1&_authenticator={token}",
    ):
        b.open(url(site, path))
        assert "portalMessage" not in b.contents or "Removed" not in b.contents
    transaction.begin()
    assert done.status == "completed-status" and done.queue is not None
    assert scheduled.status == "pending-status"
    assert len(list(queues[""])) == waiting
    b.open(url(site, "?status=completed"))
    assert f'data-job-id="{done.id}"' in b.contents


def test_forms_that_only_ask_keep_the_token_out_of_the_url(site):  # noqa: F811
    b = browser(site)
    b.open(url(site))
    b.getControl("Clear…").click()
    # A browser leaves the disabled field out; this test browser sends it
    # empty: never the token.
    assert "confirm=prune" in b.url and not re.search(r"_authenticator=[^&]", b.url)
    assert "Remove them" in b.contents
    b.open(url(site, "?status=failed"))
    b.getControl("Filter").click()
    assert "status=failed" in b.url and not re.search(r"_authenticator=[^&]", b.url)


# -- the wording and the charts alone --------------------------------------------


def test_kinds_states_and_names_in_words():
    assert display.kind_label("active") == "Running"
    assert display.kind_label("odd-one") == "Odd one"
    cancelled = {"kind": "failed", "error": "zasync.interfaces.CancelledError: x"}
    stopped = {"kind": "failed", "error": "zasync.interfaces.JobCancelled: y"}
    assert display.status_label(cancelled) == display.status_label(stopped)
    assert display.status_label(cancelled) == "Cancelled"
    assert (
        display.status_label({"kind": "failed", "error": "ValueError: x"}) == "Failed"
    )
    assert display.status_badge({"kind": "completed"}) == "badge text-bg-success"
    assert display.state_label("stopped") == "Stopped"
    record = WorkerRecord("2f1b7a52")
    record.hostname, record.pid = "vm", 4321
    assert display.worker_name(record) == "vm:4321"
    record.name = "web-1"
    assert display.worker_name(record) == "web-1"


def test_times_and_durations_in_words():
    clock = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC).timestamp()

    def iso(seconds):
        when = datetime.datetime.fromtimestamp(clock + seconds, datetime.UTC)
        return when.isoformat()

    assert display.relative(iso(-12), clock) == "12 s ago"
    assert display.relative(iso(300), clock) == "in 5 min 0 s"
    assert display.relative(iso(-0.4), clock) == "just now"
    assert display.relative(None, clock) == ""
    done = {"kind": "completed", "begin_after": iso(-20), "active_start": iso(-10),
            "active_end": iso(-7.6)}  # fmt: skip
    assert display.timing(done, clock) == "waited 10 s, ran 2.4 s"
    assert display.timing({"kind": "pending", "begin_after": iso(-300)}, clock) == (
        "waiting 5 min 0 s"
    )
    assert display.timing({"kind": "scheduled", "begin_after": iso(7200)}, clock) == (
        "due in 2 h 0 min"
    )
    assert display.timing({"kind": "active", "active_start": iso(-65)}, clock) == (
        "running 1 min 5 s"
    )
    assert display.timing({"kind": "new"}, clock) == ""


def test_axis_tops_are_round():
    assert [charts.nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 12, 150, 501)] == [
        1, 0.5, 1, 5, 10, 20, 200, 1000,
    ]  # fmt: skip


def _activity(**busy):
    start = 1_767_268_800.0  # 2026-01-01 12:00 UTC
    minutes = [Minute(start=start + 60 * i) for i in range(60)]
    minutes[59] = Minute(start=start + 60 * 59, **busy)
    return Activity(minutes=tuple(minutes), scanned=0, truncated=False)


def test_charts_draw_the_minutes_and_say_what_they_show():
    busy = _activity(completed=8, failed=2, started=10, wait_p50=1.5, wait_p95=40.0)
    finished = charts.finished_chart(busy)
    assert finished.count("<rect") == 2  # completed and failed, stacked
    assert "10 jobs finished, 2 of them failed; at most 10 in a minute (at 12:59" in (
        finished
    )
    assert ">10</text>" in finished  # the top of the axis
    wait = charts.wait_chart(busy)
    assert wait.count("<rect") == 2  # the 95th percentile and the median
    assert "longest median wait of a minute was 1.5 s" in wait
    assert ">50 s</text>" in wait
    quiet = charts.wait_chart(_activity())
    assert "<rect" not in quiet and "No job started" in quiet
    assert "<rect" not in charts.finished_chart(_activity())
