"""Diagnostics run by hand, ``python -m benchmarks.probes.NAME``; not part
of ``python -m benchmarks``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.stamps import StampReader


def scratch(name: str) -> tuple[Path, StampReader]:
    """A new directory for probe ``name``, kept after the run, with an
    empty ``stamps/`` and a reader of it."""
    work = Path(tempfile.mkdtemp(prefix=f"zasync-{name}-"))
    (work / "stamps").mkdir()
    return work, StampReader(work / "stamps")
