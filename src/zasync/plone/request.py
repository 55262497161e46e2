"""The request a Plone job runs with: a GET request to the site, so that
``absolute_url()``, views, browser layers and plone.api work in jobs.

URLs use the site's public URL (the registry record
``zasync.plone.public_url``, else the URL of the site in the request that
queued the job) through Zope's virtual hosting, as the Virtual Host Monster
would set it up.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from zope.publisher.browser import setDefaultSkin
from ZPublisher.BaseRequest import RequestContainer
from ZPublisher.HTTPRequest import HTTPRequest
from ZPublisher.HTTPResponse import HTTPResponse

#: the host of the request when no public URL is known
DEFAULT_HOST = "nohost"


def make_request() -> HTTPRequest:
    """A fresh GET request (with the default browser skin)."""
    environ = {
        "SERVER_NAME": DEFAULT_HOST,
        "SERVER_PORT": "80",
        "REQUEST_METHOD": "GET",
    }
    request = HTTPRequest(BytesIO(), environ, HTTPResponse(stdout=BytesIO()))
    request._steps = ["noobject"]  # as Testing.makerequest: a published object
    setDefaultSkin(request)
    return request


def wrap_in_request(app: Any, *, request: HTTPRequest) -> Any:
    """``app`` wrapped so that ``REQUEST`` can be acquired from it."""
    return app.__of__(RequestContainer(REQUEST=request))


def check_public_url(url: str) -> tuple[str, str, int | None, list[str]]:
    """Split ``url`` into (scheme, host, port, path segments); raise
    ValueError, saying what is expected, for anything but an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"the public URL {url!r} must be an http:// or https:// URL, "
            f"for example https://www.example.com"
        )
    segments = [segment for segment in parts.path.split("/") if segment]
    return parts.scheme, parts.hostname, parts.port, segments


def publish_site_at(request: HTTPRequest, *, app: Any, site: Any, url: str) -> None:
    """Set up ``request`` so that ``site.absolute_url() == url`` (virtual
    hosting, as ``/VirtualHostBase/<scheme>/<host:port>/<site path>/
    VirtualHostRoot/<url path>``). The request's PARENTS become
    ``[site, app]``."""
    scheme, host, port, segments = check_public_url(url)
    request.setServerURL(scheme, host, port)
    request["PARENTS"] = [site]  # setVirtualRoot maps the last parent
    request.setVirtualRoot(segments)
    request["PARENTS"] = [site, app]
    request["ACTUAL_URL"] = request["URL"] = url.rstrip("/")


def publish_site(request: HTTPRequest, *, app: Any, site: Any) -> None:
    """Set up ``request`` for the site without virtual hosting."""
    request["PARENTS"] = [site, app]
    request["ACTUAL_URL"] = request["URL"] = site.absolute_url()
