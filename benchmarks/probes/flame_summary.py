"""A text summary of a py-spy profile (``py-spy record -f raw``, collapsed
stacks): the share of the samples under a frame (``--under``, e.g.
``produce``) spent in each function, inclusive, and the idle share.

``python -m benchmarks.probes.flame_summary FILE.raw [--under produce]
[--top 30]``
"""

from __future__ import annotations

import argparse
import collections
import sys


def summarize(lines: list[str], under: str, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        names = [frame.split(" (")[0] for frame in frames]
        if under not in names:
            continue
        below = frames[names.index(under) :]
        n = int(count)
        total += n
        seen = set()
        for frame in below:
            name = frame.split(" (")[0] + " " + _where(frame)
            if name not in seen:
                seen.add(name)
                inclusive[name] += n
    out = [f"{total} samples under {under}; share of them, inclusive:"]
    for name, n in inclusive.most_common(top):
        out.append(f"{100 * n / max(total, 1):6.1f} %  {name}")
    return "\n".join(out)


def _where(frame: str) -> str:
    if " (" not in frame:
        return ""
    where = frame.split(" (", 1)[1].rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/src/", "/benchmarks/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.flame_summary")
    parser.add_argument("file")
    parser.add_argument("--under", default="produce")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    with open(args.file) as f:
        sys.stdout.write(summarize(f.readlines(), args.under, args.top) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
