"""Fixtures for the Plone integration: the zasync.plone test layers, turned
into pytest fixtures by zope.pytestlayer.

Each layer gets a session fixture (set up once, torn down at the end of the
session: the Plone site is built once) and a function fixture (the
per-test set-up: for the functional layers a database of the test's own
with a dispatcher on it). Tests ask for ``integration``, ``functional`` or
``multidb``: the layer, whose ``layer['portal']``, ``layer['test-folder']``
are ready.

Without Plone installed, these tests are not collected (CI installs it).
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("plone.app.testing") is None:  # pragma: no cover
    collect_ignore_glob = ["test_*.py"]
else:
    from zope.pytestlayer import fixture

    from zasync.plone.testing import (
        ZASYNC_PLONE_FUNCTIONAL_TESTING,
        ZASYNC_PLONE_INTEGRATION_TESTING,
        ZASYNC_PLONE_MULTIDB_FUNCTIONAL_TESTING,
    )

    for _layer, _name in (
        (ZASYNC_PLONE_INTEGRATION_TESTING, "integration"),
        (ZASYNC_PLONE_FUNCTIONAL_TESTING, "functional"),
        (ZASYNC_PLONE_MULTIDB_FUNCTIONAL_TESTING, "multidb"),
    ):
        globals().update(
            fixture.create(
                _layer,
                session_fixture_name=f"_{_name}_session",
                class_fixture_name=f"_{_name}_class",
                function_fixture_name=f"_{_name}_test",
            )
        )

    @pytest.fixture
    def integration(_integration_session, _integration_test):
        """ZASYNC_PLONE_INTEGRATION_TESTING, set up for this test."""
        return _integration_test

    @pytest.fixture
    def functional(_functional_session, _functional_test):
        """ZASYNC_PLONE_FUNCTIONAL_TESTING, set up for this test."""
        return _functional_test

    @pytest.fixture
    def multidb(_multidb_session, _multidb_test):
        """ZASYNC_PLONE_MULTIDB_FUNCTIONAL_TESTING, set up for this test."""
        return _multidb_test


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/plone/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.plone)
