"""The add-on's browser layer: its view exists only in the sites where
the add-on is installed (profiles/default/browserlayer.xml)."""

from __future__ import annotations

from zope.publisher.interfaces.browser import IDefaultBrowserLayer


class IFirstJobLayer(IDefaultBrowserLayer):
    """Marks the requests of a site where zasync_first_job is installed."""
