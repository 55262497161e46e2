"""``make run``: a Plone 6 site with zasync at http://localhost:8080/Plone,
on a FileStorage in ./var/plone, its worker running in the same process.

    python examples/run.py [--port 8080] [--var var/plone]

Zope starts from examples/run/etc/zope.ini (zope.conf, site.zcml), which
makes this process a zasync worker too (single_db_worker.zcml); the site
and a Zope manager are created on the first start (examples/create_site.py);
then waitress serves it until Ctrl-C (or SIGTERM), and the worker stops,
letting running jobs finish for up to 10 s. Exit code 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INI = HERE / "run" / "etc" / "zope.ini"
STOP_TIMEOUT = 10.0

log = logging.getLogger("examples.run")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("HTTP_PORT") or 8080),
        help="HTTP port (default: $HTTP_PORT or 8080)",
    )
    parser.add_argument(
        "--var",
        default=os.environ.get("EXAMPLE_VAR") or "var/plone",
        help="directory of the database, blobs and worker UUID (default var/plone)",
    )
    return parser.parse_args(argv)


def create_site(app_root_db_opened: object = None) -> tuple[str, str, str]:
    """Create the site and the manager (if missing) as Zope's system user,
    in a request of their own, as ``zconsole run`` would."""
    import Zope2
    from AccessControl.SecurityManagement import newSecurityManager, noSecurityManager
    from AccessControl.users import system
    from Testing.makerequest import makerequest
    from zope.component.hooks import setSite
    from zope.globalrequest import setRequest

    sys.path.insert(0, str(HERE))
    import create_site as creator

    app = makerequest(Zope2.app())
    app.REQUEST["PARENTS"] = [app]
    setRequest(app.REQUEST)
    newSecurityManager(None, system)
    try:
        return creator.ensure(app)
    finally:
        noSecurityManager()
        setSite(None)
        setRequest(None)
        app._p_jar.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    var = Path(args.var).absolute()
    var.mkdir(parents=True, exist_ok=True)
    os.environ["EXAMPLE_HOME"] = str(INI.parent.parent)
    os.environ["EXAMPLE_VAR"] = str(var)

    from paste.deploy import loadapp, loadserver
    from Zope2.Startup.serve import setup_logging

    from zasync.plone import worker
    from zasync.plone.zopeworker import close_databases

    setup_logging(str(INI))
    settings = {"http_port": str(args.port)}
    # Starts Zope: ZCML, the database, and the worker's dispatcher.
    app = loadapp(f"config:{INI}", global_conf=settings)
    server = loadserver(f"config:{INI}", global_conf=settings)
    site_id, user, password = create_site()

    def stop_serving(signum, frame):
        raise KeyboardInterrupt  # waitress closes on it

    signal.signal(signal.SIGTERM, stop_serving)
    signal.signal(signal.SIGINT, stop_serving)  # even if started ignoring it
    print(
        f"\n  Plone with zasync: http://localhost:{args.port}/{site_id}"
        f"  (log in as {user} / {password})\n"
        f"  queue a demo job:  http://localhost:{args.port}/{site_id}"
        f"/@@zasync-demo-queue\n"
        f"  your first job:    Actions > Count words on any page"
        f" (docs/first-job.md)\n"
        f"  a worker runs in this process; data in {var}\n"
        f"  Ctrl-C to stop\n",
        flush=True,
    )
    try:
        server(app)  # waitress: returns on KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    # A second Ctrl-C while the worker stops exits at once.
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))
    log.info("stopping: waiting up to %g s for running jobs", STOP_TIMEOUT)
    clean = worker.stop(STOP_TIMEOUT)
    close_databases()
    if not clean:
        log.warning("jobs still running were left to recovery at the next start")
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
