"""Real processes, no mocks: the ZEO set-up of examples/cluster (a ZEO
server, a Zope instance serving HTTP through ``runwsgi`` and a worker
started by ``zasync worker --zope-conf``), and ``make run``'s entry point,
examples/run.py (Plone and its worker in one process).

The processes use the example files as they are; the environment gives
them their paths, ports and the ZEO server's address. Every process is
killed after its test, whatever happens.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tests.processes import ROOT, subprocess_env

from zasync.admin import find_job
from zasync.interfaces import COMPLETED
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.zeo]

EXAMPLES = ROOT / "examples"
CLUSTER = EXAMPLES / "cluster"
BIN = Path(sys.executable).parent
ADMIN = ("admin", "admin")
USER = ("jane", "jane-secret-42")
START = 120  # seconds for a Zope process to come up (2 CPUs, cold caches)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess whose output goes to ``<directory>/<name>.log``; killed
    by :meth:`kill` (the ``processes`` fixture kills every one left)."""

    def __init__(self, name: str, command: list[str], *, directory: Path, env: dict):
        self.name = name
        self.log_path = directory / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=directory,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while it runs; fails the test, quoting the log, once it
        exited."""
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.log()}")
        return True

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:g} s:\n{self.log()}"
            ) from None

    def stop(self, signum: int, timeout: float = 60) -> int:
        self.popen.send_signal(signum)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def processes(tmp_path):
    """``processes(name, command, env=...)`` starts a Process in tmp_path;
    all are killed after the test."""
    started: list[Process] = []

    def start(name: str, command: list[str], *, env: dict) -> Process:
        process = Process(name, command, directory=tmp_path, env=env)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.kill()


# -- HTTP ------------------------------------------------------------------------


def request(url: str, *, auth=ADMIN, data: dict | None = None, json_body=None):
    """(status, body text) of a GET, or of a POST of ``data`` (a form) or
    ``json_body``; HTTP errors are answers too."""
    headers = {
        "Authorization": "Basic "
        + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    }
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
    elif json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = headers["Accept"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def answers(url: str, process: Process) -> bool:
    return process.alive() and request(url)[0] == 200


def queue_demo_job(site_url: str, *, auth) -> str:
    """Queue the demo job through its page, as a browser would (GET the
    page, POST its form with its CSRF token); return the job's id, read
    from the link to its page in the control panel."""
    status, page = request(f"{site_url}/@@zasync-demo-queue", auth=auth)
    assert status == 200, page
    token = re.search(r'name="_authenticator" value="([0-9a-f]+)"', page).group(1)
    status, page = request(
        f"{site_url}/@@zasync-demo-queue",
        auth=auth,
        data={"_authenticator": token, "queue": "1"},
    )
    assert status == 200, page
    match = re.search(rf'href="{re.escape(site_url)}/@@async-jobs/(\w+)"', page)
    assert match, page
    return match.group(1)


def job_completed(site_url: str, job_id: str, *, auth) -> bool:
    """Whether the control panel shows the job completed."""
    status, page = request(f"{site_url}/@@async-jobs/{job_id}", auth=auth)
    return status == 200 and 'data-zasync-kind="completed"' in page


# -- the cluster ------------------------------------------------------------------


@pytest.fixture
def cluster_env(zeo_server):
    """The environment of examples/cluster's processes: its data directory
    is the ZEO server's (blobs shared with it)."""
    return subprocess_env(
        EXAMPLE_HOME=str(CLUSTER),
        EXAMPLE_VAR=str(zeo_server.directory),
        ZEO_ADDRESS="{}:{}".format(*zeo_server.address),
    )


