"""Schedules (zasync.schedules, zasync.schedtiming, zasync.scheduler) on a
real FileStorage: declaring them, bad input, the slots of intervals and
cron expressions (across daylight-saving changes, with a clock of the
test's own), the policies for missed slots, pause, resume, run_now, and
dispatchers in threads firing the same slots."""

from __future__ import annotations

import datetime
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

import jobfuncs
from zasync import admin
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.keys import UTC
from zasync.schedtiming import CATCH_UP_LIMIT, GRACE, Cron, Every, ScheduleError, plan
from zasync.scheduler import STAGGER, fire_due, fire_for, turn
from zasync.schedules import ScheduleNotFoundError, schedule_slot
from zasync.testing import wait_until

T0 = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def fire(conn, at):
    """Fire what is due at ``at`` through ``conn``'s own transaction
    manager, as a worker's loop does; the jobs started."""
    return fire_due(conn, conn.transaction_manager, now=at).jobs


@pytest.fixture
def wconn(zasync_db):
    """A second connection, on an explicit transaction manager of its own:
    the worker's side."""
    tm = transaction.TransactionManager(explicit=True)
    connection = zasync_db.open(transaction_manager=tm)
    yield connection
    connection.close()


def slots_in(conn, name=None):
    """Counter of slot -> jobs started for it, over every job in the
    database (pending, running, finished)."""
    conn.transaction_manager.begin()
    try:
        queues = conn.root()[KEY]
        jobs = [
            *admin.iter_pending(queues),
            *admin.iter_active(queues),
            *(job for _, job in admin.iter_done(queues)),
        ]
        found = Counter()
        for job in jobs:
            mark = schedule_slot(job)
            if mark is not None and (name is None or mark[0] == name):
                found[mark[1]] += 1
        return found
    finally:
        conn.transaction_manager.abort()


# -- declaring ----------------------------------------------------------------


def test_an_interval_schedule_is_stored_with_its_first_slot(zasync_db, conn, queue):
    schedule = queue.schedules.add(
        "tick",
        jobfuncs.count,
        "tick",
        every=30,
        start=T0 + datetime.timedelta(seconds=5),
    )
    assert schedule.every == datetime.timedelta(seconds=30)
    assert schedule.cron is None
    assert schedule.next_run == T0 + datetime.timedelta(seconds=30)
    assert schedule.description == "Every 30 seconds"
    assert (schedule.last_run, schedule.last_job, schedule.paused) == (
        None,
        None,
        False,
    )
    assert (schedule.func, schedule.args, schedule.kwargs) == (
        jobfuncs.count,
        ("tick",),
        {},
    )
    transaction.commit()
    other = zasync_db.open(transaction_manager=transaction.TransactionManager())
    try:
        stored = other.root()[KEY][""].schedules
        assert list(stored) == ["tick"]
        assert [s.name for s in stored.values()] == ["tick"]
        assert stored["tick"].next_run == schedule.next_run
        assert stored.earliest == schedule.next_run
    finally:
        other.close()


def test_a_cron_schedule_is_described_in_words(queue):
    every5 = queue.schedules.add("five", jobfuncs.noop, cron="*/5  * * * *", start=T0)
    nightly = queue.schedules.add(
        "nightly",
        jobfuncs.noop,
        cron="0 2 * * *",
        timezone="Europe/Amsterdam",
        start=T0,
    )
    mine = queue.schedules.add(
        "mine", jobfuncs.noop, every=3600, description="the hourly report", start=T0
    )
    assert every5.cron == "*/5 * * * *"
    assert every5.description == "Every 5 minutes"
    assert nightly.description == "At 02:00 AM"
    assert nightly.next_run == datetime.datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert mine.description == "the hourly report"
    assert queue.schedules.earliest == every5.next_run == T0 + 5 * MINUTE


