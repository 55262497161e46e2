"""``zasync schedules`` in a subprocess, on a real FileStorage: list,
pause, resume, run-now, and the names it refuses."""

from __future__ import annotations

import json

import pytest
import transaction
import ZODB
from tests.processes import run_zasync
from ZODB.FileStorage import FileStorage

import zasync
from zasync.cli.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from zasync.demo import count_words
from zasync.interfaces import KEY
from zasync.schedules import schedule_slot


@pytest.fixture
def path(tmp_path):
    """A Data.fs with two queues: 'nightly' and 'tick' in the default one,
    'tick' again in 'reports'."""
    data = tmp_path / "Data.fs"
    db = ZODB.DB(FileStorage(str(data)))
    zasync.install(db, queues=("", "reports"))
    conn = db.open()
    queues = conn.root()[KEY]
    queues[""].schedules.add(
        "nightly", count_words, "a b", cron="0 2 * * *", timezone="Europe/Amsterdam"
    )
    queues[""].schedules.add("tick", count_words, "x", every=30)
    queues["reports"].schedules.add("tick", count_words, "y", every=60)
    transaction.commit()
    conn.close()
    db.close()
    return str(data)


def read(path, queue, name):
    db = ZODB.DB(FileStorage(path, read_only=True))
    try:
        conn = db.open()
        schedule = conn.root()[KEY][queue].schedules[name]
        return schedule.paused, schedule.next_run, schedule.queue
    finally:
        db.close()


def zasync_ok(*args):
    result = run_zasync(*args)
    assert result.returncode == EXIT_OK, result.stderr
    return result.stdout


def test_list_shows_every_schedule(path):
    out = zasync_ok("schedules", "list", "--db", path)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["schedule", "queue", "state"]
    assert "At 02:00 AM (0 2 * * *, Europe/Amsterdam)" in lines[1]
    assert lines[1].split()[:3] == ["nightly", "(default)", "active"]
    assert "Every 30 seconds" in lines[2] and "Every minute" in lines[3]
    rows = json.loads(
        zasync_ok("schedules", "list", "--db", path, "--queue", "reports", "--json")
    )
    assert [(r["name"], r["queue"], r["every_seconds"]) for r in rows] == [
        ("tick", "reports", 60.0)
    ]


def test_pause_resume_and_run_now_change_the_database(path):
    said = zasync_ok("schedules", "pause", "nightly", "--db", path)
    assert said.strip() == "schedule 'nightly' paused"
    assert read(path, "", "nightly")[0] is True
    said = zasync_ok("schedules", "resume", "nightly", "--db", path)
    paused, next_run, _ = read(path, "", "nightly")
    assert not paused
    assert said.strip() == (
        f"schedule 'nightly' resumed; next run {next_run.isoformat()[:19]} UTC"
    )
    data = json.loads(
        zasync_ok(
            "schedules", "run-now", "tick", "--queue", "reports", "--db", path, "--json"
        )
    )
    db = ZODB.DB(FileStorage(path, read_only=True))
    try:
        job = zasync.admin.find_job(db.open(), data["job"])
        assert schedule_slot(job) == ("tick", None)
        assert job.args == ["y"] and job.queue.name == "reports"
    finally:
        db.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pause", "nightli"],
            "no schedule 'nightli'; did you mean 'nightly'? `zasync schedules "
            "list` lists them (3 in all)",
        ),
        (
            ["run-now", "tick"],
            "schedule 'tick' is in the queues '', 'reports': say which with --queue",
        ),
        (
            ["resume", "nightly", "--queue", "reports"],
            "no schedule 'nightly' in queue 'reports'; it is in ''",
        ),
        (["list", "--queue", "nope"], "no queue 'nope': the queues are '', 'reports'"),
    ],
)
def test_a_name_it_cannot_find_is_refused_with_the_fix(path, args, message):
    result = run_zasync("schedules", *args, "--db", path)
    assert result.returncode == EXIT_ERROR
    assert result.stderr.strip() == f"zasync schedules: {message}"
    assert read(path, "", "nightly")[0] is False


def test_an_action_and_a_database_are_required(path):
    result = run_zasync("schedules")
    assert result.returncode == EXIT_USAGE
    assert "required: ACTION" in result.stderr
    result = run_zasync("schedules", "stop", "nightly", "--db", path)
    assert result.returncode == EXIT_USAGE
    assert "choose from 'list', 'pause', 'resume', 'run-now'" in result.stderr
    result = run_zasync("schedules", "list")
    assert result.returncode == EXIT_USAGE
    assert "schedules: --db is required (or set ZASYNC_DB)" in result.stderr
