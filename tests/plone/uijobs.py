"""Job functions for the tests of the jobs control panel and REST API
(stored in jobs by reference: import this module as ``tests.plone.uijobs``).

The worker threads run in the test's process: a test paces a job through
module-level gates keyed by a token it chooses.
"""

from __future__ import annotations

import threading
import time

from zasync import local

#: how long a job waits for a gate before it gives up (a test that failed
#: must not leave a worker thread blocked)
GATE_TIMEOUT = 60.0

_lock = threading.Condition()
_released: dict[str, int] = {}


def release(token: str, steps: int = 1) -> None:
    """Let the job waiting on ``token`` take ``steps`` more steps."""
    with _lock:
        _released[token] = _released.get(token, 0) + steps
        _lock.notify_all()


def _wait(token: str, step: int) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT
    with _lock:
        while _released.get(token, 0) < step:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"gate {token!r} not released for step {step}")
            _lock.wait(left)


#: local.progress() writes at most every half second (but the last report)
PROGRESS_INTERVAL = 0.55


def stepped(context, token: str, steps: int, hold: bool = False) -> str:
    """Take ``steps`` steps, each when the test releases it, reporting
    progress after each (spaced so that progress() writes every report);
    with ``hold``, wait for one more release after the last report."""
    local.progress(0, steps, f"waiting for step 1 of {steps}")
    reported = time.monotonic()
    for step in range(1, steps + 1):
        _wait(token, step)
        _pause_until(reported + PROGRESS_INTERVAL)
        local.progress(step, steps, f"step {step} of {steps} done")
        reported = time.monotonic()
    if hold:
        _wait(token, steps + 1)
    return f"{steps} steps done"


def _pause_until(when: float) -> None:
    with _lock:
        while (left := when - time.monotonic()) > 0:
            _lock.wait(left)


def fail_with(context, message: str) -> None:
    raise RuntimeError(message)


def echo(context, *args, **kwargs):
    return [list(args), kwargs]
