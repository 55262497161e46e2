"""The operator's flags and commands: ``zasync worker --metrics-port`` and
``--log-format``, and ``zasync health`` (a liveness probe)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zasync import health
from zasync.cli.database import open_database
from zasync.cli.exitcodes import EXIT_ERROR, EXIT_OK
from zasync.cli.options import add_db, positive_float
from zasync.logformat import FORMATS
from zasync.storage import StorageError

OPS_EXTRA = "pip install 'zasync[ops]'"

HEALTH_EPILOG = """\
examples:
  zasync health --db zeo://127.0.0.1:8100 --all
  zasync health --db zeo://127.0.0.1:8100?wait_timeout=3 --worker 0e9c...
  zasync health --db postgresql://zodb@dbhost/zodb --all --max-age 120

exit codes: 0 healthy, 1 unhealthy or database unavailable (one line says
why), 2 bad usage. Without --worker or --all: the database answers. A
worker is fresh when seen within --max-age seconds (default: three of its
heartbeat intervals, 180 s by default). A FileStorage is locked by its
worker: check a ZEO or RelStorage database, or scrape --metrics-port."""


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (0-65535)")
    return value


def add_worker_flags(worker: argparse.ArgumentParser) -> None:
    """--metrics-port, --metrics-addr and --log-format of ``zasync worker``."""
    worker.add_argument(
        "--metrics-port",
        type=port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (needs "
        "zasync[ops]; default: no metrics)",
    )
    worker.add_argument(
        "--metrics-addr",
        default="0.0.0.0",
        metavar="ADDR",
        help="the address --metrics-port listens on (default 0.0.0.0)",
    )
    add_log_format(worker)


def add_log_format(parser: argparse.ArgumentParser) -> None:
    """--log-format text|json."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (default) or json: one JSON object a line, with the job's "
        "fields (needs zasync[ops])",
    )


def start_metrics(args: argparse.Namespace, dispatcher: Any) -> Any:
    """The Metrics serving ``dispatcher``'s on --metrics-port, or None
    without the flag. Raises OpsError when they cannot be served."""
    if args.metrics_port is None:
        return None
    try:
        from zasync.metrics import Metrics  # noqa: PLC0415 - optional: zasync[ops]
    except ImportError as exc:
        raise OpsError(f"--metrics-port needs prometheus-client ({exc}): {OPS_EXTRA}")
    metrics = Metrics()
    metrics.watch(dispatcher)
    try:
        metrics.serve(args.metrics_port, args.metrics_addr)
    except OSError as exc:
        raise OpsError(
            f"--metrics-port {args.metrics_port}: cannot listen on "
            f"{args.metrics_addr}:{args.metrics_port} ({exc.strerror or exc}); "
            f"choose a free port"
        ) from None
    return metrics.subscribe()


class OpsError(Exception):
    """An operator's flag could not be honoured: the message says which
    and what to do."""


def add_health_parser(sub: Any) -> None:
    """The ``health`` command."""
    parser = sub.add_parser(
        "health",
        help="exit 0 if the database answers and the workers are fresh",
        epilog=HEALTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--worker", metavar="UUID", help="this worker must be fresh")
    which.add_argument(
        "--all",
        action="store_true",
        help="every worker registered and not stopped must be fresh",
    )
    parser.add_argument(
        "--max-age",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="fresh: seen within this long (default: 3 heartbeat intervals)",
    )


def run_health(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync health``: EXIT_OK when healthy, else EXIT_ERROR; one line
    on stdout (healthy) or stderr (not) says why."""
    try:
        db = open_database(args)
    except StorageError as exc:
        print(f"zasync health: unhealthy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        result = health.check(
            db, worker=args.worker, all_workers=args.all, max_age=args.max_age
        )
    finally:
        db.close()
    if result.ok:
        print(f"zasync health: {result.message}")
        return EXIT_OK
    print(f"zasync health: unhealthy: {result.message}", file=sys.stderr)
    return EXIT_ERROR
