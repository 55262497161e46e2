"""The runtime's subscriptions to the data layer's enqueue hooks.

Imported by the ``zasync`` package itself, so that every process that
queues jobs (an application, a Plone instance, a worker) hands a job just
queued to an idle thread where it can, wakes its own dispatchers after the
commit, and, on PostgreSQL, tells the other processes' workers.
"""

from __future__ import annotations

from zasync import handoff, hooks, inprocess, wakeup

hooks.on_queued(handoff.offer)
hooks.on_committed(inprocess.wake)
hooks.on_committed(wakeup.notify_postgres)
