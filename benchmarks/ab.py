"""Interleaved A/B runs of the harness on two source trees.

``python -m benchmarks.ab --a /work/base --b /work/main --pairs 3 --only W1,W2
--out DIR`` runs, for each pair, ``python -m benchmarks --quick --only ...
--out DIR/<a|b>-<n>`` in tree A and in tree B, A first in odd pairs and B
first in even ones (so a drift of the machine's load falls on both). Each
side runs in its own tree (cwd) with ``PYTHONPATH=<tree>/src:<tree>``: its
own engine and its own harness, and the child processes the harness starts
inherit that path. Then it reads each run's ``quick-results.json`` and
prints, one line per figure, the median over the pairs of A and of B and
their ratio, oriented so that >= 1 means B is no worse: B/A where higher is
better (throughput), A/B where lower is (latency, CPU, bytes, counts). The
table also goes to ``DIR/ab.md``; each run's output to ``DIR/<a|b>-<n>/run.log``.

``--table-only`` rebuilds the table from the runs already in ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import fmt

#: units of the figures where higher is better; lower is better for the rest
HIGHER_IS_BETTER = {"jobs/s", "commits/s", "1/s", "x"}


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a run in ``tree``: its engine and its harness first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{tree / 'src'}{os.pathsep}{tree}"
    return env


def check_tree(python: str, tree: Path) -> str:
    """Fail unless ``tree``'s zasync and benchmarks are the ones imported
    there; return a line saying which commit it is."""
    code = (
        "import zasync, benchmarks; print(zasync.__file__); print(benchmarks.__file__)"
    )
    out = subprocess.run(
        [python, "-c", code],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for path, where in zip(
        out, (tree / "src" / "zasync", tree / "benchmarks"), strict=True
    ):
        if Path(path).resolve().parent != where.resolve():
            raise SystemExit(f"{tree}: imports {path}, not the one in {where}")
    git = ["git", "-C", str(tree)]
    commit = subprocess.run(
        [*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{tree} at {commit[:72]}" + (" (with uncommitted changes)" if dirty else "")


def run_one(python: str, tree: Path, out: Path, harness_args: list[str]) -> bool:
    """One run of the harness in ``tree``, writing to ``out``; True if it
    ended well."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "benchmarks", *harness_args, "--out", str(out)]
    began = time.monotonic()
    with open(out / "run.log", "w") as log:
        log.write(" ".join(argv) + "\n")
        log.flush()
        code = subprocess.call(
            argv, cwd=tree, env=tree_env(tree), stdout=log, stderr=subprocess.STDOUT
        )
    elapsed = time.monotonic() - began
    state = "ok" if code == 0 else f"FAILED (exit {code}), see {out / 'run.log'}"
    print(f"  {out.name}: {elapsed:.0f} s, {state}", flush=True)
    return code == 0


def read_run(directory: Path) -> dict[tuple[str, str, str], tuple[float, str]]:
    """(workload, setup, metric) -> (median, unit) of one run's figures."""
    path = directory / "quick-results.json"
    if not path.exists():
        path = directory / "results.json"
    if not path.exists():
        return {}
    found = {}
    for record in json.loads(path.read_text())["records"]:
        if record["run"] != "median" or record["value"] is None:
            continue
        workload, metric = record["metric"].split(" ", 1)
        found[(workload, record["setup"], metric)] = (record["value"], record["unit"])
    return found


def ratio(a: float, b: float, higher: bool) -> float | None:
    """>= 1 when B is no worse than A."""
    top, bottom = (b, a) if higher else (a, b)
    if bottom == 0:
        return 1.0 if top == 0 else None
    return top / bottom


def table(out: Path, pairs: int) -> list[list[str]]:
    runs = {
        side: [read_run(out / f"{side}-{n}") for n in range(1, pairs + 1)]
        for side in "ab"
    }
    keys: list[tuple[str, str, str]] = []
    for side in "ba":  # B's harness first: the order of its table
        for run in runs[side]:
            keys += [key for key in run if key not in keys]
    # By workload and setup; a figure only one side has stays in its place.
    keys.sort(key=lambda key: (key[0], key[1]))
    header = ["", "setup", "metric", "unit", "A", "B", "ratio", "A range", "B range"]
    rows = [header]
    for key in keys:
        values = {
            side: [run[key][0] for run in runs[side] if key in run] for side in "ab"
        }
        unit = next(run[key][1] for side in "ab" for run in runs[side] if key in run)
        higher = unit in HIGHER_IS_BETTER
        med = {s: statistics.median(v) if v else None for s, v in values.items()}
        if med["a"] is None or med["b"] is None:
            shown = "-"
        else:
            r = ratio(med["a"], med["b"], higher)
            shown = "inf" if r is None else f"{r:.2f} ({'B/A' if higher else 'A/B'})"
        spread = {
            s: f"{fmt(min(v))}-{fmt(max(v))} (n={len(v)})" if v else "-"
            for s, v in values.items()
        }
        rows.append(
            [*key, unit, fmt(med["a"]), fmt(med["b"]), shown, spread["a"], spread["b"]]
        )
    return rows


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            f"{cell:>{widths[i]}}" if i in (4, 5) else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_markdown(rows: list[list[str]], heading: list[str]) -> str:
    lines = [*heading, ""]
    lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--a", type=Path, required=True, help="tree A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="tree B")
    parser.add_argument("--pairs", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--only", default="W1,W2", help="default: %(default)s")
    parser.add_argument("--setups", metavar="LETTERS", help="passed to the harness")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument(
        "--python", default=sys.executable, help="default: this Python (%(default)s)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="only the table of the runs in DIR"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pairs < 1:
        raise SystemExit("--pairs: use 1 or more")
    trees = {"a": args.a.resolve(), "b": args.b.resolve()}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    heading = [f"# A/B: {args.pairs} pair(s), --quick --only {args.only}"]
    heading += [
        f"- {side.upper()}: {check_tree(args.python, trees[side])}" for side in "ab"
    ]
    failed = 0
    if not args.table_only:
        harness_args = ["--quick", "--only", args.only, "--no-plots"]
        if args.setups:
            harness_args += ["--setups", args.setups]
        began = time.monotonic()
        load = os.getloadavg()[0]
        for line in heading[1:]:
            print(line, flush=True)
        for n in range(1, args.pairs + 1):
            order = "ab" if n % 2 else "ba"
            print(f"pair {n}/{args.pairs}: {order[0].upper()} first", flush=True)
            for side in order:
                if not run_one(
                    args.python, trees[side], out / f"{side}-{n}", harness_args
                ):
                    failed += 1
        elapsed = time.monotonic() - began
        heading.append(
            f"- {elapsed:.0f} s; load average {load:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end"
        )
    heading.append(
        "- A, B: medians over the pairs of each run's figure; ratio >= 1: B no "
        "worse (B/A where higher is better, A/B where lower is)"
    )
    rows = table(out, args.pairs)
    print()
    print(render_text(rows))
    (out / "ab.md").write_text(render_markdown(rows, heading))
    print(f"\nwrote {out / 'ab.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
