"""``zasync worker --processes N`` and ``--name``: the flags, their checks
where they enter, and the children the supervisor
(:mod:`zasync.cli.supervisor`) runs: their commands and UUID files."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid as uuid_module

from zasync.cli.supervisor import (
    MAX_PROCESSES,
    Supervisor,
    child_name,
    child_uuid,
    write_uuid_file,
)
from zasync.identity import load_or_create, uuid_file_from_env
from zasync.storage import parse_uri

#: the longest worker name --name takes
MAX_NAME = 100
#: storages one process opens at a time: --processes 1 only
SINGLE_PROCESS_KINDS = {
    "file": "a FileStorage is opened by one process only",
    "memory": "a memory:// database lives inside one process",
}


def process_count(text: str) -> int:
    """An argparse type: a number of worker processes, 1 to MAX_PROCESSES."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number: give a number of processes, e.g. 2"
        ) from None
    if not 1 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"{value} processes: use 1 to {MAX_PROCESSES} (one per CPU core "
            f"at most; more threads with --threads for jobs that wait on I/O)"
        )
    return value


def worker_name(text: str) -> str:
    """An argparse type: a worker's name, as ``zasync status`` shows it."""
    name = text.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a worker name: use 1 to {MAX_NAME} printable "
            f"characters, e.g. reports or host-a"
        )
    return name


def add_flags(worker: argparse.ArgumentParser) -> None:
    """--processes, --name and the children's --supervisor-fd."""
    worker.add_argument(
        "--processes",
        type=process_count,
        default=1,
        metavar="N",
        help="run N worker processes under this command (default 1; a ZEO "
        "or RelStorage database), each restarted if it dies",
    )
    worker.add_argument(
        "--name",
        type=worker_name,
        default=None,
        metavar="NAME",
        help="the worker's name in `zasync status` (default: host:pid; with "
        "--processes N: NAME-1..NAME-N)",
    )
    # The supervisor's link, given to its children (zasync.cli.supervisor).
    worker.add_argument(
        "--supervisor-fd", type=int, default=None, help=argparse.SUPPRESS
    )


def check_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A usage error for --processes N that cannot work with the other
    flags, naming the fix."""
    count = args.processes
    if count == 1:
        return
    if args.zope_conf:
        if not (args.uuid_file or uuid_file_from_env()):
            parser.error(
                f"worker: --processes {count} with --zope-conf needs "
                f"--uuid-file FILE (or ZASYNC_UUID in the environment): the "
                f"processes' UUIDs are derived from it, so that each keeps its "
                f"own across restarts"
            )
    else:
        spec = parse_uri(args.db)
        why = SINGLE_PROCESS_KINDS.get(spec.kind)
        if why is not None:
            parser.error(
                f"worker: --processes {count} with --db {spec.display}: {why}; "
                f"serve it from a ZEO server (zeo://host:port) or use RelStorage "
                f"(postgresql://...) to run several processes, or run one with "
                f"more --threads"
            )
    if args.metrics_port and args.metrics_port + count - 1 > 65535:
        parser.error(
            f"worker: --metrics-port {args.metrics_port} with --processes "
            f"{count}: the processes serve ports {args.metrics_port} to "
            f"{args.metrics_port + count - 1}; choose a lower port"
        )


def supervise(args: argparse.Namespace) -> int:
    """Run --processes N children until a stop signal; the exit code."""
    directory = None
    base_file = args.uuid_file or uuid_file_from_env()
    if base_file:
        base = load_or_create(base_file)
        files = [base_file] + [f"{base_file}.{i}" for i in range(2, args.processes + 1)]
    else:
        # No UUID file: UUIDs for this run only, as a worker without one.
        base = str(uuid_module.uuid4())
        directory = tempfile.mkdtemp(prefix="zasync-worker-")
        files = [
            os.path.join(directory, f"process-{i}.uuid")
            for i in range(1, args.processes + 1)
        ]
    for index, path in enumerate(files, 1):
        write_uuid_file(path, child_uuid(base, index))
    env = dict(os.environ)
    if args.db:  # in the environment: a password stays out of `ps`
        env["ZASYNC_DB"] = args.db
    commands = [child_command(args, index, path) for index, path in enumerate(files, 1)]
    try:
        return Supervisor(commands, stop_timeout=args.stop_timeout, env=env).run()
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def child_command(args: argparse.Namespace, index: int, uuid_file: str) -> list[str]:
    """The ``zasync worker`` command of child ``index`` (from 1)."""
    command = [sys.executable, "-m", "zasync"]
    if args.log_level:
        command += ["--log-level", args.log_level]
    command += ["worker", "--uuid-file", uuid_file]
    # The flags a Zope worker takes as well (zasync.cli.worker's
    # ZOPE_ENVIRONMENT), then the other dispatcher flags of a --db worker.
    command += [
        "--interrupt-grace",
        repr(args.interrupt_grace),
        "--stuck-delay",
        repr(args.stuck_delay),
        "--memory-trim-interval",
        repr(args.memory_trim_interval),
    ]
    if args.zope_conf:
        command += ["--zope-conf", args.zope_conf]
    else:
        command += [
            "--poll-interval",
            repr(args.poll_interval),
            "--heartbeat",
            repr(args.heartbeat),
            "--lease",
            repr(args.lease),
            "--maintenance-interval",
            repr(args.maintenance_interval),
            "--retention-days",
            repr(args.retention_days),
            "--metrics-addr",
            args.metrics_addr,
        ]
        for queue in args.queue:
            command += ["--queue", queue]
    name = child_name(args.name, index, args.processes)
    if name is not None:
        command += ["--name", name]
    if args.threads:
        command += ["--threads", str(args.threads)]
    for module in args.imports:
        command += ["--import", module]
    if args.metrics_port is not None:
        port = args.metrics_port and args.metrics_port + index - 1
        command += ["--metrics-port", str(port)]
    return command + [
        "--stop-timeout",
        repr(args.stop_timeout),
        "--log-format",
        args.log_format,
    ]
