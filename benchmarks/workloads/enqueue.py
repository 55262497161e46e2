"""Enqueue: how fast a producer process queues jobs, and what each enqueue
asks of the storage server.

As W1 queues its jobs (before its workers start), a producer process
(``python -m benchmarks.procs.producer``) queues ``add`` jobs one per
transaction as fast as it can, with no worker running. Figures: jobs per
second, the same against the storage's commits/s alone measured in this
run (when ``storage`` ran: of one small object, and of what one enqueue
writes, with none of zasync's code), and per enqueue, counted in another producer
process that queues ``enqueue_counted`` jobs more on the same database
(``--count-trips``, benchmarks.roundtrips, whose wrappers cost the timed
run 5 % on ZEO when it counted too): the round trips besides the
commit's own, the commit's, the objects loaded and the objects written.
On ZEO, then, a producer queues as many jobs with one ``queue.put_many``
in one transaction: jobs per second. (W2 counts the round trips of an
enqueue with a worker idle, whose threads the jobs are handed to.)
"""

from __future__ import annotations

import json
import sys

from benchmarks import spawn
from benchmarks.context import Context, open_installed
from benchmarks.setups import store_for
from benchmarks.workloads.storage_alone import RATE, SHAPED

#: letter -> (label, storage kind, label of the storage alone)
SETUPS = {
    "b": ("b ZEO", "zeo", "ZEO"),
    "d": ("d RelStorage", "relstorage", "RelStorage"),
}

ONE = "jobs/s, one per transaction"
BULK = "jobs/s, put_many"
TRIPS = "round trips per enqueue besides its commit"
PER_ENQUEUE = (
    (TRIPS, "round_trips"),
    ("commit round trips per enqueue", "commit_round_trips"),
    ("objects loaded per enqueue", "objects_loaded"),
    ("objects written per enqueue", "objects_written"),
)


def run(ctx: Context) -> None:
    p = ctx.params
    for letter, (label, kind, alone) in SETUPS.items():
        if not ctx.wants(letter):
            continue
        with ctx.setup("enqueue", label):
            for index in range(p.runs):
                one, trips, bulk = _once(ctx, kind)
                ctx.results.add("enqueue", label, ONE, "jobs/s", one)
                for metric, key in PER_ENQUEUE:
                    ctx.results.add("enqueue", label, metric, "", trips[key])
                ctx.results.extra.setdefault("enqueue_trips", {}).setdefault(
                    label, []
                ).append(trips)
                if bulk is not None:
                    ctx.results.add("enqueue", label, BULK, "jobs/s", bulk)
                ctx.progress(
                    f"enqueue {label} run {index + 1}/{p.runs}: {one:,.0f} jobs/s, "
                    f"{trips['round_trips']:.2f} round trips besides the commit"
                    + ("" if bulk is None else f"; put_many {bulk:,.0f} jobs/s")
                )
            for against, rate in (
                ("against the storage alone", RATE),
                ("against the storage alone, an enqueue's three objects", SHAPED),
            ):
                ctx.results.ratio(
                    "enqueue", label, against, (label, ONE), [("storage", alone, rate)]
                )


def _once(ctx: Context, kind: str) -> tuple[float, dict, float | None]:
    p = ctx.params
    work = ctx.scratch(f"enqueue-{kind}")
    with store_for(kind, work / "server") as store:
        open_installed(store.uri).close()
        one = _produce(work, store.uri, p.enqueue_jobs, "one", count_trips=False)
        trips = _produce(work, store.uri, p.enqueue_counted, "counted")["trips"]
        bulk = None
        if kind == "zeo":
            count = p.enqueue_bulk
            bulk = (
                count / _produce(work, store.uri, count, "bulk", bulk=True)["seconds"]
            )
    return p.enqueue_jobs / one["seconds"], trips, bulk


def _produce(
    work, uri: str, count: int, name: str, *, bulk: bool = False, count_trips=True
) -> dict:
    out = work / f"producer-{name}.json"
    argv = [sys.executable, "-m", "benchmarks.procs.producer", "--db", uri]
    argv += ["--out", str(out), "--count", str(count)]
    if count_trips:
        argv.append("--count-trips")
    if bulk:
        argv.append("--bulk")
    producer = spawn.Proc(
        f"producer ({name})",
        argv,
        stamps=work / "stamps",
        log=work / "logs" / f"producer-{name}.log",
    )
    try:
        if producer.read_line() != "ready":
            raise spawn.ProcessFailedError(f"producer not ready{producer.tail()}")
        producer.send("go")
        producer.read_line(timeout=count / 50 + 120)
    finally:
        producer.stop()
    return json.loads(out.read_text())