def test_reading_the_schedules_of_a_queue_writes_nothing(conn, queue):
    schedules = queue.schedules
    assert (len(schedules), list(schedules), "x" in schedules) == (0, [], False)
    assert schedules.get("x") is None and schedules.earliest is None
    assert not queue._p_changed and conn._registered_objects == []
    # The first schedule added stores them; later reads find the same.
    queue.schedules.add("a", jobfuncs.noop, every=60)
    queue.schedules.add("b", jobfuncs.noop, every=60)
    assert sorted(queue.schedules) == ["a", "b"]
    assert queue._schedules is not None


def test_a_schedule_can_be_removed(conn, queue):
    queue.schedules.add("a", jobfuncs.noop, every=60)
    queue.schedules.remove("a")
    assert "a" not in queue.schedules and queue.schedules.earliest is None
    with pytest.raises(
        ScheduleNotFoundError,
        match=r"no schedule 'a' in queue '' \(its schedules: none\)",
    ):
        queue.schedules.remove("a")
    queue.schedules.add("b", jobfuncs.noop, every=60)
    with pytest.raises(KeyError, match=r"no schedule 'c'.*\(its schedules: 'b'\)"):
        queue.schedules["c"]


def _nested():
    def inner():
        pass

    return inner


BAD_INPUT = [
    (
        {"cron": "61 * * * *"},
        ScheduleError,
        r"cron='61 \* \* \* \*' is not a cron expression \(Bad minute\): "
        r"give five fields",
    ),
    ({"cron": 5}, ScheduleError, r"cron=5 must be a cron expression"),
    (
        {"cron": "* * * * *", "timezone": "Europe/Amsterdm"},
        ScheduleError,
        r"timezone='Europe/Amsterdm' is not a known timezone; "
        r"did you mean 'Europe/Amsterdam'",
    ),
    (
        {"every": 60, "timezone": ""},
        ScheduleError,
        r"timezone='' is not a known timezone",
    ),
    (
        {"cron": "* * * * *", "every": 60},
        ScheduleError,
        r"give exactly one of cron= .* and every=",
    ),
    ({}, ScheduleError, r"give exactly one of cron="),
    ({"every": 0}, ScheduleError, r"every=0 must be more than 0"),
    ({"every": datetime.timedelta(seconds=-1)}, ScheduleError, r"must be more than 0"),
    ({"every": float("inf")}, ScheduleError, r"every=inf must be more than 0"),
    (
        {"every": "5m"},
        ScheduleError,
        r"every='5m' must be a datetime.timedelta or a number of seconds",
    ),
    ({"every": True}, ScheduleError, r"every=True must be a datetime.timedelta"),
    (
        {"every": 60, "missed": "all"},
        ScheduleError,
        r"missed='all' is not a policy: give 'once'",
    ),
    (
        {"every": 60, "quota_names": ("big",)},
        ScheduleError,
        r"names quota 'big', which queue '' does not have; "
        r"create it with queue.quotas.create\('big', size=1\)",
    ),
    (
        {"every": 60, "quota_names": "big"},
        ScheduleError,
        r"quota_names must be a sequence of names, e.g. \('big',\)",
    ),
    ({"every": 60, "timeout": -1}, ScheduleError, r"timeout=-1: give the seconds"),
    ({"every": 60, "description": 3}, ScheduleError, r"description=3 must be text"),
    (
        {"every": 60, "start": datetime.datetime(2026, 1, 1)},
        ScheduleError,
        r"is naive: give a timezone-aware datetime",
    ),
    (
        {"every": 60, "retry_policy_factory": threading.Lock()},
        TypeError,
        r"retry policy cannot be stored",
    ),
    (
        {"every": 60, "func": lambda: 1},
        TypeError,
        r"schedule 'bad': a lambda cannot be stored in a job",
    ),
    (
        {"every": 60, "func": _nested()},
        TypeError,
        r"schedule 'bad': the function .*inner is nested or local",
    ),
    (
        {"every": 60, "args": (threading.Lock(),)},
        TypeError,
        r"schedule 'bad': argument 0 of .*identity cannot be stored",
    ),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_INPUT)
