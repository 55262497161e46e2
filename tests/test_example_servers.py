"""The HTTP servers of ``make run`` and ``make cluster`` (examples/*/etc/
zope.ini): enough waitress threads for the requests a browser makes at
once to load a Plone page (with 4, every page load logged waitress's "Task
queue depth is 1" or 2), and a ZODB connection pool that holds them."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: the connections a browser opens to one host at once (Chromium, Firefox)
BROWSER_CONNECTIONS = 6


def waitress_threads(ini: Path) -> int:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return parser.getint("server:main", "threads")


def zope_conf_setting(conf: Path, name: str) -> int | None:
    match = re.search(rf"^\s*{name}\s+(\d+)", conf.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("etc", ["run/etc", "cluster/instance/etc"])
def test_waitress_serves_a_page_load_without_queueing(etc):
    threads = waitress_threads(EXAMPLES / etc / "zope.ini")
    # a page's requests, and the control panel's refresh beside them
    assert threads >= BROWSER_CONNECTIONS + 1
    conf = EXAMPLES / etc / "zope.conf"
    job_threads = zope_conf_setting(conf, "ZASYNC_THREADS") or 0
    # ZODB warns when more connections are open than its pool-size (7)
    pool_size = zope_conf_setting(conf, "pool-size") or 7
    worker_connections = job_threads + 1 if job_threads else 0
    assert pool_size >= threads + worker_connections
