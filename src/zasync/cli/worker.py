"""``zasync worker``: a worker in the foreground, on a database named by
``--db`` (the core engine) or in a Zope process (``--zope-conf``, Plone
jobs), until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import os
import socket
import sys
from typing import Any

from zasync import settings
from zasync.cli.database import open_database
from zasync.cli.exitcodes import EXIT_ERROR, EXIT_OK
from zasync.cli.ops import OpsError, add_worker_flags, start_metrics
from zasync.cli.options import add_db, positive_float, positive_int, seconds_or_zero
from zasync.cli.processes import add_flags, check_flags, supervise
from zasync.cli.signals import StopSignals, serve_until_signalled
from zasync.cli.supervisor import ParentLink
from zasync.dispatcher import Dispatcher
from zasync.identity import worker_uuid
from zasync.interfaces import ZasyncError
from zasync.logformat import worker_field
from zasync.uri import describe_uri

# The command's logger (records show as "zasync"), as zasync.cli.signals.
log = logging.getLogger("zasync")

#: threads of ``zasync worker --db`` unless --threads says otherwise
DEFAULT_WORKER_THREADS = 4
#: the flags that set the dispatcher, with their defaults: a --zope-conf
#: worker takes these settings from Zope, and refuses the flags
DISPATCHER_FLAGS: dict[str, Any] = {
    "queue": [],
    "poll_interval": settings.POLL_INTERVAL,
    "heartbeat": settings.HEARTBEAT_INTERVAL,
    "lease": settings.LEASE_SECONDS,
    "maintenance_interval": settings.MAINTENANCE_INTERVAL,
    "retention_days": settings.RETENTION / datetime.timedelta(days=1),
    "interrupt_grace": settings.INTERRUPT_GRACE,
    "stuck_delay": settings.STUCK_DELAY,
    "memory_trim_interval": settings.MEMORY_TRIM_INTERVAL,
}

#: dispatcher flags a Zope worker takes, as the variables it reads
ZOPE_ENVIRONMENT = {
    "interrupt_grace": "ZASYNC_INTERRUPT_GRACE",
    "stuck_delay": "ZASYNC_STUCK_DELAY",
    "memory_trim_interval": "ZASYNC_MEMORY_TRIM_INTERVAL",
}

EPILOG = """\
examples:
  zasync worker --db zeo://127.0.0.1:8100 --threads 8 --import myapp.jobs
  ZASYNC_UUID=var/worker.uuid zasync worker --db var/Data.fs
  zasync worker --zope-conf worker/etc/zope.conf
  zasync worker --db zeo://127.0.0.1:8100 --metrics-port 9108 --log-format json
  zasync worker --db zeo://127.0.0.1:8100 --processes 2 --name reports \
      --uuid-file var/worker.uuid

--processes N runs N worker processes under this one (a ZEO or RelStorage
database: a FileStorage opens in one process only), named NAME-1..NAME-N,
the first with the UUID file's UUID, the others with UUIDs derived from
it; each serves its own --metrics-port (PORT, PORT+1, ...). A process that
dies is restarted; SIGTERM stops them all.

--zope-conf runs Plone jobs: Zope starts from that zope.conf without
serving HTTP, and its site.zcml must include zasync.plone's
single_db_worker.zcml or multi_db_worker.zcml. The UUID file and the
threads then come from --uuid-file / --threads, else ZASYNC_UUID /
ZASYNC_THREADS (zope.conf's <environment> or the environment)."""


def add_parser(sub: Any) -> None:
    """The ``worker`` command, on ``sub`` (the parser's subparsers)."""
    worker = sub.add_parser(
        "worker",
        help="run a worker in the foreground",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = worker.add_mutually_exclusive_group()
    add_db(worker, group=source)
    source.add_argument(
        "--zope-conf",
        metavar="FILE",
        help="run Plone jobs in a Zope process started from this zope.conf "
        "(instead of --db; needs zasync[plone])",
    )
    worker.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=f"worker threads (default {DEFAULT_WORKER_THREADS}; with "
        f"--zope-conf: $ZASYNC_THREADS or 2)",
    )
    worker.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="serve this queue (repeatable; default: all queues)",
    )
    worker.add_argument(
        "--uuid-file",
        metavar="FILE",
        help="where the worker's UUID is kept (default: $ZASYNC_UUID)",
    )
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (your job functions; repeatable)",
    )
    add_flags(worker)
    _add_dispatcher_flags(worker)
    add_worker_flags(worker)