def test_bad_input_is_refused_with_the_fix(conn, queue, options, error, message):
    options = dict(options)
    func = options.pop("func", jobfuncs.identity)
    args = options.pop("args", ())
    with pytest.raises(error, match=message):
        queue.schedules.add("bad", func, *args, **options)
    assert "bad" not in queue.schedules
    assert not queue._p_changed and conn._registered_objects == []


def test_a_name_is_refused_when_taken_or_empty(queue):
    queue.schedules.add("a", jobfuncs.noop, every=60)
    with pytest.raises(
        ScheduleError,
        match=r"schedule 'a' exists already in queue '': "
        r"choose another name, or remove it first",
    ):
        queue.schedules.add("a", jobfuncs.noop, every=30)
    with pytest.raises(ScheduleError, match="a schedule needs a name"):
        queue.schedules.add(" ", jobfuncs.noop, every=30)
    assert queue.schedules["a"].every == MINUTE


# -- slots ---------------------------------------------------------------------


def test_interval_slots_are_whole_multiples_since_the_epoch():
    every = Every(90 * 1_000_000)
    slot = every.after(T0)
    assert slot.timestamp() % 90 == 0
    assert T0 < slot <= T0 + datetime.timedelta(seconds=90)
    assert every.after(slot) == slot + datetime.timedelta(seconds=90)
    back = every.backwards(slot)  # a slot at the moment itself comes first
    assert [next(back) for _ in range(2)] == [
        slot,
        slot - datetime.timedelta(seconds=90),
    ]


def test_cron_slots_are_computed_in_the_timezone():
    nightly = Cron("0 2 * * *", "Europe/Amsterdam")
    summer = datetime.datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    assert nightly.after(summer) == datetime.datetime(2026, 7, 2, 0, 0, tzinfo=UTC)
    winter = datetime.datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert nightly.after(winter) == datetime.datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    # backwards includes a slot at the moment itself
    at = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert next(nightly.backwards(at)) == at


def _walk(conn, wconn, schedule_args, begin, end, step=datetime.timedelta(minutes=5)):
    """Add a schedule at ``begin``, fire at every ``step`` up to ``end`` with
    the test's clock; the slots its jobs were started for, in order."""
    queue = conn.root()[KEY][""]
    queue.schedules.add("s", jobfuncs.noop, start=begin, **schedule_args)
    transaction.commit()
    at = begin
    while at <= end:
        fire(wconn, at)
        at += step
    return sorted(slots_in(wconn, "s").elements())


def test_a_nightly_cron_runs_once_on_the_spring_forward_day(conn, wconn):
    """Europe/Amsterdam, Sunday 29 March 2026: 02:00 CET becomes 03:00
    CEST; 02:00 does not exist that night, and the job runs once, at 03:00
    (Debian cron's behaviour)."""
    slots = _walk(
        conn,
        wconn,
        {"cron": "0 2 * * *", "timezone": "Europe/Amsterdam"},
        datetime.datetime(2026, 3, 27, 12, tzinfo=UTC),
        datetime.datetime(2026, 3, 31, 12, tzinfo=UTC),
    )
    assert [s.astimezone(AMSTERDAM).isoformat() for s in slots] == [
        "2026-03-28T02:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-31T02:00:00+02:00",
    ]


def test_a_nightly_cron_runs_once_on_the_fall_back_day(conn, wconn):
    """Europe/Amsterdam, Sunday 25 October 2026: 03:00 CEST becomes 02:00
    CET; 02:30 happens twice that night, and the job runs once, the first
    time."""
    slots = _walk(
        conn,
        wconn,
        {"cron": "30 2 * * *", "timezone": "Europe/Amsterdam"},
        datetime.datetime(2026, 10, 23, 12, tzinfo=UTC),
        datetime.datetime(2026, 10, 27, 12, tzinfo=UTC),
    )
    assert [s.isoformat() for s in slots] == [
        "2026-10-24T00:30:00+00:00",  # 02:30 CEST
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, the first of the two
        "2026-10-26T01:30:00+00:00",  # 02:30 CET
        "2026-10-27T01:30:00+00:00",
    ]


