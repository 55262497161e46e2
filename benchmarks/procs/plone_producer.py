"""The Plone side of W6: a Zope process (no HTTP) that creates the site and
queues the jobs through ``IAsyncService``, as the member who will own the
documents.

``python -m benchmarks.procs.plone_producer --zope-conf ZOPE_CONF``, with the
instance's zope.conf of examples/cluster, starts Zope from that zope.conf
as ``zconsole run`` does (the instance's role, ``single_db_instance``: it
queues, it runs no dispatcher), prints
``ready`` and then answers commands, one JSON object a line on its
standard input, with one line ``W6 <json>`` each on its standard output:

- ``{"op": "setup", "user": ID}``: the examples' site (examples/create_site.py:
  the site ``Plone`` with zasync installed, the manager ``admin``) and the
  member ``ID`` (role Member only), unless they exist. Answers the sizes of
  the quotas of the queue ``''``.
- ``{"op": "queue", "folder": F, "tag": T, "count": N, "batch": B,
  "quotas": bool}``: as Zope's system user, a new folder ``F`` in the site
  where the member has the local role Contributor; then, logged in as the
  member (``newSecurityManager``), queue ``benchmarks.plone_jobs.
  create_document(folder, T, i, ...)`` for i < N, B jobs per transaction:
  through ``queueJob`` (the ``default`` quota) when ``quotas``, else through
  ``queueJobInQueue('', (), ...)`` (no quota). Answers ``began``, the time
  the first batch began, and ``commits``, the time (``time.time()``) each
  job's commit returned, by i.
- ``{"op": "check", "folder": F}``: how many documents of the folder each
  user owns (``owners``) and created (``creators``, the first creator).
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import transaction
import Zope2
from AccessControl.SecurityManagement import newSecurityManager
from AccessControl.users import system
from Testing.makerequest import makerequest
from zope.component import getUtility
from zope.component.hooks import setSite
from zope.globalrequest import setRequest
from Zope2.Startup.run import make_wsgi_app

from benchmarks.plone_jobs import create_document
from zasync.plone.interfaces import IAsyncService
from zasync.plone.location import get_queues

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "w6-bench-secret-42"
SITE = "Plone"


def answer(data: dict) -> None:
    print("W6 " + json.dumps(data), flush=True)


class Producer:
    def __init__(self, zope_conf: str):
        make_wsgi_app({}, zope_conf)
        self.app = makerequest(Zope2.app())
        self.app.REQUEST["PARENTS"] = [self.app]
        setRequest(self.app.REQUEST)
        self.as_system()

    def as_system(self) -> None:
        newSecurityManager(None, system)

    def site(self):
        site = self.app[SITE]
        setSite(site)
        return site

    def setup(self, user: str) -> dict:
        sys.path.insert(0, str(ROOT / "examples"))
        import create_site  # noqa: PLC0415 - examples/ is on sys.path only now

        transaction.begin()
        create_site.ensure(self.app)
        site = self.site()
        if site.acl_users.getUserById(user) is None:
            site.acl_users._doAddUser(user, PASSWORD, ["Member"], [])
        transaction.commit()

        transaction.begin()
        queue = get_queues(site._p_jar)[""]
        quotas = {name: queue.quotas[name].size for name in queue.quotas}
        transaction.abort()
        return {"quotas": quotas}

    def queue(
        self, *, user: str, folder: str, tag: int, count: int, batch: int, quotas: bool
    ) -> dict:

        self.as_system()
        transaction.begin()
        site = self.site()
        site.invokeFactory("Folder", folder, title=f"W6 run {tag}")
        target = site[folder]
        target.manage_setLocalRoles(user, ["Contributor"])
        target.reindexObjectSecurity()
        transaction.commit()

        service = getUtility(IAsyncService)
        commits: list[float] = []
        began = time.time()
        try:
            for start in range(0, count, batch):
                transaction.begin()
                site = self.site()
                member = site.acl_users.getUserById(user)
                newSecurityManager(None, member)
                target = site[folder]
                for i in range(start, min(count, start + batch)):
                    args = (
                        tag,
                        i,
                        f"Document {i} of run {tag}",
                        "Created by a zasync worker (W6)",
                        f"Body of document {i}, queued by {user}.",
                    )
                    if quotas:
                        service.queueJob(create_document, target, *args)
                    else:
                        service.queueJobInQueue("", (), create_document, target, *args)
                transaction.commit()
                done = time.time()
                commits.extend([done] * (min(count, start + batch) - start))
        finally:
            self.as_system()
        return {"began": began, "commits": commits}

    def check(self, *, folder: str) -> dict:
        transaction.begin()
        try:
            owners: dict[str, int] = {}
            creators: dict[str, int] = {}
            for doc in self.site()[folder].objectValues():
                owner = doc.getOwnerTuple()[1]
                creator = (doc.creators or ("?",))[0]
                owners[owner] = owners.get(owner, 0) + 1
                creators[creator] = creators.get(creator, 0) + 1
            return {"owners": owners, "creators": creators}
        finally:
            transaction.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.plone_producer")
    parser.add_argument("--zope-conf", required=True)
    args = parser.parse_args(argv)
    producer = Producer(args.zope_conf)
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            if op == "setup":
                answer(producer.setup(**command))
            elif op == "queue":
                answer(producer.queue(**command))
            elif op == "check":
                answer(producer.check(**command))
            else:
                answer({"error": f"unknown op {op!r}"})
        except Exception as e:
            traceback.print_exc()
            answer({"error": f"{type(e).__name__}: {e}"})

    db = getattr(Zope2, "DB", None)
    if db is not None:
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