def _add_dispatcher_flags(worker: argparse.ArgumentParser) -> None:
    worker.add_argument(
        "--poll-interval",
        type=positive_float,
        default=DISPATCHER_FLAGS["poll_interval"],
        metavar="SECONDS",
    )
    worker.add_argument(
        "--heartbeat",
        type=positive_float,
        default=DISPATCHER_FLAGS["heartbeat"],
        metavar="SECONDS",
        help="idle heartbeat interval (default 60)",
    )
    worker.add_argument(
        "--lease",
        type=positive_float,
        default=DISPATCHER_FLAGS["lease"],
        metavar="SECONDS",
        help="lease on running jobs: a dead worker's jobs are rescued after it",
    )
    worker.add_argument(
        "--interrupt-grace",
        type=positive_float,
        default=DISPATCHER_FLAGS["interrupt_grace"],
        metavar="SECONDS",
        help="a job cancelled or past its timeout that has not stopped at its "
        "next check this long after is interrupted (default 5)",
    )
    worker.add_argument(
        "--stuck-delay",
        type=positive_float,
        default=DISPATCHER_FLAGS["stuck_delay"],
        metavar="SECONDS",
        help="an interrupted job that has not returned this long after is "
        "stuck: its thread is abandoned and replaced (default 30)",
    )
    worker.add_argument(
        "--memory-trim-interval",
        type=seconds_or_zero,
        default=DISPATCHER_FLAGS["memory_trim_interval"],
        metavar="SECONDS",
        help="while jobs run, hand the memory they freed back to the system "
        "this often (glibc's malloc_trim; 0: never; default 10)",
    )
    worker.add_argument(
        "--maintenance-interval",
        type=positive_float,
        default=DISPATCHER_FLAGS["maintenance_interval"],
        metavar="SECONDS",
        help="how often dead workers' jobs are looked for and finished "
        "jobs pruned (default 5)",
    )
    worker.add_argument(
        "--retention-days",
        type=positive_float,
        default=DISPATCHER_FLAGS["retention_days"],
        metavar="DAYS",
        help="keep finished jobs this long (default 7)",
    )
    worker.add_argument(
        "--stop-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for running jobs (default 30)",
    )


def check_zope_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--zope-conf (which argparse keeps apart from --db) excludes the
    dispatcher flags a Zope worker does not take: a usage error names the
    first one given."""
    refused = {
        **{k: v for k, v in DISPATCHER_FLAGS.items() if k not in ZOPE_ENVIRONMENT},
        "metrics_addr": "0.0.0.0",
    }
    for dest, default in refused.items():
        if getattr(args, dest) != default:
            flag = "--" + dest.replace("_", "-")
            parser.error(
                f"worker: {flag} cannot be used with --zope-conf (a Zope "
                f"worker's dispatcher has the default settings; only "
                f"--uuid-file, --threads, --processes, --name, --stop-timeout, "
                f"--interrupt-grace, --stuck-delay, --memory-trim-interval, "
                f"--metrics-port and --log-format apply)"
            )


def run_worker(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync worker``: serve until a signal; EXIT_OK when every running
    job finished within --stop-timeout."""
    check_flags(args, parser)
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            parser.error(f"--import {module}: {e}")
    if args.processes > 1:
        return supervise(args)
    link = None
    if args.supervisor_fd is not None:
        link = ParentLink(args.supervisor_fd)
        # Loaded while the first process prepares the database:
        if args.zope_conf and _import_zope() is None:
            return EXIT_ERROR
        if not link.wait_for_go():
            return EXIT_OK  # the supervisor is gone before this one began
        link.watch()
    if args.zope_conf:
        return _zope_worker(args, link)
    db = open_database(args)
    uuid = worker_uuid(args.uuid_file)
    threads = args.threads or DEFAULT_WORKER_THREADS
    dispatcher = Dispatcher(
        db,
        uuid=uuid,
        threads=threads,
        queue_names=tuple(args.queue) or None,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat,
        lease_seconds=args.lease,
        maintenance_interval=args.maintenance_interval,
        retention=datetime.timedelta(days=args.retention_days),
        interrupt_grace=args.interrupt_grace,
        stuck_delay=args.stuck_delay,
        memory_trim_interval=args.memory_trim_interval,
        name=args.name,
    )
    worker_field.uuid = uuid
    try:
        metrics = start_metrics(args, dispatcher)
    except OpsError as e:
        db.close()
        print(f"zasync worker: {e}", file=sys.stderr)
        return EXIT_ERROR
    signals = StopSignals().install()
    dispatcher.start()
    say_ready(
        args,
        uuid=uuid,
        threads=threads,
        storage=describe_uri(args.db),
        link=link,
    )

    def stop(timeout: float) -> bool:
        clean = dispatcher.stop(timeout)
        if metrics is not None:
            metrics.close()
        db.close()
        return clean

    return serve_until_signalled(signals, stop, args)


