"""``GET @async-health``: whether the site's workers are alive, for load
balancers and liveness probes. Anonymous-safe: the answer holds the
status alone (``{"status": "ok"}``, or ``{"status": "unhealthy"}`` with
HTTP 503), never a job, a worker's name or host.

Healthy: the queues' database answers and every worker registered and
not stopped has a fresh heartbeat (zasync.health), as ``zasync health
--all``; ``?max_age=SECONDS`` overrides the default freshness.
"""

from __future__ import annotations

from plone.restapi.services import Service
from zExceptions import BadRequest

from zasync import health
from zasync.plone.browser.controlpanel import queues_for

#: the HTTP status of an unhealthy answer
UNHEALTHY = 503


class HealthGet(Service):
    def reply(self) -> dict:
        raw = self.request.form.get("max_age")
        try:
            max_age = float(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            max_age = -1.0
        if max_age is not None and max_age <= 0:
            raise BadRequest(f"max_age={raw!r}: use a positive number of seconds")
        result = health.check_queues(
            queues_for(self.context), all_workers=True, max_age=max_age
        )
        if not result.ok:
            self.request.response.setStatus(UNHEALTHY)
            return {"status": "unhealthy"}
        return {"status": "ok"}