def test_a_worker_runs_jobs_queued_over_http_as_the_user_who_asked(
    zeo_server, cluster_env, processes
):
    # The site, as `make cluster` creates it: zconsole runs the example's
    # script with the instance's zope.conf.
    created = subprocess.run(
        [
            str(BIN / "zconsole"),
            "run",
            str(CLUSTER / "instance" / "etc" / "zope.conf"),
            str(EXAMPLES / "create_site.py"),
        ],
        env=cluster_env,
        capture_output=True,
        text=True,
        timeout=START,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert "site Plone ready; log in as admin / admin" in created.stdout

    port = free_port()
    instance = processes(
        "instance",
        [
            str(BIN / "runwsgi"),
            str(CLUSTER / "instance" / "etc" / "zope.ini"),
            f"http_port={port}",
        ],
        env=cluster_env,
    )
    worker = processes(
        "worker-1",
        [
            sys.executable,
            "-m",
            "zasync",
            "worker",
            "--zope-conf",
            str(CLUSTER / "worker" / "etc" / "worker-1.conf"),
            # wins over ZASYNC_THREADS 2 in the zope.conf's <environment>
            "--threads",
            "3",
            "--stop-timeout",
            "20",
        ],
        env=cluster_env,
    )
    site_url = f"http://127.0.0.1:{port}/Plone"
    wait_until(lambda: answers(site_url, instance), timeout=START, message=instance.log)
    wait_until(
        lambda: worker.alive() and "Ctrl-C to stop" in worker.log(),
        timeout=START,
        message=worker.log,
    )
    # Zope's "Ready to handle requests" is untrue in a worker: one line of its own
    (ready,) = [line for line in worker.log().splitlines() if "worker ready:" in line]
    assert "3 threads, storage Zope (" in ready
    assert "role single_db_worker, database 'main')" in ready
    assert "Ready to handle requests" not in worker.log()
    # the UUID file named by the zope.conf's <environment>
    uuid = (zeo_server.directory / "worker-1.uuid").read_text().split()[0]
    assert uuid in worker.log()

    # A member of the site who may add content: the job must run as her.
    status, text = request(
        f"{site_url}/@users",
        json_body={
            "username": USER[0],
            "email": "jane@example.com",
            "password": USER[1],
            # who may manage jobs may queue the demo job
            "roles": ["Site Administrator"],
        },
    )
    assert status == 201, text

    job_id = queue_demo_job(site_url, auth=USER)
    wait_until(
        lambda: job_completed(site_url, job_id, auth=USER),
        timeout=60,
        message=worker.log,
    )

    # What the database says: the job completed in the worker, as the user
    # who asked for it.
    db = open_db(zeo_server.uri)
    try:
        conn = db.open()
        job = find_job(conn, job_id)
        assert job.status == COMPLETED and not job.failed, job.result
        assert job.result.startswith("demo job done: 5 steps in ")
        assert job.result.endswith(f"/Plone as {USER[0]}")
        conn.close()
    finally:
        db.close()

    # A CSRF-less POST queues nothing.
    status, _ = request(
        f"{site_url}/@@zasync-demo-queue", auth=USER, data={"queue": "1"}
    )
    assert status == 403

    # SIGTERM: the worker stops its dispatcher, closes Zope's database and
    # exits 0.
    assert worker.stop(signal.SIGTERM) == 0, worker.log()
    assert "SIGTERM received: stopping" in worker.log()
    assert f"dispatcher {uuid} stopped" in worker.log()
    assert instance.stop(signal.SIGINT) == 0, instance.log()


def test_zope_conf_errors_are_one_line_with_their_exit_code(tmp_path, cluster_env):
    missing = tmp_path / "nowhere" / "zope.conf"
    result = subprocess.run(
        [sys.executable, "-m", "zasync", "worker", "--zope-conf", str(missing)],
        env=cluster_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr == (
        f"zasync worker: cannot load {missing}: no such file; --zope-conf names "
        f"a zope.conf (the worker's own, whose site.zcml includes zasync's "
        f"worker ZCML)\n"
    )

    both = subprocess.run(
        [sys.executable, "-m", "zasync", "worker", "--db", "x", "--zope-conf", "y"],
        env=cluster_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2
    assert "--zope-conf: not allowed with argument --db" in both.stderr

    # The instance's zope.conf starts Zope, but gives it no worker role.
    instance_conf = CLUSTER / "instance" / "etc" / "zope.conf"
    result = subprocess.run(
        [sys.executable, "-m", "zasync", "worker", "--zope-conf", str(instance_conf)],
        env=cluster_env,
        capture_output=True,
        text=True,
        timeout=START,
    )
    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith(
        f"zasync worker: {instance_conf} gives the role single_db_instance, "
        f"which only queues: its site.zcml"
    )
    assert 'file="single_db_worker.zcml"' in error


# -- make run ---------------------------------------------------------------------


def test_make_run_serves_plone_and_runs_its_jobs_in_the_same_process(
    tmp_path, processes
):
    port = free_port()
    run = processes(
        "run",
        [
            sys.executable,
            str(EXAMPLES / "run.py"),
            "--port",
            str(port),
            "--var",
            str(tmp_path / "var"),
        ],
        env=subprocess_env(),
    )
    site_url = f"http://127.0.0.1:{port}/Plone"
    wait_until(lambda: answers(site_url, run), timeout=START, message=run.log)
    assert f"http://localhost:{port}/Plone  (log in as admin / admin)" in run.log()

    job_id = queue_demo_job(site_url, auth=ADMIN)
    wait_until(
        lambda: job_completed(site_url, job_id, auth=ADMIN),
        timeout=60,
        message=run.log,
    )

    assert run.stop(signal.SIGINT) == 0, run.log()
    assert run.log().rstrip().endswith("stopped")
    assert (tmp_path / "var" / "worker.uuid").exists()
