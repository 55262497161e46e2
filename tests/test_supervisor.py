"""``zasync worker --processes N``: real worker processes on a real ZEO
server under one supervisor process. Jobs run in every child; a child
killed with SIGKILL comes back under its UUID and recovers its job; SIGTERM
stops them all cleanly; a supervisor killed with SIGKILL leaves no child
behind; bad input is refused at the command line.

Job functions (tests/mp_jobs.py) stamp each run in a file with the pid of
the process that ran it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import transaction
from tests import mp_jobs
from tests.processes import run_zasync, subprocess_env

from zasync.admin import find_job
from zasync.cli import build_parser
from zasync.cli.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_STORAGE, EXIT_USAGE
from zasync.cli.processes import child_command
from zasync.cli.supervisor import (
    MAX_PROCESSES,
    STOP_MARGIN,
    child_name,
    child_uuid,
    describe_exit,
    restart_pause,
)
from zasync.interfaces import COMPLETED, KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_until
from zasync.workerstate import WorkerState, state_of

pytestmark = pytest.mark.zeo

HEARTBEAT = 60.0


class Database:
    """The test process as a producer and observer of the ZEO database."""

    def __init__(self, uri: str, stamps: Path):
        self.db = open_db(uri)
        install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)
        self.stamps = str(stamps)

    def put(self, count: int, seconds: float = 0.0) -> list[str]:
        with self.tm:
            queue = self.conn.root()[KEY][""]
            jobs = [
                queue.put(Job(mp_jobs.work, self.stamps, seconds, i))
                for i in range(count)
            ]
        return [job.id for job in jobs]

    def jobs(self, ids: list[str]) -> list[tuple[str, str | None]]:
        """(status, worker UUID) of each job, as committed now."""
        self.tm.begin()
        try:
            jobs = [find_job(self.conn, job_id) for job_id in ids]
            return [(job.status, job.worker) for job in jobs]
        finally:
            self.tm.abort()

    def completed(self, ids: list[str]) -> bool:
        return all(status == COMPLETED for status, _ in self.jobs(ids))

    def workers(self) -> dict[str, dict]:
        """{uuid: name, pid and state} of the registered workers."""
        self.tm.begin()
        try:
            return {
                record.uuid: {
                    "name": record.name,
                    "pid": record.pid,
                    "state": state_of(record, time.time(), HEARTBEAT),
                }
                for record in self.conn.root()[KEY].workers.values()
            }
        finally:
            self.tm.abort()

    def close(self) -> None:
        self.conn.close()
        self.db.close()


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return tmp_path / "stamps"


@pytest.fixture
def database(zeo_server, stamps):
    found = Database(zeo_server.uri, stamps)
    yield found
    found.close()


def supervised(workers, uri: str, *args: str, processes: int = 2):
    """A ``zasync worker --processes N`` command (not started), named t."""
    return workers(
        uri,
        "supervisor",
        threads=1,
        args=["--processes", str(processes), "--name", "t", *args],
    )


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited but not reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_child_uuids_names_and_exits_read_as_documented():
    base = "0e9c4b7a-3f1d-4c2b-9a55-2d4e6f708192"
    assert child_uuid(base, 1) == base
    assert child_uuid(base, 2) == str(uuid.uuid5(uuid.UUID(base), "process-2"))
    assert child_uuid(base, 2) == child_uuid(base, 2) != child_uuid(base, 3)
    assert child_name("reports", 2, 3) == "reports-2"
    assert child_name("reports", 1, 1) == "reports"
    assert child_name(None, 2, 3) is None
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    pauses = [restart_pause(failures) for failures in range(8)]
    assert pauses == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_two_processes_run_jobs_each_under_its_own_uuid_and_name(
    zeo_server, database, workers, stamps, tmp_path
):
    supervisor = supervised(workers, zeo_server.uri).start()
    ids = database.put(12, 0.2)
    wait_until(lambda: database.completed(ids), timeout=60)
    ran_in = {run.pid for run in mp_jobs.runs(str(stamps))}
    held_by = {worker for _status, worker in database.jobs(ids)}
    registered = database.workers()
    assert {w["name"] for w in registered.values()} == {"t-1", "t-2"}
    assert ran_in == {w["pid"] for w in registered.values()}
    assert supervisor.pid not in ran_in
    assert held_by == set(registered)  # both children ran jobs
    base = supervisor.uuid_file.read_text().strip()
    assert set(registered) == {child_uuid(base, 1), child_uuid(base, 2)}
    log = supervisor.log()
    assert "zasync worker ready: 2 processes" in log
    # Both start together; the first prepares the database alone, and the
    # second opens it once the first is ready.
    first_ready = log.index("ready: t-1, uuid")
    assert log.index("worker process 2 started") < first_ready
    second = re.search(r"worker process 2 started \(pid (\d+)\)", log)
    assert second is not None
    assert log.index(f"ClientStorage (pid={second[1]})") > first_ready
    for name in ("t-1", "t-2"):
        assert f"zasync worker ready: {name}, uuid " in supervisor.log()
    # zasync status names them
    status = run_zasync("status", "--db", zeo_server.uri, "--json")
    rows = json.loads(status.stdout)["workers"]
    assert sorted((row["name"], row["label"]) for row in rows) == [
        ("t-1", "t-1"),
        ("t-2", "t-2"),
    ]
    table = run_zasync("status", "--db", zeo_server.uri).stdout
    assert f"{child_uuid(base, 2)}   t-2 " in table


def test_a_child_killed_comes_back_under_its_uuid_and_recovers_its_job(
    zeo_server, database, workers, stamps
):
    # A lease of a minute: the job comes back with its worker, not after it.
    supervisor = supervised(workers, zeo_server.uri, "--lease", "60").start()
    (job_id,) = database.put(1, 3.0)
    first = wait_until(lambda: mp_jobs.runs(str(stamps)), timeout=30)[0]
    before = database.workers()
    (killed_uuid,) = [u for u, w in before.items() if w["pid"] == first.pid]
    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: database.completed([job_id]), timeout=40)
    again = [r for r in mp_jobs.runs(str(stamps)) if r.start > killed_at]
    after = database.workers()
    assert set(after) == set(before)  # the same UUIDs, no new record
    restarted = after[killed_uuid]["pid"]
    assert restarted != first.pid
    assert after[killed_uuid]["state"] is WorkerState.ALIVE
    # The restarted child put its job back at once (either child may run it).
    assert len(again) == 1
    assert again[0].pid in {w["pid"] for w in after.values()}
    assert again[0].start - killed_at < 30  # well within the 60 s lease
    log = supervisor.log()
    assert f"(pid {first.pid}) was killed by SIGKILL" in log
    assert "restarting it in 1 s" in log
    assert f"worker process 2 started (pid {restarted})" in log or (
        f"worker process 1 started (pid {restarted})" in log
    )
    assert f"recovered job {job_id} from this worker's last run" in log
    assert supervisor.running()


def test_sigterm_stops_every_child_cleanly(zeo_server, database, workers):
    supervisor = supervised(workers, zeo_server.uri).start()
    children = [w["pid"] for w in database.workers().values()]
    assert supervisor.stop(60) == EXIT_OK
    assert not any(alive(pid) for pid in children)
    states = {w["name"]: w["state"] for w in database.workers().values()}
    assert states == {"t-1": WorkerState.STOPPED, "t-2": WorkerState.STOPPED}
    assert "SIGTERM received: stopping 2 worker processes" in supervisor.log()


def test_children_of_a_killed_supervisor_stop_on_their_own(
    zeo_server, database, workers
):
    supervisor = supervised(workers, zeo_server.uri).start()
    children = [w["pid"] for w in database.workers().values()]
    assert len(children) == 2 and all(alive(pid) for pid in children)
    supervisor.kill()
    wait_until(
        lambda: not any(alive(pid) for pid in children),
        timeout=30,
        message="the children of the killed supervisor to exit",
    )
    states = {w["name"]: w["state"] for w in database.workers().values()}
    assert states == {"t-1": WorkerState.STOPPED, "t-2": WorkerState.STOPPED}
    assert supervisor.log().count("the supervisor process is gone: stopping") == 2


def test_a_child_failing_at_its_first_start_stops_the_command(workers, tmp_path):
    # Nothing listens on the port: each child fails to open the database.
    supervisor = supervised(workers, "zeo://127.0.0.1:9?wait_timeout=1").spawn()
    assert supervisor.wait(60) == EXIT_STORAGE
    assert "before it was ready: stopping" in supervisor.log()
    assert "restarting" not in supervisor.log()
    # The second, waiting for the first to be ready, ends quietly.
    assert "worker process 2 was killed" not in supervisor.log()
    assert "worker process 2 exited" not in supervisor.log()


def test_children_waiting_for_the_first_stop_when_the_supervisor_is_killed(
    workers, tmp_path
):
    """The first child cannot reach the server for 20 s; the others wait
    for it to be ready. The supervisor killed with SIGKILL meanwhile, each
    child stops on its own: the waiting ones when their link closes."""
    uri = "zeo://127.0.0.1:9?wait_timeout=20"
    supervisor = supervised(workers, uri, processes=3).spawn()

    def pids() -> list[int]:
        found = re.findall(r"worker process \d started \(pid (\d+)\)", supervisor.log())
        return [int(pid) for pid in found]

    children = wait_until(lambda: len(pids()) == 3 and pids(), timeout=30)
    assert all(alive(pid) for pid in children)
    supervisor.kill()
    wait_until(
        lambda: not any(alive(pid) for pid in children),
        timeout=15,
        message="the children of the killed supervisor to exit",
    )
    assert "Traceback" not in supervisor.log()  # their messages share its log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "0"], f"0 processes: use 1 to {MAX_PROCESSES}"),
        (["--processes", "500"], f"500 processes: use 1 to {MAX_PROCESSES}"),
        (["--processes", "two"], "'two' is not a whole number"),
        (["--name", " "], "is not a worker name"),
        (
            ["--processes", "2", "--metrics-port", "65535"],
            "choose a lower port",
        ),
    ],
)
def test_bad_flags_are_refused(zeo_server, args, message):
    result = run_zasync("worker", "--db", zeo_server.uri, *args)
    assert result.returncode == EXIT_USAGE
    assert message in result.stderr


def test_several_processes_on_a_filestorage_are_refused(tmp_path):
    path = tmp_path / "Data.fs"
    result = run_zasync("worker", "--db", str(path), "--processes", "2")
    assert result.returncode == EXIT_USAGE
    assert "a FileStorage is opened by one process only" in result.stderr
    assert "zeo://" in result.stderr
    assert not path.exists()


def test_several_zope_processes_need_a_uuid_file(tmp_path):
    conf = tmp_path / "zope.conf"
    conf.write_text("")
    result = run_zasync("worker", "--zope-conf", str(conf), "--processes", "2")
    assert result.returncode == EXIT_USAGE
    assert "needs --uuid-file FILE" in result.stderr


def test_jobs_outliving_the_stop_timeout_make_the_exit_code_1(
    zeo_server, database, workers, stamps
):
    supervisor = supervised(workers, zeo_server.uri, "--stop-timeout", "1").start()
    database.put(1, 60.0)
    wait_until(lambda: mp_jobs.runs(str(stamps)), timeout=30)
    assert supervisor.stop(60) == EXIT_ERROR
    log = supervisor.log()
    assert "jobs still running after --stop-timeout 1 s" in log
    assert "worker process " in log and "exited with code 1" in log


#: a child that says it is ready, then ignores SIGTERM
STUBBORN_CHILD = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
socket.socket(fileno=int(sys.argv[-1])).sendall(b"ready\\n")
while True:
    time.sleep(1)
"""
#: a supervisor of one stubborn child, in a process of its own
SUPERVISOR = """
import logging, sys
from zasync.cli.supervisor import Supervisor
from zasync.logformat import configure
configure(logging.INFO)
child = [sys.executable, "-c", sys.argv[1]]
sys.exit(Supervisor([child], stop_timeout=0.5).run())
"""


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path):
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, STUBBORN_CHILD],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            start_new_session=True,
        )
    try:
        ready = wait_until(
            lambda: re.search(
                r"ready: 1 processes \(pids (\d+)\)", log_path.read_text()
            ),
            timeout=30,
            message=lambda: f"the supervisor ready:\n{log_path.read_text()}",
        )
        child = int(ready.group(1))
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == EXIT_ERROR
        took = time.monotonic() - started
    finally:
        supervisor.kill()
        supervisor.wait()
    assert not alive(child)
    assert STOP_MARGIN <= took < STOP_MARGIN + 20
    text = log_path.read_text()
    assert f"worker process 1 (pid {child}) still runs" in text
    assert "killed by SIGKILL" in text


