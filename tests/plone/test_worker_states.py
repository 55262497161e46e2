"""The workers' state (alive, stopped, dead) in the control panel's
workers table and in ``GET @async-workers``, on a real Plone site whose
worker is alive, next to a worker that stopped cleanly and one found dead
(its record as a clean stop and a process gone leave them)."""

from __future__ import annotations

import json
import re
import time

import transaction
from plone.app.testing import SITE_OWNER_NAME, SITE_OWNER_PASSWORD, applyProfile
from plone.testing.zope import Browser
from tests.plone.helpers import service


def add_gone_workers(portal) -> None:
    workers = service().getQueues(portal).workers
    now = time.time()
    stopped = workers.register("stopped-worker")
    stopped._begin(2, ("",), now - 10)
    stopped.stopped = now  # a clean stop: the lease given up (0)
    dead = workers.register("dead-worker")
    dead._begin(2, ("",), now - 3600)  # not seen for an hour
    transaction.commit()


def browser(layer) -> Browser:
    b = Browser(layer["app"])
    b.handleErrors = False
    b.addHeader("Authorization", f"Basic {SITE_OWNER_NAME}:{SITE_OWNER_PASSWORD}")
    return b


def test_the_workers_table_and_the_rest_api_say_alive_stopped_or_dead(functional):
    portal = functional["portal"]
    applyProfile(portal, "plone.restapi:default")
    add_gone_workers(portal)

    b = browser(functional)
    b.open(f"{portal.absolute_url()}/@@async-jobs")
    rows = dict(re.findall(r'<tr data-worker="([^"]+)">(.*?)</tr>', b.contents, re.S))
    words = {
        uuid: re.search(r'<span class="badge[^"]*">\s*(\w+)\s*<', row).group(1)
        for uuid, row in rows.items()
    }
    assert words.pop("stopped-worker") == "Stopped"
    assert words.pop("dead-worker") == "Dead"
    assert words == {functional["dispatcher"].uuid: "Alive"}

    b.addHeader("Accept", "application/json")
    b.open(f"{portal.absolute_url()}/@async-workers")
    items = json.loads(b.contents)["items"]
    states = {w["uuid"]: (w["state"], w["alive"]) for w in items}
    assert states.pop("stopped-worker") == ("stopped", False)
    assert states.pop("dead-worker") == ("dead", False)
    assert set(states.values()) == {("alive", True)}
