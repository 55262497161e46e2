"""Flags and argument types that several ``zasync`` commands share."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from zasync.jobopts import MAX_KEY_LENGTH, MAX_PRIORITY

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: commands that run for a while and say what they do; the others log only
#: warnings, so that their output (and a one-line error) stands alone
LONG_RUNNING = ("worker", "demo")


def positive_int(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def _float(text: str) -> float:
    """``text`` as a number, or argparse's error saying it is none."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_float(text: str) -> float:
    """An argparse type: a number more than 0."""
    value = _float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number more than 0")
    return value


def seconds_or_zero(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (0: never)."""
    value = _float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number, 0 or more")
    return value


def add_db(parser: argparse.ArgumentParser, *, group: Any = None) -> None:
    """--db (in ``group``, a mutually exclusive group, when given), and
    --log-level after the command."""
    (group or parser).add_argument(
        "--db",
        default=os.environ.get("ZASYNC_DB"),
        metavar="URI",
        help="the database (default: $ZASYNC_DB)",
    )
    # Also accepted after the command; SUPPRESS keeps one given before it.
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=LOG_LEVELS,
        help=argparse.SUPPRESS,
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    """--json: print JSON (for scripts) instead of a table."""
    parser.add_argument("--json", action="store_true")


#: the most days a duration option takes (what a timedelta holds)
MAX_DAYS = 999_999_999


def days(text: str) -> float:
    """An argparse type: a number of days, 0 or more (0: all)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of days from 0 to {MAX_DAYS}"
        )
    return value


def priority(text: str) -> int:
    """An argparse type: a job's priority (see zasync.jobopts)."""
    span = f"give a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a priority: {span}"
        ) from None
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"{text} is out of range: {span}")
    return value


def key(text: str) -> str:
    """An argparse type: a lock or unique key (see zasync.jobopts)."""
    if not text.strip() or len(text) > MAX_KEY_LENGTH:
        raise argparse.ArgumentTypeError(
            f"{_short(text)} is not a key: give a name of 1 to {MAX_KEY_LENGTH} "
            f"characters, as the jobs were queued with"
        )
    return text


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")
