"""``--log-format json``: one JSON object a line, with the job's fields on
records about a job; a real worker's log line parsed back. The text format:
one line format for the command, the examples' Zope instance and their
ZEO servers (a real ZEO server started from examples/cluster/zeo.conf)."""

from __future__ import annotations

import configparser
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests import mp_jobs
from tests.processes import run_zasync

import zasync
from zasync.logformat import (
    TEXT_FORMAT,
    ZCONFIG_DATEFORMAT,
    ZCONFIG_FORMAT,
    configure,
    json_formatter,
    worker_field,
)
from zasync.storage import open_db
from zasync.testing import wait_until


def test_json_record_carries_the_job_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(worker_field)
    logger = logging.getLogger("zasync.test_logformat")
    logger.addHandler(handler)
    worker_field.uuid = "uuid-1"
    try:
        extra = {"action": "failed", "job_id": "1f", "callable": "m.f", "attempt": 2}
        logger.warning("job %s failed", "1f", extra={**extra, "queue": "q"})
        logger.warning("not about a job")
    finally:
        logger.removeHandler(handler)
        worker_field.uuid = None
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "job 1f failed" and first["level"] == "WARNING"
    assert first["logger"] == "zasync.test_logformat" and "time" in first
    assert first["process"] == os.getpid()
    assert {k: first[k] for k in extra} == extra
    assert first["queue"] == "q" and first["worker"] == "uuid-1"
    assert "worker" not in second and "job_id" not in second


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of text, json"):
        configure(logging.INFO, "xml")


@pytest.mark.zeo
@pytest.mark.multiprocess
def test_worker_logs_json_lines(zeo_server, workers, tmp_path: Path) -> None:
    worker = workers(zeo_server.uri, "json", args=["--log-format", "json"])
    worker.start()
    db = open_db(zeo_server.uri)
    try:
        with db.transaction() as conn:
            conn.root()[zasync.KEY][""].put(zasync.Job(mp_jobs.fail, str(tmp_path)))

        def failure_line() -> dict | None:
            for line in worker.log().splitlines():
                if line.startswith("{") and '"job_id"' in line:
                    return json.loads(line)
            return None

        record = wait_until(failure_line, timeout=30, message="a JSON job record")
    finally:
        db.close()
    assert record["callable"] == "tests.mp_jobs.fail"
    assert record["queue"] == "" and record["attempt"] >= 1
    assert record["worker"] == worker.uuid and record["job_id"]
    assert record["level"] in ("WARNING", "ERROR", "INFO")


def test_bad_log_format_exits_2() -> None:
    result = run_zasync("worker", "--db", "memory://", "--log-format", "xml")
    assert result.returncode == 2 and "--log-format" in result.stderr


# --- one text format ---

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: a line of the text format: date, time with milliseconds, level, logger
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \S"
)


def a_record() -> logging.LogRecord:
    return logging.LogRecord(
        "zasync.dispatcher", logging.INFO, __file__, 1, "started %s", ("w",), None
    )


def test_the_zconfig_format_writes_the_same_line_as_the_command() -> None:
    record = a_record()
    line = logging.Formatter(TEXT_FORMAT).format(record)
    assert LINE.match(line)
    assert logging.Formatter(ZCONFIG_FORMAT, ZCONFIG_DATEFORMAT).format(record) == line


@pytest.mark.parametrize("example", ["cluster/instance", "run"])
def test_the_example_instances_log_the_same_line(example: str) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(EXAMPLES / example / "etc" / "zope.ini")
    section = ini["formatter_generic"]
    formatter = logging.Formatter(section["format"], section.get("datefmt"))
    record = a_record()
    assert formatter.format(record) == logging.Formatter(TEXT_FORMAT).format(record)


def eventlog_format(path: Path) -> tuple[str, str]:
    """The ``format`` and ``dateformat`` of the eventlog of a ZConfig file."""
    text = path.read_text()
    section = text[text.index("<eventlog>") : text.index("</eventlog>")]
    found = dict(
        line.strip().split(None, 1)
        for line in section.splitlines()
        if line.strip().startswith(("format ", "dateformat "))
    )
    return found["format"], found["dateformat"]


def test_the_example_zeo_servers_log_the_same_line() -> None:
    for path in (
        EXAMPLES / "cluster" / "zeo.conf",
        EXAMPLES / "deploy" / "systemd" / "zeo.conf",
    ):
        assert eventlog_format(path) == (ZCONFIG_FORMAT, ZCONFIG_DATEFORMAT), path


def test_a_zeo_server_from_the_cluster_example_logs_the_same_line(tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, EXAMPLE_VAR=str(tmp_path), ZEO_ADDRESS=f"127.0.0.1:{port}")
    env.pop("INSTANCE_HOME", None)  # set by Zope in this process, not by a shell
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ZEO.runzeo",
            "-C",
            str(EXAMPLES / "cluster" / "zeo.conf"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert server.stderr is not None
        first = server.stderr.readline()  # blocks until the server logs
    finally:
        server.terminate()
        server.wait(30)
    assert LINE.match(first), first
    assert " INFO ZEO." in first


def test_the_command_logs_the_same_line(tmp_path) -> None:
    path = tmp_path / "Data.fs"
    db = open_db(str(path))
    zasync.install(db)
    db.close()
    result = run_zasync("--log-level", "INFO", "jobs", "--db", str(path))
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines and all(LINE.match(line) for line in lines), result.stderr
