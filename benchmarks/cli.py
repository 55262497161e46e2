"""``python -m benchmarks [--quick] [--only W1,W2] [--setups a,b]``.

Runs the workloads of ../shared/BENCH.md (W1-W6), the soak W7, W8 (fairness) and the
storages alone, prints a table with the targets, and writes the JSON
records and the plots to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from benchmarks import machine, plots, results
from benchmarks.context import Context, Params
from benchmarks.workloads import (
    enqueue,
    storage_alone,
    w1_throughput,
    w2_latency,
    w3_idle,
    w4_recovery,
    w5_contention,
    w6_plone,
    w7_soak,
    w8_fairness,
)

RESULTS = Path(__file__).resolve().parent / "results"

WORKLOADS = {
    "storage": storage_alone.run,
    "W1": w1_throughput.run,
    "W2": w2_latency.run,
    "enqueue": enqueue.run,
    "W3": w3_idle.run,
    "W4": w4_recovery.run,
    "W5": w5_contention.run,
    "W6": w6_plone.run,
    "W7": w7_soak.run,
    "W8": w8_fairness.run,
}

EPILOG = """\
examples:
  python -m benchmarks --quick                 # under 3 minutes
  python -m benchmarks                         # the full definitions, 16-32 min here
  python -m benchmarks --only W1 --setups b,e  # W1 on ZEO with 1 and 4 workers
  python -m benchmarks --only storage,W2 --runs 5
  python -m benchmarks --quick --only W7       # the soak, 1 minute

workloads: storage (the storages alone), W1-W6, W7 (soak: 10 min, quick 1 min,
           one run whatever --runs says), enqueue (a producer process's
           jobs/s and round trips per enqueue, ZEO and RelStorage: setups b, d),
           W8 (fairness: free jobs behind jobs blocked in a full quota; the
           cost of put with unique_key and lock; setup a only)
setups: a FileStorage, b ZEO 1 worker, c ZEO 2 workers, d RelStorage,
        e ZEO 4 workers (W1, W2, W3; W4 and W5 have their own),
        f ZEO, one `zasync worker --processes 2` command (W1);
        W6: q default quota 1 thread, u no quota 4 threads (the default),
        p default quota 4 threads
"""


def _names(text: str, valid, flag: str, parser) -> set[str]:
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = names - set(valid)
    if unknown:
        parser.error(
            f"{flag}: unknown {', '.join(sorted(unknown))}; use {', '.join(valid)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (< 3 min)")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated workloads")
    parser.add_argument("--setups", metavar="LETTERS", help="comma-separated setups")
    parser.add_argument("--runs", type=int, metavar="N", help="runs per figure (3)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, metavar="DIR", help="default: %(default)s"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    only = _names(args.only, list(WORKLOADS), "--only", parser) if args.only else None
    setups = (
        _names(args.setups, "abcdefqup", "--setups", parser) if args.setups else None
    )
    if args.runs is not None and args.runs < 1:
        parser.error("--runs: use 1 or more")
    params = Params.for_mode(args.quick, args.runs)
    mode = "quick" if args.quick else "full"
    ctx = Context(params, setups=setups, keep=args.keep)
    began = time.monotonic()
    info = machine.describe()
    print(f"zasync benchmarks ({mode}) on {machine.summary(info)}", file=sys.stderr)
    try:
        for name, run in WORKLOADS.items():
            if only is not None and name not in only:
                continue
            print(f"{name}...", file=sys.stderr, flush=True)
            clock = time.monotonic()
            with ctx.setup(name, "*"):
                run(ctx)
            print(f"{name}: {time.monotonic() - clock:.0f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", file=sys.stderr)
    finally:
        ctx.close()
    elapsed = time.monotonic() - began
    rows = results.table(ctx.results.figures)
    print()
    print(results.render_text(rows))
    print()
    each = (
        "each figure from one run"
        if params.runs == 1
        else f"each figure the median of {params.runs} runs"
    )
    print(f"{mode} run: {elapsed:.0f} s; {each}")
    info["load_average_at_end"] = os.getloadavg()[0]
    busy = max(info["load_average_at_start"], info["load_average_at_end"])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: the machine was busy with other work (load average {busy:.1f} "
            f"on {os.cpu_count()} CPUs): the figures are perturbed"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = "quick-" if args.quick else ""
    meta = {
        "run_id": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode,
        "seconds": round(elapsed, 1),
        "params": params.__dict__,
        "machine": info,
        "w5_conflicts": ctx.results.extra.get("w5_conflicts"),
        "w7_rss": ctx.results.extra.get("w7_rss"),
        "enqueue_trips": ctx.results.extra.get("enqueue_trips"),
    }
    json_path = args.out / f"{prefix}results.json"
    ctx.results.write_json(json_path, meta=meta)
    (args.out / f"{prefix}table.md").write_text(results.render_markdown(rows) + "\n")
    written = [json_path]
    if not args.no_plots:
        problem = plots.available()
        if problem:
            print(problem, file=sys.stderr)
        else:
            written += plots.write(ctx.results, args.out, prefix)
    for path in written:
        print(f"wrote {path}")
    return 0