@pytest.mark.parametrize(
    ("day", "hours"),
    [(datetime.date(2026, 3, 29), 23), (datetime.date(2026, 10, 25), 25)],
)
def test_an_hourly_cron_follows_the_length_of_a_dst_day(conn, wconn, day, hours):
    midnight = datetime.datetime(day.year, day.month, day.day, tzinfo=AMSTERDAM)
    begin = midnight.astimezone(UTC) - datetime.timedelta(minutes=1)
    end = (midnight + datetime.timedelta(days=1)).astimezone(UTC) - MINUTE
    slots = _walk(
        conn,
        wconn,
        {"cron": "0 * * * *", "timezone": "Europe/Amsterdam"},
        begin,
        end,
        step=datetime.timedelta(minutes=10),
    )
    assert len(slots) == len(set(slots)) == hours
    assert all(
        b - a == datetime.timedelta(hours=1)
        for a, b in zip(slots, slots[1:], strict=False)
    )


# -- firing ----------------------------------------------------------------------


def test_a_due_slot_starts_one_job_that_records_its_slot(conn, wconn, queue):
    schedule = queue.schedules.add("tick", jobfuncs.count, "tick", every=10, start=T0)
    transaction.commit()
    assert fire(wconn, T0 + datetime.timedelta(seconds=9)) == 0
    slot = T0 + datetime.timedelta(seconds=10)
    assert fire(wconn, slot + datetime.timedelta(seconds=3)) == 1
    assert fire(wconn, slot + datetime.timedelta(seconds=3)) == 0  # taken
    transaction.begin()
    assert schedule.last_run == slot
    assert schedule.next_run == slot + datetime.timedelta(seconds=10)
    job = schedule.last_job
    assert schedule_slot(job) == ("tick", slot)
    assert job.status == "pending-status" and job in list(queue)
    assert (job.callable, job.args) == (jobfuncs.count, ["tick"])
    assert schedule_slot(queue.put(jobfuncs.noop)) is None


def test_the_job_options_reach_each_job(conn, wconn, queue):
    queue.quotas.create("reports", size=1)
    from zasync.retry import NeverRetry

    schedule = queue.schedules.add(
        "r",
        jobfuncs.record,
        "k",
        value=3,
        every=60,
        start=T0,
        quota_names=("reports",),
        retry_policy_factory=NeverRetry,
        timeout=5,
    )
    transaction.commit()
    assert fire(wconn, T0 + MINUTE) == 1
    transaction.begin()
    job = schedule.last_job
    assert job.kwargs == {"value": 3}
    assert (job.quota_names, job.retry_policy_factory, job.timeout) == (
        ("reports",),
        NeverRetry,
        5.0,
    )


@pytest.mark.parametrize(
    ("missed", "expected"), [("once", 2), ("skip", 1), ("each", 60)]
)
def test_after_an_hour_down_a_minutely_schedule_follows_its_policy(
    conn, wconn, queue, missed, expected, caplog
):
    """Down from 12:00 to 13:00: the 59 slots from 12:01 to 12:59 were
    missed, 13:00 is on time: "once" starts one job for the missed ones,
    "skip" none, "each" one each."""
    queue.schedules.add("m", jobfuncs.noop, every=60, missed=missed, start=T0)
    transaction.commit()
    back = T0 + datetime.timedelta(hours=1)
    caplog.clear()
    assert fire(wconn, back) == expected
    warned = "schedule 'm': 2 or more missed slot(s) start no job (missed='skip')"
    assert (warned in caplog.text) == (missed == "skip")
    slots = slots_in(wconn, "m")
    assert set(slots.values()) == {1}
    assert back in slots  # the slot on time
    if missed == "once":
        assert back - MINUTE in slots  # the latest missed
    transaction.begin()
    assert queue.schedules["m"].next_run == back + MINUTE