def test_a_zope_workers_children_get_the_flags_a_zope_worker_takes(tmp_path):
    parser = build_parser()
    args = parser.parse_args(
        ["worker", "--zope-conf", "zope.conf", "--processes", "2"]
        + ["--uuid-file", str(tmp_path / "w.uuid"), "--interrupt-grace", "2"]
        + ["--stuck-delay", "7", "--memory-trim-interval", "0"]
    )
    child = parser.parse_args(child_command(args, 2, str(tmp_path / "w.uuid.2"))[3:])
    assert child.zope_conf == "zope.conf" and child.db is None
    assert (child.interrupt_grace, child.stuck_delay) == (2.0, 7.0)
    assert child.memory_trim_interval == 0.0


#: worker flags a child gets its own value of, or through its environment
OWN_FLAGS = {"db", "processes", "name", "uuid_file", "metrics_port", "supervisor_fd"}


def test_every_worker_flag_reaches_the_children(tmp_path):
    parser = build_parser()
    worker = parser._subparsers._group_actions[0].choices["worker"]
    argv = ["--log-level", "DEBUG", "worker", "--db", "zeo://127.0.0.1:8100"]
    argv += ["--processes", "2", "--name", "n", "--metrics-port", "9100"]
    given = set()
    for action in worker._actions:
        if not action.option_strings or action.dest in OWN_FLAGS | {"help"}:
            continue
        if action.dest in ("zope_conf", "log_level"):
            continue  # the other source; the top-level flag, given above
        flag = action.option_strings[0]
        if action.choices:
            value = next(c for c in action.choices if c != action.default)
        elif action.type is None:
            value = "myapp.jobs" if action.dest == "imports" else "x.y"
        else:
            value = "3"
        argv += [flag, value]
        given.add(action.dest)
    args = parser.parse_args(argv)
    child = child_command(args, 2, str(tmp_path / "w.uuid.2"))
    assert child[:3] == [sys.executable, "-m", "zasync"]
    parsed = parser.parse_args(child[3:])
    for dest in given | {"log_level"}:
        assert getattr(parsed, dest) == getattr(args, dest), dest
    assert parsed.processes == 1 and parsed.name == "n-2"
    assert parsed.metrics_port == 9101
    assert parsed.uuid_file == str(tmp_path / "w.uuid.2")
    assert "zeo://" not in " ".join(child)  # the database goes in the environment
