"""The ``zasync`` command, run in subprocesses (``python -m zasync``)
against a real FileStorage and a real ZEO server."""

from __future__ import annotations

import datetime
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import transaction
from tests import mp_jobs
from tests.processes import run_zasync

from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_for_result

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_STORAGE = 0, 1, 2, 3


@dataclass
class Database:
    uri: str
    completed: str
    failed: str
    pending: str
    scheduled: str


@pytest.fixture(params=["file", pytest.param("zeo", marks=pytest.mark.zeo)])
def database(request, tmp_path: Path) -> Database:
    """A database holding a completed, a failed, a pending and a scheduled
    job (run by a dispatcher in this process, stopped since), closed here so
    that the command can open it."""
    if request.param == "zeo":
        uri = request.getfixturevalue("zeo_server").uri
    else:
        uri = str(tmp_path / "var" / "Data.fs")
    stamps = str(tmp_path / "stamps")
    db = open_db(uri)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queue = conn.root()[KEY][""]
        dispatcher = Dispatcher(db, threads=2).start()
        try:
            completed = queue.put(Job(mp_jobs.add, stamps, 2, 3))
            failed = queue.put(Job(mp_jobs.fail, stamps, "broken on purpose"))
            tm.commit()
            wait_for_result(completed, 20)
            wait_for_result(failed, 20)
        finally:
            dispatcher.stop(10)
        pending = queue.put(Job(mp_jobs.work, stamps, 0, "later"))
        scheduled = queue.put(
            Job(mp_jobs.work, stamps, 0, "tomorrow"),
            begin_after=datetime.datetime.now(datetime.UTC)
            + datetime.timedelta(days=1),
        )
        tm.commit()
        return Database(uri, completed.id, failed.id, pending.id, scheduled.id)
    finally:
        tm.abort()
        conn.close()
        db.close()


def zasync(*args: str):
    return run_zasync(*args)


def as_json(result) -> object:
    assert result.returncode == EXIT_OK, result.stderr
    return json.loads(result.stdout)


def ids(rows) -> list[str]:
    return [row["id"] for row in rows]


# -- status, jobs, show ---------------------------------------------------------


def test_status_as_a_table_and_as_json(database):
    table = zasync("status", "--db", database.uri)
    assert table.returncode == EXIT_OK, table.stderr
    assert table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["queue", "pending", "scheduled", "active", "quotas"]
    assert lines[1].split()[:4] == ["(default)", "1", "1", "0"]
    (worker_line,) = [line for line in lines if "stopped" in line]
    assert worker_line.split()[2] == "stopped"  # the dispatcher stopped cleanly
    assert "completed, 1 failed" in table.stdout

    data = as_json(zasync("status", "--json", "--db", database.uri))
    counts = data["queues"][""]["counts"]
    assert (counts["pending"], counts["scheduled"], counts["active"]) == (1, 1, 0)
    (worker,) = data["workers"]
    assert worker["alive"] is False and worker["running"] == []
    assert worker["state"] == "stopped"
    last_minute = data["throughput"]["1m"]
    assert (last_minute["completed"], last_minute["failed"]) == (1, 1)


def test_status_tells_a_dead_worker_from_a_stopped_one(database):
    # A worker not seen for three heartbeats (its process gone without a
    # clean stop), next to the fixture's worker, stopped cleanly.
    db = open_db(database.uri)
    try:
        conn = db.open()
        record = conn.root()[KEY].workers.register("dead-worker")
        record._begin(2, ("",), time.time() - 3600)
        transaction.commit()
        conn.close()
    finally:
        db.close()
    data = as_json(zasync("status", "--json", "--db", database.uri))
    states = {w["uuid"]: w["state"] for w in data["workers"]}
    assert sorted(states.values()) == ["dead", "stopped"]
    assert states["dead-worker"] == "dead"
    table = zasync("status", "--db", database.uri).stdout
    (line,) = [line for line in table.splitlines() if line.startswith("dead-worker")]
    assert line.split()[2] == "dead"


def test_jobs_lists_and_filters_by_status(database):
    def listed(*statuses: str) -> list[str]:
        flags = [arg for status in statuses for arg in ("--status", status)]
        return ids(as_json(zasync("jobs", *flags, "--json", "--db", database.uri)))

    assert listed("failed") == [database.failed]
    assert listed("completed") == [database.completed]
    assert listed("pending") == [database.pending]
    assert listed("scheduled") == [database.scheduled]
    assert listed("active") == []
    assert sorted(listed("pending", "failed")) == sorted(
        [database.pending, database.failed]
    )
    assert sorted(listed()) == sorted(
        [database.completed, database.failed, database.pending, database.scheduled]
    )
    table = zasync("jobs", "--status", "failed", "--db", database.uri)
    assert table.returncode == EXIT_OK
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["id", "kind", "queue", "callable"]
    assert row.split()[:4] == [
        database.failed,
        "failed",
        "(default)",
        "tests.mp_jobs.fail",
    ]


def test_show_a_failed_job(database):
    text = zasync("show", database.failed, "--db", database.uri)
    assert text.returncode == EXIT_OK, text.stderr
    assert "callable: tests.mp_jobs.fail" in text.stdout
    assert "error: builtins.ValueError: broken on purpose" in text.stdout
    assert "Traceback (most recent call last)" in text.stdout
    data = as_json(zasync("show", database.completed, "--json", "--db", database.uri))
    assert data["kind"] == "completed" and data["result"] == "5"


# -- actions ---------------------------------------------------------------------


