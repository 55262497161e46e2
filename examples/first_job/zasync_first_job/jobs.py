"""The job: count the words of a page, or of a folder and everything in it.

A worker runs :func:`count_words` later, in the site, as the user who
queued it, with the object it was queued for as ``context``. It finds the
function by its dotted name, ``zasync_first_job.jobs.count_words``: this
module must be importable wherever a worker runs (the add-on installed in
its environment).
"""

from __future__ import annotations

import datetime
import re
from html.parser import HTMLParser
from typing import Any

from plone.base.utils import safe_text
from Products.CMFCore.utils import getToolByName
from zope.annotation.interfaces import IAnnotations

from zasync.local import check, progress

#: where the last count is kept, in the counted object's annotations
ANNOTATION_KEY = "zasync_first_job.word_count"

WORD = re.compile(r"\w+")


class _TextOf(HTMLParser):
    """The text of an HTML fragment, without its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(obj: Any) -> str:
    """The words an object shows: its title, description and rich text."""
    parts = [safe_text(obj.Title()), safe_text(obj.Description())]
    rich = getattr(obj, "text", None)
    if rich is not None and getattr(rich, "raw", None):
        parser = _TextOf()
        parser.feed(rich.raw)
        parser.close()
        parts.extend(parser.parts)
    return " ".join(parts)


def count_words(context: Any) -> int:
    """Count the words of ``context`` and of every item inside it that the
    user may see; store the count in its annotations (see
    :func:`last_count`) and return it. Reports progress item by item, and
    stops if the job is cancelled (``check``)."""
    catalog = getToolByName(context, "portal_catalog")
    path = "/".join(context.getPhysicalPath())
    # The catalog answers as the user who queued the job: only what they see.
    brains = catalog(path={"query": path}, sort_on="path")
    total = len(brains)
    words = 0
    for done, brain in enumerate(brains, start=1):
        check()  # a cancel from the control panel stops here
        words += len(WORD.findall(text_of(brain.getObject())))
        progress(done, total, f"{done} of {total} items counted")
    IAnnotations(context)[ANNOTATION_KEY] = {
        "words": words,
        "items": total,
        "counted": datetime.datetime.now(datetime.UTC),
    }
    return words


def last_count(context: Any) -> dict[str, Any] | None:
    """The last count stored on ``context`` (``words``, ``items``,
    ``counted``: an aware datetime), or None if it was never counted."""
    return IAnnotations(context).get(ANNOTATION_KEY)