@pytest.mark.parametrize(
    ("missed", "expected"), [("once", 1), ("skip", 0), ("each", 1)]
)
def test_a_slot_later_than_the_grace_is_missed(conn, wconn, queue, missed, expected):
    nightly = queue.schedules.add(
        "n", jobfuncs.noop, cron="0 2 * * *", missed=missed, start=T0
    )
    transaction.commit()
    slot = datetime.datetime(2026, 6, 2, 2, tzinfo=UTC)
    assert fire(wconn, slot + GRACE + datetime.timedelta(seconds=1)) == expected
    transaction.begin()
    assert nightly.next_run == slot + datetime.timedelta(days=1)
    assert nightly.last_run == (slot if expected else None)


def test_each_catches_up_at_most_the_limit(conn, wconn, queue):
    queue.schedules.add("e", jobfuncs.noop, every=1, missed="each", start=T0)
    transaction.commit()
    back = T0 + datetime.timedelta(hours=1)
    assert fire(wconn, back) == CATCH_UP_LIMIT + 1
    slots = sorted(slots_in(wconn, "e"))
    assert slots[-1] == back
    assert slots[0] == back - datetime.timedelta(seconds=CATCH_UP_LIMIT)


def test_plan_counts_what_it_skips():
    every = Every(1_000_000)
    decided = plan(every, T0, T0 + datetime.timedelta(seconds=10), "skip")
    assert decided.run == (T0 + datetime.timedelta(seconds=10),)
    assert decided.skipped == 2  # counted up to the policy's limit, and one more
    assert decided.next_run == T0 + datetime.timedelta(seconds=11)
    coalesced = plan(every, T0, T0 + datetime.timedelta(seconds=10), "once")
    assert coalesced.run == (
        T0 + datetime.timedelta(seconds=9),
        T0 + datetime.timedelta(seconds=10),
    )
    assert coalesced.skipped == 0  # its one job stands for the missed slots
    on_time = plan(every, T0, T0 + datetime.timedelta(milliseconds=300), "once")
    assert (on_time.run, on_time.skipped) == ((T0,), 0)


def test_a_slot_whose_quota_is_gone_starts_nothing_and_says_why(
    conn, wconn, queue, caplog
):
    queue.quotas.create("q")
    schedule = queue.schedules.add(
        "s", jobfuncs.noop, every=60, quota_names=("q",), start=T0
    )
    transaction.commit()
    queue.quotas.remove("q")
    transaction.commit()
    assert fire(wconn, T0 + MINUTE) == 0
    assert fire(wconn, T0 + 2 * MINUTE) == 0
    transaction.begin()
    assert schedule.next_run == T0 + 3 * MINUTE
    assert "names quota 'q', which queue '' does not have" in schedule.last_error
    assert "schedule 's': slot 2026-06-01T12:02:00+00:00" in caplog.text


def test_pause_resume_and_run_now(conn, wconn, queue):
    schedule = queue.schedules.add("p", jobfuncs.noop, every=60, start=T0)
    schedule.pause()
    assert queue.schedules.earliest is None
    transaction.commit()
    assert fire(wconn, T0 + 5 * MINUTE) == 0
    transaction.begin()
    schedule.resume(now=T0 + 5 * MINUTE + datetime.timedelta(seconds=1))
    assert schedule.next_run == T0 + 6 * MINUTE  # the paused slots start none
    assert queue.schedules.earliest == schedule.next_run
    job = schedule.run_now()
    assert schedule_slot(job) == ("p", None)
    assert (schedule.last_job, schedule.next_run) == (None, T0 + 6 * MINUTE)
    transaction.commit()
    assert fire(wconn, T0 + 6 * MINUTE) == 1
    transaction.begin()
    assert schedule.last_run == T0 + 6 * MINUTE
    schedule.resume()  # not paused: nothing changes
    assert schedule.next_run == T0 + 7 * MINUTE


