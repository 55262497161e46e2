"""A worker hands the memory its jobs freed back to the system
(zasync.memory): at most once per interval, and only after jobs ran."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import transaction

import jobfuncs
import zasync
from zasync import memory
from zasync.cli.exitcodes import EXIT_USAGE
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY, ConfigurationError
from zasync.memory import MemoryTrimmer
from zasync.testing import wait_for_result, wait_until

needs_glibc = pytest.mark.skipif(
    memory.malloc_trim is None, reason="the C library has no malloc_trim"
)


@needs_glibc
def test_trims_once_per_interval_and_only_after_jobs_ran():
    trimmer = MemoryTrimmer(10.0)
    assert trimmer.enabled
    assert not trimmer.after(100.0, 0)  # no job ran yet
    assert trimmer.after(101.0, 5)
    assert not trimmer.after(105.0, 9)  # within the interval
    assert trimmer.after(111.0, 9)
    assert not trimmer.after(200.0, 9)  # idle since: nothing to give back
    assert trimmer.trims == 2
    assert trimmer.seconds > 0


def test_an_interval_of_zero_never_trims():
    trimmer = MemoryTrimmer(0)
    assert not trimmer.enabled
    assert not any(trimmer.after(float(t), t) for t in range(1, 100, 7))
    assert trimmer.trims == 0


@needs_glibc
def test_a_working_dispatcher_trims_and_an_idle_one_does_not(zasync_db):
    dispatcher = Dispatcher(
        zasync_db, threads=1, heartbeat_interval=60, memory_trim_interval=5
    ).start(loop=False)
    conn = zasync_db.open()
    try:
        dispatcher.step(1000.0)
        dispatcher.step(2000.0)
        assert dispatcher.trimmer.trims == 0  # idle: no job ran
        job = conn.root()[KEY][""].put(zasync.Job(jobfuncs.add, 1, 2))
        transaction.commit()
        assert wait_for_result(job, 10) == 3
        wait_until(lambda: dispatcher.jobs_run == 1, message="the job to be counted")
        dispatcher.step(3000.0)
        assert dispatcher.trimmer.trims == 1
        dispatcher.step(4000.0)  # no job since
        assert dispatcher.trimmer.trims == 1
    finally:
        transaction.abort()
        conn.close()
        dispatcher.stop(10)


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "10"])
def test_a_bad_interval_is_refused_naming_the_setting(zasync_db, value):
    with pytest.raises(
        ConfigurationError, match=r"memory_trim_interval=.*positive, finite number"
    ):
        Dispatcher(zasync_db, memory_trim_interval=value)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "often"])
def test_the_worker_command_refuses_a_bad_interval(tmp_path, value):
    done = subprocess.run(
        [sys.executable, "-m", "zasync", "worker", "--db", str(tmp_path / "Data.fs")]
        + ["--memory-trim-interval", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_USAGE
    assert "argument --memory-trim-interval:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "Data.fs").exists()  # refused before opening it
