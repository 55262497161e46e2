"""Starting, releasing and stopping the child processes of the workloads
(the entry points of benchmarks/procs/, and ``python -m zasync worker``).

Workers are either the real command, ``python -m zasync worker``, or
``python -m benchmarks.procs.worker``, which opens the database and then
waits for ``go`` on its standard input before it starts its dispatcher, so
that several workers start together and the time of their start is known.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.jobs import ENV

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


#: what ``zasync worker`` logs once its dispatcher runs
WORKER_READY = "zasync worker ready"


class ProcessFailedError(RuntimeError):
    """A helper process exited early or did not say it was ready."""


def bench_env(stamps: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env[ENV] = str(stamps)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, all threads: from the scheduler's
    nanosecond counts where the kernel has them, else from the clock
    ticks of /proc/PID/stat (10 ms steps). Threads that ended are
    counted by the ticks only, so use this on long-lived processes."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def server_cpu_seconds(store) -> float | None:
    """CPU time so far of a setup's server process (ZEO); None when the
    setup has none of its own (FileStorage in process, PostgreSQL)."""
    return None if store.server_pid is None else cpu_seconds(store.server_pid)


class Proc:
    """A child process whose standard output says when it is ready."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        stamps: Path,
        log: Path,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")  # closed in wait()
        self._log_start = self._log.tell()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
            env=bench_env(stamps, env),
            start_new_session=True,  # a Ctrl-C of the harness is not theirs
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_line(self, timeout: float = 60.0) -> str:
        """The next line of the child's standard output."""
        deadline = time.monotonic() + timeout
        out = self.popen.stdout
        buffer = b""
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessFailedError(
                    f"{self.name}: no answer in {timeout:g} s{self.tail()}"
                )
            ready, _, _ = select.select([out], [], [], remaining)
            if ready:
                byte = os.read(out.fileno(), 1)
                if not byte:
                    self.popen.wait(5)
                    raise ProcessFailedError(
                        f"{self.name} exited with code {self.popen.returncode}"
                        f"{self.tail()}"
                    )
                buffer += byte
        return buffer.decode().strip()

    def wait_in_log(
        self, text: str, timeout: float = 60.0, *, printed: str | None = None
    ) -> str:
        """Wait until the child's log (its standard error) says ``text``,
        or (given ``printed``) its standard output prints a line starting
        with ``printed``; return the line."""
        deadline = time.monotonic() + timeout
        while True:
            if printed is not None and select.select([self.popen.stdout], [], [], 0)[0]:
                line = self.read_line(max(deadline - time.monotonic(), 1.0))
                if line.startswith(printed):
                    return line
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                for line in f.read().decode(errors="replace").splitlines():
                    if text in line:
                        return line
            if self.popen.poll() is not None:
                raise ProcessFailedError(
                    f"{self.name} exited with code {self.popen.returncode}{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise ProcessFailedError(
                    f"{self.name}: no {text!r} in {timeout:g} s{self.tail()}"
                )
            time.sleep(0.02)

    def send(self, line: str) -> None:
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def cpu_seconds(self) -> float:
        """CPU time of the process so far: see :func:`cpu_seconds`."""
        return cpu_seconds(self.pid)

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return ": " + " | ".join(lines[-6:]) if lines else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.wait()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        code = self.popen.wait(timeout)
        for stream in (self.popen.stdin, self.popen.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._log.close()
        return code


def cli_worker(
    uri: str,
    *,
    stamps: Path,
    log: Path,
    name: str = "worker",
    threads: int = 4,
    uuid_file: Path | None = None,
    processes: int = 1,
) -> Proc:
    """``python -m zasync worker``, returned once its dispatcher runs (its
    ready line, logged at INFO; the other INFO lines are of conflicts and
    retries); with ``processes`` > 1, once every process runs."""
    argv = [
        sys.executable,
        "-m",
        "zasync",
        "--log-level",
        "INFO",
        "worker",
        "--db",
        uri,
        "--threads",
        str(threads),
        "--import",
        "benchmarks.jobs",
    ]
    if uuid_file is not None:
        argv += ["--uuid-file", str(uuid_file)]
    if processes > 1:
        argv += ["--processes", str(processes)]
    proc = Proc(name, argv, stamps=stamps, log=log)
    try:
        # Versions before the ready line was logged printed "zasync worker
        # ..." on standard output instead (an A/B run's base may be one).
        ready = f"{WORKER_READY}: {processes} processes" if processes > 1 else None
        proc.wait_in_log(ready or WORKER_READY, printed="zasync worker")
    except ProcessFailedError:
        proc.kill()  # not left running when it was too slow to answer
        raise
    return proc


def gated_workers(
    uri: str, count: int, *, stamps: Path, logs: Path, threads: int = 4
) -> list[Proc]:
    """``count`` benchmarks.procs.worker processes, each with its database open
    and waiting for :func:`go`."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.procs.worker",
        "--db",
        uri,
        "--threads",
        str(threads),
    ]
    return gated("worker", [argv] * count, stamps=stamps, logs=logs)


def gated(name: str, argvs: list[list[str]], *, stamps: Path, logs: Path) -> list[Proc]:
    """A process for each of ``argvs`` (``name`` 1, 2...), each of which
    prints ``ready`` and then waits for :func:`go`; returned once all are
    ready (all killed if one is not)."""
    procs = []
    try:
        for index, argv in enumerate(argvs, 1):
            procs.append(
                Proc(
                    f"{name} {index}",
                    argv,
                    stamps=stamps,
                    log=logs / f"{name}-{index}.log",
                )
            )
        for proc in procs:
            if proc.read_line() != "ready":
                raise ProcessFailedError(f"{proc.name} did not get ready{proc.tail()}")
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


def go(procs: list[Proc]) -> float:
    """Release gated processes together; returns the time of the release."""
    started = time.time()
    for proc in procs:
        proc.send("go")
    return started


def stop_all(procs: list[Proc], timeout: float = 20.0) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout)


def run_child(module: str, args: list[str], *, work: Path, timeout: float) -> dict:
    """Run ``python -m benchmarks.procs.MODULE ARGS`` with its stamps in
    ``work``; return the JSON it printed last. Raises RuntimeError, quoting
    its error output, when it fails."""
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.procs.{module}", *args],
        cwd=ROOT,
        env=bench_env(work / "stamps"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode:
        raise RuntimeError(f"benchmarks.procs.{module} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_inproc(args: list[str], *, work: Path, timeout: float) -> dict:
    """:func:`run_child` of ``benchmarks.procs.inproc`` (setups where the
    worker runs in the process that holds the FileStorage)."""
    return run_child("inproc", args, work=work, timeout=timeout)
