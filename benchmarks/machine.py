"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

from benchmarks.spawn import ROOT
from zasync.testservers import _connect_server

PACKAGES = (
    "ZODB",
    "ZEO",
    "RelStorage",
    "BTrees",
    "persistent",
    "transaction",
    "psycopg2-binary",
)


def describe() -> dict:
    info: dict = {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg()[0],
        "packages": {},
    }
    for name in PACKAGES:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    info["postgresql"] = _postgres_version()
    info["git"] = _git()
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _postgres_version() -> str | None:
    try:
        conn = _connect_server()
    except Exception:
        return None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        conn.close()


def _git() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" (src/ modified)" if dirty else "")


def summary(info: dict) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    return (
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"{packages}, PostgreSQL {info['postgresql'] or 'absent'}, "
        f"zasync at {info['git']}"
    )
