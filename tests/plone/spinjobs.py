"""Plone job functions that never check (stored in jobs by reference:
import this module as ``tests.plone.spinjobs``): what the watchdog
interrupts or abandons."""

from __future__ import annotations

import threading
import time

#: set by a test to let ``blocked`` jobs return
release = threading.Event()
#: tokens of the jobs that started
started: set[str] = set()


def spin(context, token: str, seconds: float = 60.0) -> str:
    """Spin in pure Python for up to ``seconds``, never calling
    zasync.local."""
    started.add(token)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "spun to the end"


def blocked(context, token: str) -> str:
    """Block in C code (an Event's lock) until the test sets ``release``
    (at most a minute)."""
    started.add(token)
    release.wait(60)
    return "released"
