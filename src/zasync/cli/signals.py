"""How a ``zasync worker`` stops: on SIGTERM or SIGINT, waiting a while
for running jobs, with an exit code that says whether they all finished."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from zasync.cli.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK

# The command's logger (records show as "zasync"), not this module's.
log = logging.getLogger("zasync")


class StopSignals:
    """SIGTERM and SIGINT, once installed: the first asks the worker to
    stop (after its start-up, if it comes during it); a second SIGINT exits
    at once (code 130)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._stopping = threading.Event()

    def install(self) -> StopSignals:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if signum == signal.SIGINT and len(self.received) > 1:
            log.warning(
                "second interrupt: stopping at once; running jobs go to recovery"
            )
            os._exit(EXIT_INTERRUPTED)
        self._stopping.set()

    def wait(self) -> int:
        """Block until the first signal; return it."""
        while not self._stopping.wait(1.0):
            pass
        return self.received[0]


def serve_until_signalled(
    signals: StopSignals,
    stop: Callable[[float], bool],
    args: argparse.Namespace,
) -> int:
    """Wait for SIGTERM or SIGINT, then ``stop(--stop-timeout)``; the exit
    code says whether every running job finished."""
    signum = signals.wait()
    log.info(
        "%s received: stopping; waiting up to %g s for running jobs",
        signal.Signals(signum).name,
        args.stop_timeout,
    )
    clean = stop(args.stop_timeout)
    return EXIT_OK if clean else _log_unclean_stop(args)


def _log_unclean_stop(args: argparse.Namespace) -> int:
    log.warning(
        "exiting with code %d: jobs still running after --stop-timeout %g s "
        "are left to recovery (this worker's next start, or another worker "
        "when the lease ends)",
        EXIT_ERROR,
        args.stop_timeout,
    )
    return EXIT_ERROR
