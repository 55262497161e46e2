"""Test layers with the schedules add-on's profiles registered (not
installed: a test installs it, as a site administrator would).

- ``SCHEDULES_ADDON_FIXTURE``: ZASYNC_PLONE_FIXTURE and the add-on's ZCML;
- ``SCHEDULES_INTEGRATION_TESTING``, ``SCHEDULES_FUNCTIONAL_TESTING``: as
  zasync.plone.testing's layers of those names, on that fixture.
"""

from __future__ import annotations

from typing import Any

from plone.app.testing import PloneSandboxLayer

import zasync.plone.tests.addon
from zasync.plone.testing import (
    ZASYNC_PLONE_FIXTURE,
    ZasyncFunctionalTesting,
    ZasyncIntegrationTesting,
)

#: the add-on's name in Plone's add-ons control panel (its package)
ADDON = "zasync.plone.tests.addon"


class SchedulesAddonFixture(PloneSandboxLayer):
    defaultBases = (ZASYNC_PLONE_FIXTURE,)  # noqa: N815 - plone.testing API

    def setUpZope(self, app: Any, configurationContext: Any) -> None:  # noqa: N802, N803 - plone.testing API
        self.loadZCML(package=zasync.plone.tests.addon)


SCHEDULES_ADDON_FIXTURE = SchedulesAddonFixture(name="ZasyncSchedulesAddonFixture")
SCHEDULES_INTEGRATION_TESTING = ZasyncIntegrationTesting(
    bases=(SCHEDULES_ADDON_FIXTURE,), name="ZasyncSchedules:Integration"
)
SCHEDULES_FUNCTIONAL_TESTING = ZasyncFunctionalTesting(
    bases=(SCHEDULES_ADDON_FIXTURE,), name="ZasyncSchedules:Functional"
)
