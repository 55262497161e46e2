"""Several worker processes under one command: ``zasync worker
--processes N``.

The supervisor (the command's own process) starts N children together,
each the same ``zasync worker`` command for one process, with a UUID of its own
(:func:`child_uuid`: the same index keeps the same UUID across restarts,
so a restarted child recovers its own jobs at once). The first opens the
database alone: a new one is prepared by it (Zope's application object,
zasync's queues), which processes starting together would each try to
create. The others load their code meanwhile and wait for the
supervisor's go, sent once the first is ready. It restarts a child
that exits while it is not stopping, after a pause that doubles while the
child keeps dying soon after its start. On SIGTERM or SIGINT it sends
SIGTERM to every child, waits for them (their ``--stop-timeout`` and a
margin), kills those still running and exits; a second SIGINT kills them at
once.

Each child holds one end of a socket pair whose other end only the
supervisor holds (:class:`ParentLink`): the child says there when it is
ready, and sees the end of the stream when the supervisor is gone, even
killed with SIGKILL, and then stops as on SIGTERM. A child that fails
before it was ever ready (bad settings, database unavailable) stops the
whole command with its exit code: restarting it would fail the same way.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from zasync.cli.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK

log = logging.getLogger(__name__)

#: the most processes ``--processes`` takes: more than a machine's cores
#: gain nothing and cost a process's memory each
MAX_PROCESSES = 64
#: seconds before a child that died is started again, doubled for each
#: death soon after a start, up to RESTART_MAX
RESTART_MIN = 1.0
RESTART_MAX = 30.0
#: a child that ran this long before it died is restarted after RESTART_MIN
STABLE_SECONDS = 60.0
#: seconds the supervisor waits for children beyond their --stop-timeout
#: (closing the database, their last log lines) before it kills them
STOP_MARGIN = 15.0
#: what a child writes on its link once it is ready
READY = b"ready\n"
#: what the supervisor writes on a child's link when it may open the database
GO = b"go\n"


def child_uuid(base: str, index: int) -> str:
    """The UUID of child ``index`` (from 1) of a supervisor whose UUID file
    holds ``base``: ``base`` itself for the first (so that ``--processes
    1`` and ``2`` share it), a UUID derived from it for the others, the
    same at every start."""
    if index == 1:
        return str(uuid_module.UUID(base))
    return str(uuid_module.uuid5(uuid_module.UUID(base), f"process-{index}"))


def child_name(name: str | None, index: int, count: int) -> str | None:
    """Child ``index``'s worker name: ``name`` alone, ``name-index`` among
    several, None without a name."""
    if name is None or count == 1:
        return name
    return f"{name}-{index}"


def restart_pause(failures: int) -> float:
    """Seconds before a child that died is started again, after
    ``failures`` deaths in a row soon after a start (0: it had run
    STABLE_SECONDS)."""
    return min(RESTART_MAX, RESTART_MIN * 2 ** max(0, failures - 1))


def write_uuid_file(path: str, value: str) -> None:
    """Write ``value`` into ``path`` whole (a reader never sees half a
    file), unless it holds it already."""
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == value:
                return
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    draft = f"{path}.{os.getpid()}.tmp"
    with open(draft, "w", encoding="ascii") as f:
        f.write(value + "\n")
    os.replace(draft, path)


def describe_exit(code: int) -> str:
    """A child's exit as people read it: its code, or the signal that
    killed it."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ParentLink:
    """A child's end of the link to its supervisor (file descriptor
    ``fd``, passed to the child)."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)

    def watch(self, on_gone: Callable[[], None] | None = None) -> None:
        """Call ``on_gone`` (default: send this process SIGTERM, the stop a
        signal asks) once the supervisor is gone, from a daemon thread."""
        thread = threading.Thread(
            target=self._watch,
            args=(on_gone or _terminate_self,),
            name="zasync-supervisor-link",
            daemon=True,
        )
        thread.start()

    def _watch(self, on_gone: Callable[[], None]) -> None:
        try:
            while self.sock.recv(64):
                pass
        except OSError:
            pass
        log.warning("the supervisor process is gone: stopping")
        on_gone()

    def wait_for_go(self) -> bool:
        """Wait until the supervisor says this process may open the
        database; False when the supervisor is gone. A SIGTERM meanwhile
        ends the process with EXIT_OK: it has started nothing."""
        previous = signal.signal(signal.SIGTERM, _exit_ok)
        received = b""
        try:
            while GO not in received:
                data = self.sock.recv(64)
                if not data:
                    return False
                received += data
            return True
        except OSError:
            return False
        finally:
            signal.signal(signal.SIGTERM, previous)

    def ready(self) -> None:
        """Tell the supervisor this worker is ready."""
        try:
            self.sock.sendall(READY)
        except OSError:
            pass  # the supervisor is gone: the watcher stops this process


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_ok(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_OK)


@dataclass
class Child:
    """One worker process of the supervisor, across its restarts."""

    index: int
    command: list[str]
    popen: subprocess.Popen | None = None
    link: socket.socket | None = None
    started: float = 0.0
    ready: bool = False
    was_ready: bool = False
    #: started, and not yet told it may open the database
    held: bool = False
    #: deaths soon after a start, in a row
    failures: int = 0
    next_start: float = 0.0
    buffer: bytes = field(default=b"", repr=False)


class Supervisor:
    """Runs ``commands`` (one argv per child; each gets ``--supervisor-fd
    FD`` appended) until a stop signal; :meth:`run` returns the exit
    code."""

    def __init__(
        self,
        commands: Sequence[list[str]],
        *,
        stop_timeout: float,
        env: dict[str, str] | None = None,
    ):
        self.children = [
            Child(index, list(command)) for index, command in enumerate(commands, 1)
        ]
        self.stop_timeout = stop_timeout
        self.env = env
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._all_ready_said = False

    # -- signals ------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        # A child's exit wakes the loop too (through the wakeup fd).
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    # -- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Start the children and keep them running until SIGTERM or
        SIGINT; then stop them. EXIT_OK when every child stopped cleanly;
        a child's own code when it failed before it was ever ready."""
        self._install_signals()
        try:
            failed = self._supervise()
            if failed is not None:
                self._stop_children()
                return failed
            return self._stop_children()
        finally:
            signal.set_wakeup_fd(-1)
            for child in self.children:
                self._close_link(child)
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _supervise(self) -> int | None:
        """Until a stop signal: None; or the exit code of a child that
        failed before it was ever ready."""
        while not self.signals:
            now = time.monotonic()
            for child in self.children:
                if self._startable(child) and now >= child.next_start:
                    self._start(child)
            self._wait(self._next_timeout(now))
            for child in self.children:
                if child.popen is not None and child.popen.poll() is not None:
                    failed = self._exited(child)
                    if failed is not None:
                        return failed
        return None

    def _startable(self, child: Child) -> bool:
        return child.popen is None

    def _next_timeout(self, now: float) -> float:
        waiting = [c.next_start - now for c in self.children if self._startable(c)]
        return max(0.0, min(waiting, default=5.0))

    def _wait(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            if key.data is None:
                try:
                    while self._wake_r.recv(512):
                        pass
                except BlockingIOError:
                    pass
            else:
                self._read_link(key.data)

    def _read_link(self, child: Child) -> None:
        assert child.link is not None
        try:
            data = child.link.recv(512)
        except OSError:
            data = b""
        if not data:
            self._close_link(child)  # the child is gone: poll() tells how
            return
        child.buffer += data
        if READY in child.buffer and not child.ready:
            child.ready = child.was_ready = True
            if child.index == 1:
                for other in self.children:
                    if other.held:
                        self._go(other)
            self._say_ready()

    def _go(self, child: Child) -> None:
        """Tell ``child`` it may open the database."""
        child.held = False
        assert child.link is not None
        try:
            child.link.sendall(GO)
        except OSError:
            pass  # it is gone: poll() tells how

    def _say_ready(self) -> None:
        if self._all_ready_said or not all(c.ready for c in self.children):
            return
        self._all_ready_said = True
        pids = ", ".join(str(c.popen.pid) for c in self.children if c.popen)
        log.info(
            "zasync worker ready: %d processes (pids %s); Ctrl-C to stop",
            len(self.children),
            pids,
        )

    def _start(self, child: Child) -> None:
        parent_end, child_end = socket.socketpair()
        fd = child_end.fileno()
        try:
            child.popen = subprocess.Popen(
                [*child.command, "--supervisor-fd", str(fd)],
                pass_fds=(fd,),
                env=self.env,
                stdin=subprocess.DEVNULL,
                # Ctrl-C reaches the supervisor alone, which stops them.
                process_group=0,
            )
        finally:
            child_end.close()
        child.link = parent_end
        child.started = time.monotonic()
        child.ready = False
        child.buffer = b""
        self.selector.register(parent_end, selectors.EVENT_READ, child)
        if child.index == 1 or self.children[0].was_ready:
            self._go(child)
        else:
            child.held = True
        log.info("worker process %d started (pid %d)", child.index, child.popen.pid)

    def _close_link(self, child: Child) -> None:
        if child.link is not None:
            self.selector.unregister(child.link)
            child.link.close()
            child.link = None

    def _exited(self, child: Child) -> int | None:
        """Note ``child``'s exit; schedule its restart, or return its code
        when it failed before it was ever ready."""
        assert child.popen is not None
        code = child.popen.returncode
        pid = child.popen.pid
        ran = time.monotonic() - child.started
        child.popen = None
        child.ready = child.held = False
        self._close_link(child)
        if not child.was_ready and code > 0:
            log.error(
                "worker process %d (pid %d) %s before it was ready: stopping "
                "(its messages above say why)",
                child.index,
                pid,
                describe_exit(code),
            )
            return code
        child.failures = 0 if ran >= STABLE_SECONDS else child.failures + 1
        pause = restart_pause(child.failures)
        child.next_start = time.monotonic() + pause
        log.warning(
            "worker process %d (pid %d) %s after %.0f s: restarting it in %g s",
            child.index,
            pid,
            describe_exit(code),
            ran,
            pause,
        )
        return None

    # -- stopping -----------------------------------------------------------

    def _stop_children(self) -> int:
        """SIGTERM to every child, wait, kill the late ones; EXIT_OK when
        each exited with 0."""
        running = [c for c in self.children if c.popen is not None]
        if self.signals:
            log.info(
                "%s received: stopping %d worker processes (up to %g s)",
                signal.Signals(self.signals[0]).name,
                len(running),
                self.stop_timeout,
            )
        for child in running:
            assert child.popen is not None
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout + STOP_MARGIN
        codes = [self._await(child, deadline) for child in running]
        return EXIT_OK if all(code == 0 for code in codes) else EXIT_ERROR

    def _await(self, child: Child, deadline: float) -> int:
        popen = child.popen
        assert popen is not None
        while popen.poll() is None:
            if self.signals.count(signal.SIGINT) > 1:
                self._kill_all("second interrupt")
                raise SystemExit(EXIT_INTERRUPTED)
            if time.monotonic() > deadline:
                log.warning(
                    "worker process %d (pid %d) still runs %g s after SIGTERM: "
                    "killed; its jobs go to recovery",
                    child.index,
                    popen.pid,
                    self.stop_timeout + STOP_MARGIN,
                )
                popen.kill()
                popen.wait()
                break
            self._wait(min(0.5, max(0.0, deadline - time.monotonic())))
        code = popen.returncode
        if code != 0:
            log.warning("worker process %d %s", child.index, describe_exit(code))
        return code

    def _kill_all(self, why: str) -> None:
        log.warning(
            "%s: killing the worker processes; running jobs go to recovery", why
        )
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.kill()
                child.popen.wait()
