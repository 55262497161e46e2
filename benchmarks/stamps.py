"""Reading the start stamps that benchmarks.jobs writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stamp:
    time: float
    a: int
    b: int
    pid: int


class StampReader:
    """Reads the stamp files of one directory incrementally: ``count()``
    is cheap enough to call every few milliseconds."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._offsets: dict[str, int] = {}
        self._lines = 0

    def count(self) -> int:
        """How many jobs started so far (a job started twice counts twice)."""
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".stamps"):
                continue
            offset = self._offsets.get(entry.name, 0)
            size = entry.stat().st_size
            if size <= offset:
                continue
            with open(entry.path, "rb") as f:
                f.seek(offset)
                data = f.read(size - offset)
            end = data.rfind(b"\n") + 1  # a line being written is left for later
            self._lines += data.count(b"\n", 0, end)
            self._offsets[entry.name] = offset + end
        return self._lines

    def all(self) -> list[Stamp]:
        """Every complete stamp line, in no particular order."""
        stamps = []
        for path in self.directory.glob("*.stamps"):
            pid = int(path.stem)
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:
                    stamps.append(
                        Stamp(float(parts[0]), int(parts[1]), int(parts[2]), pid)
                    )
        return stamps


def first_starts(stamps: list[Stamp]) -> dict[tuple[int, int], float]:
    """The first start time of each job identity (a, b)."""
    first: dict[tuple[int, int], float] = {}
    for s in stamps:
        key = (s.a, s.b)
        if key not in first or s.time < first[key]:
            first[key] = s.time
    return first
