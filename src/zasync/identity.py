"""A worker's identity: a UUID kept in a file, created on first start.

The file is named by the ``ZASYNC_UUID`` environment variable (zc.async's
``ZC_ASYNC_UUID`` is read too), or given explicitly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping

from zasync.interfaces import ConfigurationError

ENV_NAMES = ("ZASYNC_UUID", "ZC_ASYNC_UUID")


def uuid_file_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The UUID file the environment names (``ZASYNC_UUID``, else
    ``ZC_ASYNC_UUID``), or None."""
    for name in ENV_NAMES:
        value = environ.get(name)
        if value:
            return value
    return None


def load_or_create(path: str) -> str:
    """The UUID stored in ``path``; a new one is written there when the
    file does not exist. Raises ConfigurationError for a file that holds
    something else."""
    path = os.path.abspath(path)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        value = _create(path)
        if value is None:  # another process made it first: use theirs
            return load_or_create(path)
        return value
    except UnicodeDecodeError:
        text = ""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                return str(uuid.UUID(line))
            except ValueError:
                break
    raise ConfigurationError(
        f"the worker UUID file {path} does not hold a UUID: delete it to have "
        f"a new one made, or write one UUID in it"
    )


def _create(path: str) -> str | None:
    """Write a new UUID to ``path`` whole, or return None if the file exists
    already. The UUID is written to a file of this process first and linked
    into place, so that a worker starting at the same moment never reads a
    half-written file."""
    value = str(uuid.uuid4())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    draft = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(draft, "x", encoding="ascii") as f:
        f.write(value + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        return None
    except OSError:
        # A filesystem without hard links: write in place (not atomic).
        try:
            with open(path, "x", encoding="ascii") as f:
                f.write(value + "\n")
        except FileExistsError:
            return None
    finally:
        os.unlink(draft)
    return value


def worker_uuid(
    path: str | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """The UUID for this process: from ``path``, else from the file the
    environment names, else a new one that is not kept."""
    path = path or uuid_file_from_env(environ)
    if path:
        return load_or_create(path)
    return str(uuid.uuid4())