def test_the_earliest_next_run_follows_every_change(queue):
    a = queue.schedules.add("a", jobfuncs.noop, every=60, start=T0)
    b = queue.schedules.add("b", jobfuncs.noop, every=600, start=T0)
    assert queue.schedules.earliest == a.next_run
    assert queue.schedules.due(a.next_run) and not queue.schedules.due(T0)
    a.pause()
    assert queue.schedules.earliest == b.next_run
    queue.schedules.remove("b")
    assert queue.schedules.earliest is None


# -- several workers -------------------------------------------------------------


def test_two_dispatchers_firing_the_same_slots_start_one_job_per_slot(
    zasync_db, conn, queue
):
    """Two dispatchers' connections fire each of 50 slots at the same
    moment, in two threads: the database lets one start each slot's job."""
    queue.schedules.add("both", jobfuncs.noop, every=1, missed="skip", start=T0)
    transaction.commit()
    dispatchers = [Dispatcher(zasync_db, threads=1).start(loop=False) for _ in range(2)]
    try:
        barrier = threading.Barrier(2)
        results = [[], []]

        def run(index):
            d = dispatchers[index]
            for n in range(1, 51):
                barrier.wait(10)
                results[index].append(
                    fire_due(d.conn, d.tm, now=T0 + datetime.timedelta(seconds=n))
                )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        started = [sum(f.jobs for f in r) for r in results]
        conflicts = sum(f.conflicts for r in results for f in r)
    finally:
        for d in dispatchers:
            d.stop(10)
    slots = slots_in(conn, "both")
    expected = {T0 + datetime.timedelta(seconds=n) for n in range(1, 51)}
    assert set(slots) == expected and set(slots.values()) == {1}
    assert sum(started) == 50
    print(f"\n50 slots fired by two dispatchers: {started} jobs, {conflicts} conflicts")