def say_ready(
    args: argparse.Namespace,
    *,
    uuid: str,
    threads: int,
    storage: str,
    link: ParentLink | None,
) -> None:
    """Log the worker's ready line (its dispatcher claims jobs from now
    on); tell the supervisor, if any."""
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    queues = ", ".join(repr(q) for q in args.queue) or "all queues"
    metrics = ""
    if args.metrics_port is not None:
        metrics = f", metrics on port {args.metrics_port}"
    log.info(
        "zasync worker ready: %s, uuid %s, %s, %d threads, storage %s%s; %s",
        name,
        uuid,
        queues,
        threads,
        storage,
        metrics,
        "stopped with its supervisor" if link else "Ctrl-C to stop",
    )
    if link is not None:
        link.ready()


def _import_zope() -> Any:
    """zasync.plone.zopeworker, or None when Zope and Plone are missing
    (a message says so)."""
    try:
        from zasync.plone import zopeworker  # noqa: PLC0415 - needs Zope (zasync[plone])
    except ImportError as e:
        print(
            f"zasync worker: --zope-conf needs Zope and Plone ({e}): "
            f"pip install -c constraints.txt 'zasync[plone]'",
            file=sys.stderr,
        )
        return None
    return zopeworker


def _zope_worker(args: argparse.Namespace, link: ParentLink | None) -> int:
    """``zasync worker --zope-conf``: Plone jobs in a Zope process."""
    zopeworker = _import_zope()
    if zopeworker is None:
        return EXIT_ERROR
    if args.metrics_port is not None:
        # read by zasync.plone.worker at start-up, as zope.conf would set it
        os.environ["ZASYNC_METRICS_PORT"] = str(args.metrics_port)
    for dest, variable in ZOPE_ENVIRONMENT.items():
        if getattr(args, dest) != DISPATCHER_FLAGS[dest]:
            os.environ[variable] = str(getattr(args, dest))
    signals = StopSignals().install()
    try:
        worker = zopeworker.start(
            args.zope_conf,
            uuid_file=args.uuid_file,
            threads=args.threads,
            name=args.name,
        )
    except ZasyncError:
        raise  # its message names the problem and the fix
    except Exception as e:
        # Zope's own start-up failed (a ConflictError of two processes
        # creating a new database's application at once...): close what it
        # opened, or the ZEO client's thread keeps the process alive.
        zopeworker.close_databases()
        print(
            f"zasync worker: Zope's start-up from {args.zope_conf} failed: "
            f"{type(e).__name__}: {' '.join(str(e).split())}; start it again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    worker_field.uuid = worker.uuid
    say_ready(
        args,
        uuid=worker.uuid,
        threads=worker.threads,
        storage=f"Zope ({args.zope_conf}, role {worker.role.name}, database "
        f"{worker.database_name!r})",
        link=link,
    )
    return serve_until_signalled(signals, worker.stop, args)
