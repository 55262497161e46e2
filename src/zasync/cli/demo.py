"""``zasync demo``: a worker and a small batch of jobs, to watch
(:mod:`zasync.demo`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from zasync.cli.options import add_db, positive_int
from zasync.identity import load_or_create
from zasync.uri import parse_uri

#: the demo worker's UUID file, next to a FileStorage
UUID_FILE_NAME = "demo-worker.uuid"


def add_parser(sub: Any) -> None:
    """The ``demo`` command, on ``sub``."""
    command = sub.add_parser("demo", help="run a worker and a small demo batch")
    add_db(command)
    command.add_argument("--jobs", type=positive_int, default=20)
    command.add_argument(
        "--uuid-file",
        metavar="PATH",
        help=f"the demo worker's UUID file, so that every run is one worker "
        f"(default: {UUID_FILE_NAME} next to a FileStorage; on another "
        f"database, a new worker each run)",
    )


def demo_uuid_file(db: str, uuid_file: str | None) -> str | None:
    """The UUID file of the demo worker on ``db``: ``uuid_file``, else
    ``demo-worker.uuid`` in the directory of a FileStorage; None for another
    database. (Not ZASYNC_UUID: that names a real worker's.)"""
    if uuid_file:
        return uuid_file
    spec = parse_uri(db)
    if spec.kind == "file" and spec.path:
        return os.path.join(os.path.dirname(os.path.abspath(spec.path)), UUID_FILE_NAME)
    return None


def run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync demo``: its exit code is the demo's."""
    # The demo waits with zasync.testing, whose fixtures load pytest: only
    # this command pays for it, not every worker the CLI starts.
    from zasync import demo  # noqa: PLC0415 - keeps pytest out of workers

    path = demo_uuid_file(args.db, args.uuid_file)
    uuid = load_or_create(path) if path else None
    return demo.run_demo(args.db, jobs=args.jobs, uuid=uuid)
