"""Create the examples' Plone site, with zasync installed, and a Zope
manager to log in with, unless they exist. Idempotent.

As a script, through Zope's own ``zconsole`` (which binds ``app``)::

    zconsole run examples/cluster/instance/etc/zope.conf examples/create_site.py

The site id and the manager's name and password come from the environment:
``PLONE_SITE`` (default ``Plone``), ``ADMIN_USER`` and ``ADMIN_PASSWORD``
(default ``admin`` / ``admin``: for a site on localhost only).
``examples/run.py`` imports :func:`ensure` instead.
"""

from __future__ import annotations

import logging
import os

import transaction

log = logging.getLogger("examples.create_site")

DEFAULT_SITE = "Plone"
DEFAULT_ADMIN = ("admin", "admin")
#: the add-on of docs/first-job.md (examples/first_job), installed in the
#: site when its package is installed (``make run`` and ``make cluster`` do)
FIRST_JOB = "zasync_first_job"


def settings(environ=os.environ) -> tuple[str, str, str]:
    """(site id, manager name, manager password) from the environment."""
    return (
        environ.get("PLONE_SITE") or DEFAULT_SITE,
        environ.get("ADMIN_USER") or DEFAULT_ADMIN[0],
        environ.get("ADMIN_PASSWORD") or DEFAULT_ADMIN[1],
    )


def ensure_admin(app, *, name: str, password: str) -> bool:
    """Add ``name``, a Manager, to the Zope root's user folder unless it
    exists; True if added. An existing user keeps its password."""
    users = app.acl_users
    if users.getUserById(name) is not None:
        return False
    users._doAddUser(name, password, ["Manager"], [])
    return True


def ensure_site(app, *, site_id: str) -> bool:
    """Create the Plone site ``site_id`` (Classic UI, with example content)
    unless it exists, and install zasync and the first job's add-on in it
    unless installed; True if the site was created."""
    from plone.base.utils import get_installer
    from Products.CMFPlone.factory import addPloneSite
    from zope.component.hooks import setSite

    created = site_id not in app.objectIds()
    if created:
        log.info("creating the Plone site %s (takes a little while)", site_id)
        site = addPloneSite(
            app,
            site_id,
            title="zasync example",
            distribution_name="classic",
            setup_content=True,
        )
    site = app[site_id]
    setSite(site)
    installer = get_installer(site)
    if not installer.is_product_installed("zasync.plone"):
        installer.install_product("zasync.plone")
    # Its ZCML is loaded (plone.autoinclude) only where its package is
    # installed, and its profile found only then.
    if installer.is_product_installed(FIRST_JOB):
        pass
    elif installer.is_product_installable(FIRST_JOB):
        installer.install_product(FIRST_JOB)
    else:
        log.info("%s is not installed: pip install -e examples/first_job", FIRST_JOB)
    return created


def ensure(app) -> tuple[str, str, str]:
    """Make sure the site and the manager exist, and commit; return (site
    id, manager name, manager password). The password is the one given to
    a new manager: an existing one keeps the password it has."""
    site_id, name, password = settings()
    added = ensure_admin(app, name=name, password=password)
    created = ensure_site(app, site_id=site_id)
    transaction.commit()
    log.info(
        "site %s %s, manager %s %s",
        site_id,
        "created" if created else "exists",
        name,
        "added" if added else "exists",
    )
    return site_id, name, password


if __name__ == "__main__" and "app" in globals():  # zconsole run
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    site_id, name, password = ensure(app)  # noqa: F821 - bound by zconsole
    print(f"site {site_id} ready; log in as {name} / {password}")
