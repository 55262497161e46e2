"""``--log-format json``: one JSON object a line, with the job's fields on
records about a job; a real worker's log line parsed back."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from tests import mp_jobs
from tests.processes import run_zasync

import zasync
from zasync.logformat import configure, json_formatter, worker_field
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
