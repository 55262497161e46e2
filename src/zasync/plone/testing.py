"""Test layers for zasync.plone and the add-ons that use it.

- ``ZASYNC_PLONE_FIXTURE``: a Plone site with the add-on installed, the
  ``simple_publication_workflow``, and ``test-folder``, a folder in which the
  test user (a Member, also Contributor there) may add and submit content,
  while in the portal root it may not.
- ``ZASYNC_PLONE_INTEGRATION_TESTING``: per test, ``layer['portal']`` and
  ``layer['test-folder']``; no worker (a queued job stays pending).
- ``ZASYNC_PLONE_FUNCTIONAL_TESTING``: the same, on a database of the test's
  own, with a dispatcher (UUID ``DISPATCHER_UUID``, one thread) running on
  it: ``transaction.commit()`` then ``zasync.testing.wait_for_result(job)``.
- ``ZASYNC_PLONE_MULTIDB_FUNCTIONAL_TESTING``: as the functional layer, with
  the queues in a database named ``async`` beside the main one (the
  multi-database set-up) and the dispatcher serving that database.

With pytest, turn a layer into fixtures with zope.pytestlayer::

    from zope.pytestlayer import fixture
    globals().update(fixture.create(ZASYNC_PLONE_FUNCTIONAL_TESTING,
        session_fixture_name="zasync_plone_session", ...))
"""

from __future__ import annotations

from typing import Any

import transaction
from plone.app.testing import (
    PLONE_FIXTURE,
    SITE_OWNER_NAME,
    TEST_USER_ID,
    FunctionalTesting,
    IntegrationTesting,
    PloneSandboxLayer,
)
from plone.testing import zope as zope_testing
from ZODB import DB
from ZODB.DemoStorage import DemoStorage

import zasync.plone
from zasync.dispatcher import Dispatcher
from zasync.plone.location import ASYNC_DATABASE
from zasync.plone.settings import apply_registry

#: the UUID of the functional layers' dispatcher
DISPATCHER_UUID = "2f1b7a52-5d0c-4b8e-9a51-2a3c1d7e9b01"
#: the name plone.app.async's testing module used
_dispatcher_uuid = DISPATCHER_UUID

TEST_FOLDER_ID = "test-folder"
WORKFLOW = "simple_publication_workflow"


def start_dispatcher(
    db: Any, *, uuid: str | None = None, threads: int = 1, **kw: Any
) -> Dispatcher:
    """A started Dispatcher on ``db`` with test-friendly settings (a short
    poll interval); stop it with ``dispatcher.stop(10)``."""
    kw.setdefault("poll_interval", 0.2)
    return Dispatcher(db, uuid=uuid, threads=threads, **kw).start()


class ZasyncPloneFixture(PloneSandboxLayer):
    defaultBases = (PLONE_FIXTURE,)  # noqa: N815 - plone.testing API

    def setUpZope(self, app: Any, configurationContext: Any) -> None:  # noqa: N802, N803 - plone.testing API
        # plone.app.testing turns plone.autoinclude off: load our ZCML.
        self.loadZCML(package=zasync.plone)

    def setUpPloneSite(self, portal: Any) -> None:  # noqa: N802 - plone.testing API
        self.applyProfile(portal, "zasync.plone:default")
        portal.portal_workflow.setDefaultChain(WORKFLOW)
        zope_testing.login(portal.getPhysicalRoot().acl_users, SITE_OWNER_NAME)
        try:
            portal.invokeFactory("Folder", TEST_FOLDER_ID, title="Test folder")
            folder = portal[TEST_FOLDER_ID]
            folder.manage_setLocalRoles(TEST_USER_ID, ["Contributor"])
            folder.reindexObjectSecurity()
        finally:
            zope_testing.logout()


ZASYNC_PLONE_FIXTURE = ZasyncPloneFixture(name="ZasyncPloneFixture")


class ZasyncIntegrationTesting(IntegrationTesting):
    """IntegrationTesting with ``layer['test-folder']``."""

    def testSetUp(self) -> None:  # noqa: N802 - plone.testing API
        super().testSetUp()
        self["test-folder"] = self["portal"][TEST_FOLDER_ID]

    def testTearDown(self) -> None:  # noqa: N802 - plone.testing API
        del self["test-folder"]
        super().testTearDown()


class ZasyncFunctionalTesting(FunctionalTesting):
    """FunctionalTesting with ``layer['test-folder']`` and a dispatcher
    (``layer['dispatcher']``) running on the test's own database."""

    #: worker threads of the layer's dispatcher: one keeps the order of
    #: jobs and of their callbacks and events (as a size-1 quota does)
    threads = 1

    def testSetUp(self) -> None:  # noqa: N802 - plone.testing API
        super().testSetUp()
        self["test-folder"] = self["portal"][TEST_FOLDER_ID]
        self["queuesDB"] = self.setUpQueues()
        self["dispatcher"] = start_dispatcher(
            self["queuesDB"], uuid=DISPATCHER_UUID, threads=self.threads
        )

    def setUpQueues(self) -> Any:  # noqa: N802 - named as the layer hooks are
        """Return the database whose queues the dispatcher serves."""
        return self["zodbDB"]

    def tearDownQueues(self, db: Any) -> None:  # noqa: N802 - named as the layer hooks are
        pass

    def testTearDown(self) -> None:  # noqa: N802 - plone.testing API
        dispatcher = self["dispatcher"]
        if not dispatcher.dead:
            dispatcher.stop(10)
        db = self["queuesDB"]
        del self["dispatcher"]
        del self["queuesDB"]
        del self["test-folder"]
        super().testTearDown()
        self.tearDownQueues(db)


class ZasyncMultiDBFunctionalTesting(ZasyncFunctionalTesting):
    """ZasyncFunctionalTesting with the queues in a database named
    ``async`` joined to the test's main database (a multi-database)."""

    def setUpQueues(self) -> Any:  # noqa: N802 - named as the layer hooks are
        main = self["zodbDB"]
        db = DB(
            DemoStorage(name=ASYNC_DATABASE),
            database_name=ASYNC_DATABASE,
            databases=main.databases,
        )
        # As installing the add-on would: the registry's queues and quotas,
        # in the database the service finds (``async``, now mounted).
        apply_registry(self["portal"])
        transaction.commit()
        return db

    def tearDownQueues(self, db: Any) -> None:  # noqa: N802 - named as the layer hooks are
        db.close()


ZASYNC_PLONE_INTEGRATION_TESTING = ZasyncIntegrationTesting(
    bases=(ZASYNC_PLONE_FIXTURE,), name="ZasyncPlone:Integration"
)
ZASYNC_PLONE_FUNCTIONAL_TESTING = ZasyncFunctionalTesting(
    bases=(ZASYNC_PLONE_FIXTURE,), name="ZasyncPlone:Functional"
)
ZASYNC_PLONE_MULTIDB_FUNCTIONAL_TESTING = ZasyncMultiDBFunctionalTesting(
    bases=(ZASYNC_PLONE_FIXTURE,), name="ZasyncPlone:MultiDBFunctional"
)
