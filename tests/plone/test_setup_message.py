"""The line zasync's set-up logs when installed in a site says what exists
and what was created (it said "queues created none, quotas set none" while
the default queue and quota existed)."""

from __future__ import annotations

import logging

from zasync.plone.setuphandlers import describe_setup, post_install


def test_installing_again_says_the_queue_and_quota_exist(integration, caplog):
    portal = integration["portal"]
    with caplog.at_level(logging.INFO, logger="zasync.plone.setuphandlers"):
        post_install(portal.portal_setup)
    (line,) = [
        r.getMessage() for r in caplog.records if r.name == "zasync.plone.setuphandlers"
    ]
    assert line == (
        f"zasync installed in {'/'.join(portal.getPhysicalPath())}: queues "
        f"(default) (existed), quota default of 1 on each (existed)"
    )


def test_what_was_created_is_named(integration):
    assert describe_setup(created_queues=[""], changed_quotas=["/default"]) == (
        "queues (default) (created now), quota default of 1 on each "
        "(created or resized now: /default)"
    )
