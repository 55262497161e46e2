"""Jobs for tests/test_reliability.py: each counts its calls in the worker
thread (``calls``), and some join a resource whose commit fails."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import transaction

_lock = threading.Lock()
#: calls per key, counted when the job starts (a rerun counts again)
calls: Counter[str] = Counter()


def _count(key: str) -> None:
    with _lock:
        calls[key] += 1


class FailsToCommit:
    """A resource (a mail or SQL data manager, say) whose commit fails in
    ``phase`` ('vote': before anything is committed; 'finish': after the
    database's part committed, as a storage whose second phase fails)."""

    def __init__(self, phase: str, message: str = "injected commit failure"):
        self.phase = phase
        self.message = message
        self.transaction_manager = transaction.manager

    def sortKey(self) -> str:  # noqa: N802 - transaction's API
        return "~zz-fails-to-commit"  # after the ZODB connection

    def abort(self, txn: Any) -> None:
        pass

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        if self.phase == "vote":
            raise RuntimeError(self.message)

    def tpc_finish(self, txn: Any) -> None:
        if self.phase == "finish":
            raise RuntimeError(self.message)

    def tpc_abort(self, txn: Any) -> None:
        pass


def counted(key: str) -> str:
    _count(key)
    return key


def commit_fails(key: str, phase: str) -> str:
    """Counts its call, then joins a resource whose commit fails."""
    _count(key)
    transaction.get().join(FailsToCommit(phase))
    return key


def commits_then_raises(key: str, counter: Any) -> None:
    """Writes, commits its transaction itself, then raises."""
    _count(key)
    counter.value += 1
    transaction.commit()
    raise ValueError(f"{key}: its own error, after its own commit")


def commits_then_returns(key: str, counter: Any) -> str:
    _count(key)
    counter.value += 1
    transaction.commit()
    return f"{key} done"
