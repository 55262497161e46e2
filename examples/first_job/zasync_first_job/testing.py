"""Test layers of the add-on, on zasync.plone's (a Plone site with zasync
installed; the functional one runs a worker on each test's database).

- ``FIRST_JOB_FIXTURE``: that site, with this add-on's ZCML loaded and its
  profile installed (plone.app.testing turns plone.autoinclude off);
- ``FIRST_JOB_INTEGRATION_TESTING``: no worker, jobs stay queued;
- ``FIRST_JOB_FUNCTIONAL_TESTING``: a worker runs the jobs a test commits.

With pytest, zope.pytestlayer turns them into fixtures (see zasync's
tests/plone/test_first_job.py).
"""

from __future__ import annotations

from typing import Any

from plone.app.testing import PloneSandboxLayer

import zasync_first_job
from zasync.plone.testing import (
    ZASYNC_PLONE_FIXTURE,
    ZasyncFunctionalTesting,
    ZasyncIntegrationTesting,
)


class FirstJobFixture(PloneSandboxLayer):
    defaultBases = (ZASYNC_PLONE_FIXTURE,)  # noqa: N815 - plone.testing API

    def setUpZope(self, app: Any, configurationContext: Any) -> None:  # noqa: N802, N803 - plone.testing API
        self.loadZCML(package=zasync_first_job)

    def setUpPloneSite(self, portal: Any) -> None:  # noqa: N802 - plone.testing API
        self.applyProfile(portal, "zasync_first_job:default")


FIRST_JOB_FIXTURE = FirstJobFixture(name="ZasyncFirstJobFixture")
FIRST_JOB_INTEGRATION_TESTING = ZasyncIntegrationTesting(
    bases=(FIRST_JOB_FIXTURE,), name="ZasyncFirstJob:Integration"
)
FIRST_JOB_FUNCTIONAL_TESTING = ZasyncFunctionalTesting(
    bases=(FIRST_JOB_FIXTURE,), name="ZasyncFirstJob:Functional"
)
