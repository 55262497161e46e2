"""The Zope-side worker's metrics: ``ZASYNC_METRICS_PORT`` read at
start-up, and /metrics served by the dispatcher it starts."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

import zasync
from zasync.dispatcher import Dispatcher
from zasync.interfaces import ConfigurationError
from zasync.plone import worker
from zasync.storage import open_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("raw", ["x", "-1", "70000"])
def test_bad_port_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="ZASYNC_METRICS_PORT"):
        worker.WorkerSettings({"ZASYNC_METRICS_PORT": raw})


def test_port_read_once(tmp_path: Path) -> None:
    env = {"ZASYNC_METRICS_PORT": "9108", "ZASYNC_UUID": str(tmp_path / "uuid")}
    assert worker.WorkerSettings(env).metrics_port == 9108
    assert (
        worker.WorkerSettings({"ZASYNC_UUID": str(tmp_path / "u")}).metrics_port is None
    )


def test_metrics_served_for_the_dispatcher(tmp_path: Path) -> None:
    db = open_db(f"file://{tmp_path / 'Data.fs'}")
    zasync.install(db)
    dispatcher = Dispatcher(db, threads=1).start()
    port = free_port()
    metrics = worker.start_metrics(dispatcher, port)
    try:
        assert metrics is not None
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert f'zasync_threads{{worker="{dispatcher.uuid}"}} 1.0' in text
        assert worker.start_metrics(dispatcher, port) is None  # port taken: logged
    finally:
        if metrics is not None:
            metrics.close()
        dispatcher.stop(10)
        db.close()
