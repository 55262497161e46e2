"""``zasync demo``: a worker and a small batch of jobs, to watch
(:mod:`zasync.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from zasync.cli.options import add_db, positive_int


def add_parser(sub: Any) -> None:
    """The ``demo`` command, on ``sub``."""
    command = sub.add_parser("demo", help="run a worker and a small demo batch")
    add_db(command)
    command.add_argument("--jobs", type=positive_int, default=20)


def run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync demo``: its exit code is the demo's."""
    # The demo waits with zasync.testing, whose fixtures load pytest: only
    # this command pays for it, not every worker the CLI starts.
    from zasync import demo  # noqa: PLC0415 - keeps pytest out of workers

    return demo.run_demo(args.db, jobs=args.jobs)
