"""``zasync jobs ... | head``: the command ends quietly when the reader of
its output goes away (a real pipe, closed after one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import transaction
from tests.processes import ROOT, subprocess_env

from zasync.cli.exitcodes import EXIT_BROKEN_PIPE
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db

JOBS = 2000  # their listing is far more than a pipe's buffer (64 KiB)


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path: Path):
    uri = str(tmp_path / "Data.fs")
    db = open_db(uri)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    queue = conn.root()[KEY][""]
    for i in range(JOBS):
        queue.put(Job(len, "x" * i))
    tm.commit()
    conn.close()
    db.close()

    command = subprocess.Popen(
        [sys.executable, "-m", "zasync", "jobs", "--db", uri, "--limit", str(JOBS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert command.stdout is not None and command.stderr is not None
    # The command blocks on the full pipe until this reader closes it, so
    # its next write fails: as `| head -1` does.
    first = command.stdout.readline()
    command.stdout.close()
    stderr = command.stderr.read().decode()
    assert command.wait(timeout=60) == EXIT_BROKEN_PIPE, stderr
    assert first.split()[0] == b"id"
    assert stderr == ""
