"""zasync.identity: the worker's UUID file."""

from __future__ import annotations

import threading
import uuid

import pytest

from zasync.identity import load_or_create, worker_uuid
from zasync.interfaces import ConfigurationError


def test_the_uuid_is_made_once_and_kept(tmp_path):
    path = tmp_path / "var" / "worker.uuid"
    first = load_or_create(str(path))
    assert uuid.UUID(first) and path.read_text() == first + "\n"
    assert load_or_create(str(path)) == first
    assert list(path.parent.iterdir()) == [path]  # no draft left behind


def test_the_file_is_named_by_the_environment(tmp_path):
    path = tmp_path / "w.uuid"
    made = worker_uuid(environ={"ZC_ASYNC_UUID": str(path)})
    assert worker_uuid(environ={"ZASYNC_UUID": str(path)}) == made
    assert worker_uuid(str(path), environ={}) == made


def test_a_file_without_a_uuid_is_refused(tmp_path):
    path = tmp_path / "w.uuid"
    path.write_text("# made by hand\nnot a uuid\n")
    with pytest.raises(ConfigurationError, match="does not hold a UUID"):
        load_or_create(str(path))


def _race(path: str, starters: int = 4) -> tuple[list[str], list[BaseException]]:
    barrier = threading.Barrier(starters)
    found: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            found.append(load_or_create(path))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return found, errors


def test_workers_starting_at_once_agree_on_one_uuid(tmp_path):
    for round_ in range(30):
        found, errors = _race(str(tmp_path / f"{round_}.uuid"))
        assert errors == [] and len(set(found)) == 1
