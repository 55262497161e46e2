"""Queue the word count of one item from a script, as a user of the site,
and wait for a worker to run it: a ``zconsole run`` script, for a site
that is running (``make cluster``: the script is one more ZEO client).

    zconsole run examples/cluster/instance/etc/zope.conf \\
        examples/first_job/queue_count.py Plone/news admin

Arguments: the item's path from the Zope root, and the id of the user the
job runs as (a user of the site, or a manager of the Zope root such as the
examples' ``admin``). Prints the job's id, then the count once a worker has
run it (exit 0); exit 1 if no worker ran it within a minute (is one
running?).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import transaction
from AccessControl.SecurityManagement import newSecurityManager
from Products.CMFCore.utils import getToolByName
from zasync_first_job.jobs import count_words
from zope.component import getUtility
from zope.component.hooks import setSite

import zasync
from zasync.plone.interfaces import IAsyncService

WAIT_SECONDS = 60.0


def login(app: Any, site: Any, user_id: str) -> None:
    """Act as ``user_id``, found in the site's users or the Zope root's."""
    for users in (site.acl_users, app.acl_users):
        user = users.getUserById(user_id)
        if user is not None:
            newSecurityManager(None, user.__of__(users))
            return
    raise SystemExit(f"no user {user_id!r} in {site.getId()} or the Zope root")


def main(app: Any, path: str, user_id: str) -> int:
    context = app.unrestrictedTraverse(path.strip("/"), None)
    if context is None:
        raise SystemExit(f"nothing at {path!r}: give a path such as Plone/news")
    site = getToolByName(context, "portal_url").getPortalObject()
    setSite(site)  # the site's components: IAsyncService finds its queues
    login(app, site, user_id)

    job = getUtility(IAsyncService).queueJob(count_words, context)
    transaction.commit()  # the job exists from here on; a worker takes it
    print(f"queued job {job.id}: count_words({path}) as {user_id}", flush=True)

    deadline = time.monotonic() + WAIT_SECONDS
    while job.status != zasync.COMPLETED:
        if time.monotonic() > deadline:
            print(
                f"job {job.id} is {job.status} after {WAIT_SECONDS:g} s: "
                f"is a worker running? (zasync status --db ...)"
            )
            return 1
        time.sleep(0.5)
        transaction.begin()  # see what the workers committed since
    if isinstance(job.result, zasync.Failure):
        print(f"job {job.id} failed: {job.result}")
        return 1
    print(f"job {job.id}: {job.result} words")
    return 0


if __name__ == "__main__" and "app" in globals():  # zconsole run
    # zconsole leaves its own arguments in sys.argv: this script's follow
    # its path (zconsole run ZOPE_CONF SCRIPT PATH USER).
    arguments = sys.argv[4:]
    if len(arguments) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(app, *arguments))  # noqa: F821 - bound by zconsole
