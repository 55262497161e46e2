"""``make demo`` (``zasync demo``), run twice in subprocesses on one
FileStorage: one worker, the jobs it says it queued, progress shown once
per step."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.processes import run_zasync

EXIT_OK = 0


def demo(db: Path) -> str:
    result = run_zasync("demo", "--db", str(db), "--jobs", "5")
    assert result.returncode == EXIT_OK, result.stderr
    return result.stdout


def test_runs_reuse_one_worker_and_count_what_status_counts(tmp_path: Path):
    db = tmp_path / "var" / "Data.fs"
    first = demo(db)
    uuid_file = tmp_path / "var" / "demo-worker.uuid"
    uuid = uuid_file.read_text().strip()

    status = json.loads(run_zasync("status", "--db", str(db), "--json").stdout)
    queued = int(re.search(r"^queued (\d+) jobs", first, re.MULTILINE).group(1))
    done = status["throughput"]["15m"]
    assert queued == done["completed"] + done["failed"]

    demo(db)
    status = json.loads(run_zasync("status", "--db", str(db), "--json").stdout)
    assert [w["uuid"] for w in status["workers"]] == [uuid]
    done = status["throughput"]["15m"]
    assert done["completed"] + done["failed"] == 2 * queued


def test_each_progress_line_is_printed_once(tmp_path: Path):
    out = demo(tmp_path / "Data.fs")
    progress = [line for line in out.splitlines() if "slow_sum: " in line]
    assert progress
    assert len(progress) == len(set(progress)), out


def test_a_uuid_file_can_be_named(tmp_path: Path):
    named = tmp_path / "elsewhere" / "worker.uuid"
    result = run_zasync(
        "demo",
        "--db",
        str(tmp_path / "Data.fs"),
        "--jobs",
        "1",
        "--uuid-file",
        str(named),
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert named.read_text().strip() in result.stderr
    assert not (tmp_path / "demo-worker.uuid").exists()
