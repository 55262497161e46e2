"""How the control panel words what it shows: the labels of job statuses
and worker states, a worker's name, relative times and durations.

One mapping of each, used by every template of the panel; the CSS classes
(colours) stay keyed by the raw kind or state.
"""

from __future__ import annotations

import datetime
from typing import Any

from zasync.running import human_duration

#: what people read for each kind of job (zasync.admin.kind, plus
#: ``cancelled``: a failed job whose failure is a cancel)
KIND_LABELS = {
    "pending": "Pending",
    "scheduled": "Scheduled",
    "active": "Running",
    "callbacks": "Finishing",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "new": "New",
}
#: the badge colour of each kind (Bootstrap classes)
KIND_BADGES = {
    "failed": "text-bg-danger",
    "cancelled": "text-bg-warning",
    "completed": "text-bg-success",
    "active": "text-bg-primary",
    "callbacks": "text-bg-primary",
    "scheduled": "text-bg-info",
}
#: what people read for each worker state (zasync.workerstate.WorkerState)
STATE_LABELS = {"alive": "Alive", "stopped": "Stopped", "dead": "Dead"}
STATE_BADGES = {"alive": "text-bg-success", "dead": "text-bg-danger"}
#: the failures that say a job was cancelled (type names end so)
CANCEL_TYPES = ("CancelledError", "JobCancelled")


def kind_of(info: dict[str, Any]) -> str:
    """The kind of a described job (``zasync.plone.browser.jobs.describe``),
    ``cancelled`` for a failed job that was cancelled."""
    kind = str(info.get("kind", ""))
    if kind == "failed":
        type_name = str(info.get("error") or "").split(":", 1)[0]
        if type_name.endswith(CANCEL_TYPES):
            return "cancelled"
    return kind


def kind_label(kind: str) -> str:
    """``Running`` for ``active``, ...; an unknown kind capitalized."""
    return KIND_LABELS.get(kind, kind.replace("-", " ").capitalize())


def status_label(info: dict[str, Any]) -> str:
    return kind_label(kind_of(info))


def status_badge(info: dict[str, Any]) -> str:
    return "badge " + KIND_BADGES.get(kind_of(info), "text-bg-secondary")


def list_label(kind: str) -> str:
    """The title of the list of a kind: ``Failed jobs``."""
    return f"{kind_label(kind)} jobs"


def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state.capitalize())


def state_badge(state: str) -> str:
    return "badge " + STATE_BADGES.get(state, "text-bg-secondary")


def worker_name(record: Any) -> str:
    """The name a worker was given (``zasync worker --name``), or
    ``host:pid``."""
    name = getattr(record, "name", None)
    if name:
        return str(name)
    return f"{record.hostname}:{record.pid}"


def seconds_since(iso: str | None, clock: float) -> float | None:
    """Seconds from the ISO time ``iso`` to ``clock`` (negative: it is
    ahead), None for no time."""
    if not iso:
        return None
    return clock - datetime.datetime.fromisoformat(iso).timestamp()


def relative(iso: str | None, clock: float) -> str:
    """``12 s ago``, ``in 5 min 0 s``, ``just now``; '' for no time."""
    seconds = seconds_since(iso, clock)
    if seconds is None:
        return ""
    if abs(seconds) < 1:
        return "just now"
    if seconds > 0:
        return f"{human_duration(seconds)} ago"
    return f"in {human_duration(-seconds)}"


def between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time to another, None if either is missing."""
    if not start or not end:
        return None
    return (
        datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
    ).total_seconds()


def timing(info: dict[str, Any], clock: float) -> str:
    """How long a described job took or has waited, as a phrase: ``ran 2.4
    s``, ``waited 3 s, ran 1 min 2 s``, ``running 5 s``, ``waiting 5 min 0
    s``, ``due in 2 h 0 min``; '' when there is nothing to say."""
    kind = info.get("kind")
    due, start, end = (
        info.get("begin_after"),
        info.get("active_start"),
        info.get("active_end"),
    )
    if kind in ("completed", "failed", "callbacks"):
        ran = between(start, end)
        waited = between(due, start)
        parts = []
        if waited is not None and waited >= 1:
            parts.append(f"waited {human_duration(waited)}")
        if ran is not None:
            parts.append(f"ran {human_duration(max(ran, 0.0), tenths=True)}")
        return ", ".join(parts)
    if kind == "active":
        running = seconds_since(start, clock)
        return "" if running is None else f"running {human_duration(max(running, 0.0))}"
    if kind == "pending":
        waiting = seconds_since(due, clock)
        return "" if waiting is None else f"waiting {human_duration(max(waiting, 0.0))}"
    if kind == "scheduled":
        ahead = seconds_since(due, clock)
        return "" if ahead is None else f"due in {human_duration(max(-ahead, 0.0))}"
    return ""