def test_two_running_dispatchers_start_one_job_per_slot(
    zasync_db, conn, queue, start_dispatcher
):
    """Two dispatchers' loops on one FileStorage and a schedule every 0.2 s:
    each slot starts one job, none is left out."""
    schedule = queue.schedules.add("fast", jobfuncs.noop, every=0.2, missed="each")
    transaction.commit()
    first = schedule.next_run
    start_dispatcher(threads=1)
    start_dispatcher(threads=1)
    wait_until(
        lambda: len(slots_in(conn, "fast")) >= 20,
        timeout=30,
        message=lambda: f"20 slots fired, got {len(slots_in(conn, 'fast'))}",
    )
    schedule.pause()
    transaction.commit()
    transaction.begin()
    last = schedule.last_run
    slots = slots_in(conn, "fast")
    step = datetime.timedelta(seconds=0.2)
    expected = {first + n * step for n in range((last - first) // step + 1)}
    assert set(slots) == expected
    assert set(slots.values()) == {1}


def test_without_the_cron_extra_cron_schedules_say_what_to_install(
    conn, queue, monkeypatch
):
    """Without cronsim (or cron-descriptor) installed, a cron schedule is
    refused with the pip command; interval schedules still work."""
    monkeypatch.setitem(sys.modules, "cronsim", None)  # import raises
    with pytest.raises(ScheduleError, match=r"pip install 'zasync\[cron\]'"):
        queue.schedules.add("c", jobfuncs.noop, cron="* * * * *")
    monkeypatch.delitem(sys.modules, "cronsim")
    monkeypatch.setitem(sys.modules, "cron_descriptor", None)
    with pytest.raises(
        ScheduleError, match=r"cron-descriptor.*\(or give description=\)"
    ):
        queue.schedules.add("c", jobfuncs.noop, cron="* * * * *")
    described = queue.schedules.add(
        "c", jobfuncs.noop, cron="* * * * *", description="each minute"
    )
    assert described.description == "each minute"
    assert (
        queue.schedules.add("i", jobfuncs.noop, every=5).description
        == "Every 5 seconds"
    )


def test_workers_take_turns_at_a_queues_slots(zasync_db, conn, queue):
    """The first worker in the queue's ranking fires a slot when it is
    due; the next one only STAGGER seconds later, when it is still due
    (the first was dead or busy): at the slot they do not conflict."""
    queue.schedules.add("turns", jobfuncs.noop, every=10, start=T0)
    transaction.commit()
    dispatchers = [Dispatcher(zasync_db, threads=1).start(loop=False) for _ in range(2)]
    try:
        for d in dispatchers:
            d.refresh_peers()
        first, second = sorted(dispatchers, key=lambda d: turn(d, ""))
        assert (turn(first, ""), turn(second, "")) == (0.0, STAGGER)
        slot = T0 + datetime.timedelta(seconds=10)
        wake = fire_for(second, None, now=slot)
        assert wake == slot.timestamp() + STAGGER
        assert slots_in(conn, "turns") == {}
        wake = fire_for(first, None, now=slot)
        assert slots_in(conn, "turns") == {slot: 1}
        assert wake == slot.timestamp() + 10
        # The next slot, which the first does not fire: the second does,
        # once its turn has come.
        slot += datetime.timedelta(seconds=10)
        fire_for(second, None, now=slot + datetime.timedelta(seconds=STAGGER / 2))
        assert slot not in slots_in(conn, "turns")
        fire_for(second, None, now=slot + datetime.timedelta(seconds=STAGGER))
        assert slots_in(conn, "turns")[slot] == 1
    finally:
        for d in dispatchers:
            d.stop(10)


def test_a_cron_schedule_with_no_time_left_is_paused_and_says_why(
    conn, wconn, queue, monkeypatch, caplog
):
    """cronsim looks 50 years ahead; a schedule with no time left there
    (injected: no real expression cronsim accepts has none) is paused at
    its next fire, with the reason, and the queue's other schedules go on."""
    doomed = queue.schedules.add("doomed", jobfuncs.noop, cron="0 * * * *", start=T0)
    other = queue.schedules.add("other", jobfuncs.noop, every=60, start=T0)
    transaction.commit()
    monkeypatch.setattr(Cron, "__init__", _cron_without_times)
    # other: the missed slots' job and 13:00's
    assert fire(wconn, T0 + datetime.timedelta(hours=1)) == 2
    transaction.begin()
    assert doomed.paused and doomed.last_run is None
    assert "cron='0 * * * *' names no time in the 50 years after" in doomed.last_error
    assert other.last_run == T0 + datetime.timedelta(hours=1)
    assert "schedule 'doomed'" in caplog.text


def _cron_without_times(self, expression, timezone):
    """Cron, with a cronsim that finds no time (past its 50 years)."""
    self.expression = expression
    self.zone = ZoneInfo(timezone)
    self._cronsim = lambda *args, **kw: iter(())


def test_a_queue_written_before_schedules_existed_takes_them(tmp_path):
    """A queue of a zasync 0.1 database (tests/fixtures/v0_1.fs) has no
    schedules, reads them without writing, and stores the first added."""
    copy = tmp_path / "Data.fs"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "v0_1.fs", copy)
    db = ZODB.DB(FileStorage(str(copy)))
    try:
        conn = db.open()
        old = conn.root()[KEY][""]
        assert len(old.schedules) == 0 and conn._registered_objects == []
        old.schedules.add("new", jobfuncs.noop, every=60, start=T0)
        transaction.commit()
        conn.close()
        tm = transaction.TransactionManager(explicit=True)
        again = db.open(transaction_manager=tm)
        assert fire(again, T0 + MINUTE) == 1
        assert list(slots_in(again, "new")) == [T0 + MINUTE]
        again.close()
    finally:
        db.close()


def test_a_dispatcher_not_started_fires_nothing(zasync_db, conn, queue):
    """As its step runs no heartbeat nor maintenance, a dispatcher that was
    not started only claims: it reads no schedule."""
    queue.schedules.add("idle", jobfuncs.noop, every=1, start=T0)
    transaction.commit()
    dispatcher = Dispatcher(zasync_db, threads=1)
    dispatcher.tm = transaction.TransactionManager(explicit=True)
    dispatcher.conn = zasync_db.open(transaction_manager=dispatcher.tm)
    try:
        assert fire_for(dispatcher, 12.5, now=T0 + MINUTE) == 12.5
    finally:
        dispatcher.conn.close()
    assert slots_in(conn, "idle") == {}


def test_the_database_lets_one_of_two_firings_of_a_slot_commit(storage_db):
    """On each storage: a worker whose view predates another's firing of
    the same slot fires it too, and its commit conflicts (the schedule
    merges nothing); trying again, it finds the slot taken."""
    from transaction.interfaces import TransientError

    managers = [transaction.TransactionManager(explicit=True) for _ in range(3)]
    first, late, observer = (storage_db.open(transaction_manager=tm) for tm in managers)
    try:
        with managers[2]:
            observer.root()[KEY][""].schedules.add(
                "one", jobfuncs.noop, every=60, start=T0
            )
        slot = T0 + MINUTE
        managers[1].begin()
        stale = late.root()[KEY][""].schedules
        assert stale.due(slot)  # read before the other fires
        assert fire(first, slot) == 1
        assert len(stale._fire(slot)) == 1  # in its older view
        with pytest.raises(TransientError):
            managers[1].commit()
        managers[1].abort()
        assert fire(late, slot) == 0
        assert slots_in(observer, "one") == {slot: 1}
    finally:
        for connection in (first, late, observer):
            connection.close()


def test_a_schedule_added_while_a_worker_fires_another_commits_too(
    zasync_db, conn, wconn, queue
):
    """The application adds a schedule in a transaction that began before
    a worker fired another of the queue: both commit. The earliest next
    run kept is the lower of the two views (the application's, which had
    not seen the fire): a worker looking then finds nothing due, and
    reckons it again."""
    queue.schedules.add("old", jobfuncs.noop, every=60, start=T0)
    transaction.commit()
    transaction.begin()
    queue.schedules.add("new", jobfuncs.noop, every=600, start=T0)
    assert fire(wconn, T0 + MINUTE) == 1  # commits first
    transaction.commit()  # resolved: no ConflictError
    transaction.begin()
    assert sorted(queue.schedules) == ["new", "old"]
    assert queue.schedules["old"].last_run == T0 + MINUTE
    assert queue.schedules.earliest == T0 + MINUTE  # too early: harmless
    assert fire(wconn, T0 + MINUTE + datetime.timedelta(seconds=1)) == 0
    transaction.begin()
    assert queue.schedules.earliest == T0 + 2 * MINUTE  # old's next run


def test_two_changes_of_one_schedule_still_conflict(zasync_db, conn, wconn, queue):
    """Pausing a schedule while a worker fires it: one commit fails."""
    from ZODB.POSException import ConflictError

    schedule = queue.schedules.add("one", jobfuncs.noop, every=60, start=T0)
    transaction.commit()
    transaction.begin()
    schedule.pause()
    assert fire(wconn, T0 + MINUTE) == 1
    with pytest.raises(ConflictError):
        transaction.commit()
    transaction.abort()
    assert not schedule.paused


def test_adding_a_schedule_while_another_fires_commits_on_each_storage(storage_db):
    managers = [transaction.TransactionManager(explicit=True) for _ in range(2)]
    app, worker = (storage_db.open(transaction_manager=tm) for tm in managers)
    try:
        with managers[0]:
            app.root()[KEY][""].schedules.add("old", jobfuncs.noop, every=60, start=T0)
        managers[0].begin()
        app.root()[KEY][""].schedules.add("new", jobfuncs.noop, every=600, start=T0)
        assert fire(worker, T0 + MINUTE) == 1
        managers[0].commit()
        managers[0].begin()
        assert sorted(app.root()[KEY][""].schedules) == ["new", "old"]
        managers[0].abort()
    finally:
        app.close()
        worker.close()
