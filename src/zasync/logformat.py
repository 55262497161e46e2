"""How the ``zasync`` command formats its logs: ``text`` (the default, one
line for people) or ``json`` (one JSON object a line, python-json-logger,
the ``ops`` extra).

The text format is the one line format of every process of a zasync set-up:
``2026-01-02 03:04:05,678 INFO zasync.dispatcher message``. The command
uses :data:`TEXT_FORMAT`; a Zope instance's ``zope.ini`` gives its
formatter the same ``format`` (and no ``datefmt``); a ZEO server's or a
Zope process's ``<eventlog>`` in ZConfig, which has no milliseconds of its
own, :data:`ZCONFIG_FORMAT` with ``dateformat`` :data:`ZCONFIG_DATEFORMAT`
(examples/cluster shows both).

A JSON record about a job carries its ``job_id``, ``callable``, ``queue``,
``attempt``, ``action`` and ``worker`` (UUID) as fields
(:func:`zasync.outcomes.log_extra`); :class:`WorkerField` fills in the
worker's UUID where a record about a job has none.
"""

from __future__ import annotations

import logging

FORMATS = ("text", "json")
#: a line: when (local time, with milliseconds), level, logger, message
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: the same line from a ZConfig ``<logfile>`` (``format`` and ``dateformat``)
ZCONFIG_FORMAT = "%(asctime)s,%(msecs)03d %(levelname)s %(name)s %(message)s"
ZCONFIG_DATEFORMAT = "%Y-%m-%d %H:%M:%S"
#: the standard fields of every JSON record (a record's extra comes too);
#: ``process`` tells the processes of ``zasync worker --processes`` apart
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


class WorkerField(logging.Filter):
    """Gives records about a job (those with a ``job_id``) a ``worker``
    field: the UUID this process's worker runs under."""

    def __init__(self) -> None:
        super().__init__()
        self.uuid: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "job_id") and getattr(record, "worker", None) is None:
            record.worker = self.uuid
        return True


#: the filter :func:`configure` installs; the worker sets its ``uuid``
worker_field = WorkerField()


def json_formatter() -> logging.Formatter:
    """A formatter writing one JSON object a line. Raises ImportError
    without python-json-logger."""
    from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415 - optional: zasync[ops]

    return JsonFormatter(
        JSON_FIELDS,
        rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
    )


def configure(level: int, fmt: str = "text") -> None:
    """Log at ``level`` to stderr in format ``fmt`` (``text`` or
    ``json``). Raises ValueError for another format, ImportError for
    ``json`` without python-json-logger."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    formatter = json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(worker_field)
    logging.basicConfig(level=level, handlers=[handler])