def test_retry_queues_a_failed_job_again(database):
    done = zasync("retry", database.failed, "--db", database.uri)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.strip() == f"job {database.failed} queued again"
    data = as_json(zasync("show", database.failed, "--json", "--db", database.uri))
    assert data["kind"] == "pending" and "error" not in data
    refused = zasync("retry", database.completed, "--db", database.uri)
    assert refused.returncode == EXIT_ERROR
    assert "only failed jobs can be retried" in refused.stderr


def test_cancel_a_pending_job(database):
    done = zasync("cancel", database.pending, "--db", database.uri)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.strip() == f"job {database.pending} cancelled"
    data = as_json(zasync("show", database.pending, "--json", "--db", database.uri))
    assert data["kind"] == "failed"
    assert data["error"].startswith("zasync.interfaces.CancelledError")
    refused = zasync("cancel", database.completed, "--db", database.uri)
    assert refused.returncode == EXIT_ERROR
    assert "only pending, scheduled or running jobs can be cancelled" in refused.stderr


def test_prune_removes_finished_jobs(database):
    kept = zasync("prune", "--older-than", "1", "--db", database.uri)
    assert kept.stdout.strip() == "removed 0 finished jobs older than 1 days"
    done = zasync("prune", "--older-than", "0", "--db", database.uri)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.strip() == "removed 2 finished jobs older than 0 days"
    left = as_json(zasync("jobs", "--json", "--db", database.uri))
    assert sorted(ids(left)) == sorted([database.pending, database.scheduled])


def test_demo_runs_a_batch_and_prints_results(tmp_path):
    demo = zasync("demo", "--db", str(tmp_path / "Data.fs"), "--jobs", "5")
    assert demo.returncode == EXIT_OK, demo.stderr
    out = demo.stdout
    assert "word counts: [4, 8, 12, 16, 20]" in out
    assert "slow_sum(100) = 5050; callback saw 5050" in out
    assert "serial batch: zasync.demo.count_words -> 2" in out
    assert "retried job: succeeded on attempt 2" in out
    assert "all done in" in out


# -- bad input ---------------------------------------------------------------------


def test_a_bad_flag_is_named(tmp_path):
    result = zasync("status", "--db", str(tmp_path / "Data.fs"), "--bogus")
    assert result.returncode == EXIT_USAGE
    assert "unrecognized arguments: --bogus" in result.stderr


def test_threads_must_be_positive(tmp_path):
    result = zasync("worker", "--db", str(tmp_path / "Data.fs"), "--threads", "0")
    assert result.returncode == EXIT_USAGE
    assert "argument --threads: 0 must be 1 or more" in result.stderr
    assert not (tmp_path / "Data.fs").exists()


def test_the_database_is_required():
    result = zasync("jobs")
    assert result.returncode == EXIT_USAGE
    assert "--db is required" in result.stderr


def test_an_unimportable_module_is_named(tmp_path):
    result = zasync(
        "worker", "--db", str(tmp_path / "Data.fs"), "--import", "no_such_module_here"
    )
    assert result.returncode == EXIT_USAGE
    assert "--import no_such_module_here" in result.stderr


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("foo://bar", "cannot open foo://bar: unsupported scheme 'foo://'"),
        ("zeo://localhost", "is not host:port"),
        ("postgresql://u:secret@127.0.0.1/", "no database name"),
        ("missing/Data.fs", "missing/Data.fs: no such file"),
        (None, "no ZEO server answered within 0.5s"),
    ],
    ids=["scheme", "zeo-port", "pg-dbname", "no-file", "no-server"],
)
def test_a_bad_database_gives_one_line_and_exit_3(tmp_path, uri, message):
    uri = uri or f"zeo://127.0.0.1:{_unused_port()}?wait_timeout=0.5"
    result = run_zasync("status", "--db", uri, cwd=tmp_path)
    assert result.returncode == EXIT_STORAGE
    (line,) = result.stderr.splitlines()
    assert line.startswith("zasync status: cannot open ")
    assert message in line
    assert "secret" not in line
    assert result.stdout == ""
    assert not (tmp_path / "missing").exists()


def test_an_unknown_job_id(database):
    missing = zasync("show", "fffffff", "--db", database.uri)
    assert missing.returncode == EXIT_ERROR
    assert missing.stderr.strip() == (
        "zasync show: no job has id fffffff: list them with `zasync jobs`"
    )
    not_an_id = zasync("cancel", "xyz", "--db", database.uri)
    assert not_an_id.returncode == EXIT_ERROR
    assert "'xyz' is not a job id" in not_an_id.stderr


def test_help_shows_examples_and_exit_codes():
    result = zasync("--help")
    assert result.returncode == EXIT_OK
    assert "zasync worker --db zeo://" in result.stdout
    assert "exit codes: 0 ok, 1 the operation failed" in result.stdout


def test_the_log_level_goes_before_or_after_the_command(tmp_path):
    path = str(tmp_path / "Data.fs")
    for args in (["--log-level", "ERROR", "jobs"], ["jobs", "--log-level", "ERROR"]):
        result = zasync(*args, "--db", path)
        assert result.returncode == EXIT_STORAGE  # parsed; no such file
        assert "no such file" in result.stderr


def test_a_filestorage_in_use_by_a_worker_is_named_locked(tmp_path, workers):
    path = str(tmp_path / "Data.fs")
    workers(path).start()
    result = zasync("status", "--db", path)
    assert result.returncode == EXIT_STORAGE
    (line,) = result.stderr.splitlines()
    assert "the FileStorage is locked" in line
    assert "share the database through a ZEO server" in line
