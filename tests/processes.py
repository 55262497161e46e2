"""Real processes for tests: ``zasync worker`` subprocesses and one-shot
CLI runs. (``wait_until``, imported from zasync.testing, polls with a
deadline: never a fixed sleep.)

Subprocesses import this checkout (the repository root is put first on
their PYTHONPATH), so ``--import tests.mp_jobs`` finds the job functions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from zasync.testing import wait_until

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("ZASYNC_UUID", None)
    env.pop("ZASYNC_DB", None)
    env.update(extra)
    return env


def run_zasync(
    *args: str, timeout: float = 60.0, cwd: str | os.PathLike | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m zasync ARGS`` to completion and return the result
    (text stdout and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "zasync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        cwd=cwd or ROOT,
    )


class WorkerProcess:
    """``python -m zasync worker`` in a subprocess, its output in a log file.

    ``start()`` returns once the worker says it runs (or fails, quoting the
    log). The ``workers`` fixture kills whatever is left after the test.
    """

    def __init__(
        self,
        uri: str,
        directory: Path,
        name: str,
        *,
        threads: int = 2,
        uuid_file: Path | None = None,
        args: Sequence[str] = (),
        imports: Sequence[str] = ("tests.mp_jobs",),
    ):
        self.uri = uri
        self.directory = Path(directory)
        self.name = name
        self.threads = threads
        self.uuid_file = uuid_file or self.directory / f"{name}.uuid"
        self.log_path = self.directory / f"{name}.log"
        self.args = list(args)
        self.imports = list(imports)
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    @property
    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "zasync",
            "worker",
            "--db",
            self.uri,
            "--threads",
            str(self.threads),
            "--uuid-file",
            str(self.uuid_file),
        ]
        for module in self.imports:
            command += ["--import", module]
        return command + self.args

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def uuid(self) -> str:
        return self.uuid_file.read_text().strip()

    def log(self, *, since_start: bool = False) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[self._log_offset :] if since_start else text

    def spawn(self) -> WorkerProcess:
        """Start the process without waiting for it to come up."""
        assert self.process is None or self.process.poll() is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=subprocess_env(),
                cwd=self.directory,
                start_new_session=True,
            )
        return self

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        """Start the worker; return once it runs."""
        self.spawn()

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker {self.name} exited with {self.process.returncode}:\n"
                    f"{self.log(since_start=True)}"
                )
            return "Ctrl-C to stop" in self.log(since_start=True)

        wait_until(
            up,
            timeout=timeout,
            message=lambda: (
                f"worker {self.name} to start:\n{self.log(since_start=True)}"
            ),
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL (a crash), and reap it."""
        if self.running():
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM; wait for the exit and return its code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} did not exit within {timeout:g} s:\n{self.log()}"
            ) from None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<WorkerProcess {self.name} pid {pid}>"


def json_results(procs: Sequence[subprocess.Popen], timeout: float = 120) -> list:
    """The JSON each of ``procs`` (started with text pipes) printed, in
    order; AssertionError with its error output for one that failed. Any
    still running at the end (after a failure) is killed."""
    import json

    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results
