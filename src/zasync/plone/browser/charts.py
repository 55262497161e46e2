"""The control panel's charts, as inline SVG rendered on the server: the
jobs finished per minute and the waits before start (median and 95th
percentile) per minute, over the window of a :class:`zasync.activity.Activity`.

Each chart is an ``<svg role="img">`` with a title and a description that
say in words what it shows (the text alternative), axis labels, and a
tooltip (``<title>``) per minute. Everything drawn is computed here from
numbers; the few texts are escaped.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from html import escape

from zasync.activity import Activity, Minute
from zasync.running import human_duration

#: the drawing's size (it scales to the width of the page)
WIDTH, HEIGHT = 600, 170
#: the plot area inside it: left, top, right, bottom
LEFT, TOP, RIGHT, BOTTOM = 52, 10, 592, 140
#: colours: Bootstrap's success, danger, and a blue and an orange that keep
#: 3:1 against white (WCAG's contrast for graphics)
COLOURS = {
    "completed": "#198754",
    "failed": "#dc3545",
    "p50": "#0b5ed7",
    "p95": "#c25e00",
}


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten at least ``value``
    (1 for nothing): the top of an axis."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def _clock(start: float) -> str:
    return datetime.datetime.fromtimestamp(start, datetime.UTC).strftime("%H:%M")


def _axes(activity: Activity, top: float, top_label: str, unit: str) -> Iterator[str]:
    """The frame, the y axis's 0 and top, and the x axis's minutes ago."""
    yield (
        f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" '
        f'stroke="#6c757d" />'
    )
    yield (
        f'<line x1="{LEFT}" y1="{TOP}" x2="{RIGHT}" y2="{TOP}" '
        f'stroke="#dee2e6" stroke-dasharray="3 3" />'
    )
    yield (
        f'<text x="{LEFT - 4}" y="{BOTTOM}" text-anchor="end" '
        f'class="zasync-tick">0</text>'
    )
    yield (
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="zasync-tick">'
        f"{escape(top_label)}</text>"
    )
    yield (
        f'<text x="12" y="{(TOP + BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(TOP + BOTTOM) / 2})" class="zasync-axis">'
        f"{escape(unit)}</text>"
    )
    count = len(activity.minutes)
    for at, anchor in ((0, "start"), (count // 2, "middle"), (count, "end")):
        x = LEFT + (RIGHT - LEFT) * at / count
        ago = count - at
        text = "now" if ago == 0 else f"{ago} min ago"
        yield (
            f'<text x="{x:.1f}" y="{BOTTOM + 16}" text-anchor="{anchor}" '
            f'class="zasync-tick">{text}</text>'
        )


def _svg(name: str, title: str, desc: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" class="zasync-chart" id="zasync-chart-{name}" '
        f'aria-labelledby="zasync-chart-{name}-title zasync-chart-{name}-desc">'
        f'<title id="zasync-chart-{name}-title">{escape(title)}</title>'
        f'<desc id="zasync-chart-{name}-desc">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _slot(index: int, count: int) -> tuple[float, float]:
    """The x and width of the bar of minute ``index`` of ``count``."""
    width = (RIGHT - LEFT) / count
    return LEFT + index * width + 0.5, max(width - 1, 0.5)


def _height(value: float, top: float) -> float:
    return (BOTTOM - TOP) * value / top


def finished_chart(activity: Activity) -> str:
    """Bars of the jobs that finished in each minute, completed and failed
    stacked."""
    minutes = activity.minutes
    top = nice_ceiling(max((m.finished for m in minutes), default=0))
    body = list(_axes(activity, top, f"{top:g}", "jobs a minute"))
    for index, minute in enumerate(minutes):
        if not minute.finished:
            continue
        x, width = _slot(index, len(minutes))
        tip = (
            f"{_clock(minute.start)} UTC: {minute.completed} completed, "
            f"{minute.failed} failed"
        )
        base = float(BOTTOM)
        body.append(f"<g><title>{escape(tip)}</title>")
        for part in ("completed", "failed"):
            value = getattr(minute, part)
            if value:
                height = _height(value, top)
                base -= height
                body.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" '
                    f'height="{height:.1f}" fill="{COLOURS[part]}" />'
                )
        body.append("</g>")
    total, failed = activity.finished, sum(m.failed for m in minutes)
    busiest = max(minutes, key=lambda m: m.finished, default=None)
    desc = (
        f"Over the last {len(minutes)} minutes {total} "
        f"job{'' if total == 1 else 's'} finished, {failed} of them failed"
    )
    if busiest is not None and busiest.finished:
        desc += (
            f"; at most {busiest.finished} in a minute (at {_clock(busiest.start)} UTC)"
        )
    return _svg("finished", "Jobs finished per minute", desc + ".", body)


def _wait_label(seconds: float) -> str:
    return human_duration(seconds, tenths=True)


def wait_chart(activity: Activity) -> str:
    """Per minute, the 95th percentile of the waits of the jobs that
    started in it as a wide light bar, and the median as a narrow dark one
    inside it."""
    minutes = activity.minutes
    started = [m for m in minutes if m.started]
    top = nice_ceiling(max((m.wait_p95 or 0.0 for m in started), default=0.0))
    body = list(_axes(activity, top, f"{top:g} s", "wait"))
    for index, minute in enumerate(minutes):
        if minute.wait_p50 is None or minute.wait_p95 is None:
            continue
        x, width = _slot(index, len(minutes))
        tip = (
            f"{_clock(minute.start)} UTC: {minute.started} started, waited "
            f"{_wait_label(minute.wait_p50)} (median), "
            f"{_wait_label(minute.wait_p95)} (95th percentile)"
        )
        body.append(f"<g><title>{escape(tip)}</title>")
        for key, inset in (("p95", 0.0), ("p50", width / 4)):
            value = minute.wait_p95 if key == "p95" else minute.wait_p50
            height = max(_height(value, top), 1.0)  # a zero wait shows
            body.append(
                f'<rect x="{x + inset:.1f}" y="{BOTTOM - height:.1f}" '
                f'width="{width - 2 * inset:.1f}" height="{height:.1f}" '
                f'fill="{COLOURS[key]}" />'
            )
        body.append("</g>")
    return _svg(
        "wait", "Wait before start per minute", _wait_desc(minutes, started), body
    )


def _wait_desc(minutes: tuple[Minute, ...], started: list[Minute]) -> str:
    if not started:
        return f"No job started (and finished) in the last {len(minutes)} minutes."
    count = sum(m.started for m in started)
    worst = max(started, key=lambda m: m.wait_p95 or 0.0)
    median = max(started, key=lambda m: m.wait_p50 or 0.0)
    return (
        f"Over the last {len(minutes)} minutes {count} "
        f"job{'' if count == 1 else 's'} started; the longest "
        f"median wait of a minute was {_wait_label(median.wait_p50 or 0.0)} (at "
        f"{_clock(median.start)} UTC), the longest 95th percentile "
        f"{_wait_label(worst.wait_p95 or 0.0)} (at {_clock(worst.start)} UTC)."
    )
