"""The record of past runs: ``results/history.csv``, one row per figure.

``python -m benchmarks.history [RESULTS_JSON ...]`` adds the figures of
full runs (default: ``results/results.json``) to the CSV: for each figure
its median, min and max, with the run's date and the zasync commit it
measured. A run already in the file (same date) is skipped, so adding the
same run twice changes nothing. Rows of other sources (partial runs, A/B
comparisons, probes) are written by hand in the same columns.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HISTORY = RESULTS / "history.csv"

#: date: the run's start (ISO 8601, UTC) or a day; commit: the zasync code
#: measured; source: full run, partial run, A/B, tried, probe or issue
COLUMNS = [
    "date",
    "commit",
    "source",
    "workload",
    "setup",
    "figure",
    "value",
    "min",
    "max",
    "unit",
    "note",
]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def rows_of(data: dict) -> list[dict[str, str]]:
    """The history rows of one results.json (its ``meta`` and ``records``)."""
    meta = data.get("meta", {})
    date = meta.get("run_id", "")
    commit = (meta.get("machine") or {}).get("git") or ""
    stats: dict[tuple[str, str, str], dict] = {}
    for record in data.get("records", []):
        if record.get("run") not in ("median", "min", "max"):
            continue
        workload, _, figure = record["metric"].partition(" ")
        key = (workload, record["setup"], figure)
        figure_stats = stats.setdefault(key, {"unit": record.get("unit", "")})
        figure_stats[record["run"]] = record["value"]
    return [
        {
            "date": date,
            "commit": commit,
            "source": "full run" if meta.get("mode") == "full" else "partial run",
            "workload": workload,
            "setup": setup,
            "figure": figure,
            "value": _number(values.get("median")),
            "min": _number(values.get("min")),
            "max": _number(values.get("max")),
            "unit": values["unit"],
            "note": f"median of {(meta.get('params') or {}).get('runs', '?')} runs",
        }
        for (workload, setup, figure), values in stats.items()
    ]


def add(paths: list[Path], history: Path = HISTORY) -> int:
    """Append the runs of ``paths`` not yet in ``history``; return the rows
    added."""
    known: set[str] = set()
    if history.exists():
        with open(history, newline="") as f:
            known = {row["date"] for row in csv.DictReader(f)}
    exists = history.exists()
    added = 0
    with open(history, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        if not exists:
            writer.writeheader()
        for path in paths:
            rows = rows_of(json.loads(Path(path).read_text()))
            if not rows or rows[0]["date"] in known:
                print(f"{path}: already in {history.name} (or empty)", file=sys.stderr)
                continue
            writer.writerows(rows)
            known.add(rows[0]["date"])
            added += len(rows)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.history",
        description="Add full runs' figures to benchmarks/results/history.csv.",
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="RESULTS_JSON")
    parser.add_argument("--history", type=Path, default=HISTORY)
    args = parser.parse_args(argv)
    added = add(args.paths or [RESULTS / "results.json"], args.history)
    print(f"{added} rows added to {args.history}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
