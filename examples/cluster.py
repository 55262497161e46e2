"""``make cluster``: the ZEO set-up of examples/cluster on this machine,
with one command: a ZEO server, the Plone site (created on the first
start), one instance serving http://localhost:8080/Plone and queueing
jobs, two workers running them (``zasync worker --zope-conf``).

    python examples/cluster.py [--port 8080] [--zeo-port 8100] [--var var/cluster]

Each process logs to a file in the var directory; this script says when
they are up, prints the login, and stops them all on Ctrl-C (or SIGTERM):
the workers first (running jobs may finish, up to 30 s), then the
instance, then the ZEO server. If one of them dies, it stops the others
and exits 1, quoting that process's log.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLUSTER = HERE / "cluster"
BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0
WORKERS = ("worker-1", "worker-2")


class ClusterError(RuntimeError):
    """A process of the cluster did not start, or died."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="HTTP (default 8080)")
    parser.add_argument(
        "--zeo-port", type=int, default=8100, help="ZEO server (default 8100)"
    )
    parser.add_argument(
        "--var", default="var/cluster", help="data and logs (default var/cluster)"
    )
    return parser.parse_args(argv)


class Process:
    """A process of the cluster, its output in ``<var>/<name>.log``."""

    def __init__(self, name: str, command: list[str], *, var: Path, env: dict):
        self.name = name
        self.command = command
        self.log_path = var / f"{name}.log"
        self.env = env
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Ctrl-C reaches this script alone, which stops the
                # processes in order (the workers before their database).
                start_new_session=True,
            )
        self._offset = 0
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with code {self.popen.returncode}; the "
                f"end of {self.log_path}:\n{self.tail()}"
            )

    def stop(self, signum: int, timeout: float) -> int | None:
        """Send ``signum``, wait up to ``timeout`` s, then kill."""
        if not self.alive():
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} did not stop within {timeout:g} s: killed")
            self.popen.kill()
            return self.popen.wait()


def wait_for(what: str, predicate, *, processes, timeout: float = START_TIMEOUT):
    """Poll ``predicate`` until true, checking that ``processes`` live."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        for process in processes:
            process.check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not ready within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run(args: argparse.Namespace) -> int:
    var = Path(args.var).absolute()
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        EXAMPLE_HOME=str(CLUSTER),
        EXAMPLE_VAR=str(var),
        ZEO_ADDRESS=f"127.0.0.1:{args.zeo_port}",
    )
    site = env.get("PLONE_SITE") or "Plone"
    user = env.get("ADMIN_USER") or "admin"
    password = env.get("ADMIN_PASSWORD") or "admin"
    python = sys.executable
    zeo = Process(
        "zeo",
        [python, "-m", "ZEO.runzeo", "-C", str(CLUSTER / "zeo.conf")],
        var=var,
        env=env,
    )
    instance = Process(
        "instance",
        [
            str(BIN / "runwsgi"),
            str(CLUSTER / "instance" / "etc" / "zope.ini"),
            f"http_port={args.port}",
        ],
        var=var,
        env=env,
    )
    workers = [
        Process(
            name,
            [
                python,
                "-m",
                "zasync",
                "worker",
                "--zope-conf",
                str(CLUSTER / "worker" / "etc" / f"{name}.conf"),
            ],
            var=var,
            env=env,
        )
        for name in WORKERS
    ]
    creator = Process(
        "create-site",
        [
            str(BIN / "zconsole"),
            "run",
            str(CLUSTER / "instance" / "etc" / "zope.conf"),
            str(HERE / "create_site.py"),
        ],
        var=var,
        env=env,
    )
    started: list[Process] = []
    try:
        print(f"  ZEO server on {env['ZEO_ADDRESS']} ({var / 'Data.fs'})")
        started.append(zeo.start())
        wait_for("the ZEO server", lambda: accepts(args.zeo_port), processes=[zeo])
        print(f"  the site {site}, with zasync (created on the first start)")
        started.append(creator.start())
        wait_for("the site", lambda: not creator.alive(), processes=[zeo])
        started.remove(creator)
        if creator.popen.returncode != 0:
            creator.check()
        print(
            f"  the instance on http://localhost:{args.port} and {len(workers)} workers"
        )
        started.append(instance.start())
        started += [worker.start() for worker in workers]
        url = f"http://127.0.0.1:{args.port}/{site}"
        wait_for("the instance", lambda: answers(url), processes=started)
        for worker in workers:
            wait_for(
                worker.name,
                lambda w=worker: "Ctrl-C to stop" in w.log_text(),
                processes=started,
            )
        print(
            f"\n  Plone with zasync: http://localhost:{args.port}/{site}"
            f"  (log in as {user} / {password})\n"
            f"  queue a demo job:  http://localhost:{args.port}/{site}"
            f"/@@zasync-demo-queue\n"
            f"  jobs and workers:  {BIN / 'zasync'} status --db "
            f"zeo://{env['ZEO_ADDRESS']}\n"
            f"  logs: {var}/{{zeo,instance,worker-1,worker-2}}.log\n"
            f"  Ctrl-C to stop\n",
            flush=True,
        )
        while True:  # until Ctrl-C (KeyboardInterrupt) or a process dies
            time.sleep(0.5)
            for process in started:
                process.check()
    except KeyboardInterrupt:
        return 0
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all(workers=workers, others=[instance, creator, zeo])


def stop_all(*, workers: list[Process], others: list[Process]) -> None:
    """Stop the workers (SIGTERM: running jobs may finish), then the
    others in order; a second Ctrl-C kills what is left."""
    everything = [*workers, *others]

    def kill_all(signum, frame):
        print("  killing what is left", flush=True)
        for process in everything:
            if process.alive():
                process.popen.kill()

    signal.signal(signal.SIGINT, kill_all)
    signal.signal(signal.SIGTERM, kill_all)
    print("  stopping: workers, instance, ZEO server", flush=True)
    for worker in workers:
        if worker.alive():
            worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.stop(signal.SIGTERM, 40)
    for process in others:
        # runwsgi closes its database on SIGINT, not on SIGTERM
        process.stop(
            signal.SIGINT if process.name == "instance" else signal.SIGTERM, 20
        )
    print("  stopped", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt  # stops as Ctrl-C does

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C, even when started with SIGINT ignored (in the background):
    # the processes started from here then get SIGINT's default, and the
    # instance (runwsgi) stops cleanly on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:  # while stopping: stop_all handles signals
        return 0


if __name__ == "__main__":
    sys.exit(main())
