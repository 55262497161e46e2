"""The storages alone: how many small commits per second one client makes
(one object changed per transaction), to set beside the workloads, whose
rates a storage's commit rate bounds; and how long one such commit takes
at W2's pace (one every 20 ms, the storage and the client idle in
between), to set beside W2's latencies from the call; and how many commits
of what one enqueue writes (a new small object, a mapping of about a
bucket's size holding it, a counter: benchmarks.procs.storage_client)
one client makes, with none of zasync's code, to set beside the enqueue
rates. ZEO also with 2 and 4 client
processes, each changing an object of its own, as W1's workers do: what the
storage allows all of them together, and the CPU each commit costs the
clients (each receives the others' invalidations) and the server."""

from __future__ import annotations

import json
import sys
from functools import partial

import transaction
from persistent.mapping import PersistentMapping

from benchmarks import spawn
from benchmarks.context import Context, percentile
from benchmarks.procs.storage_client import (
    commit_loop,
    enqueue_shaped_loop,
    paced_commits,
)
from benchmarks.results import Figure
from benchmarks.setups import store_for
from zasync.storage import open_db

SETUPS = {
    "a": ("FileStorage", "file"),
    "b": ("ZEO", "zeo"),
    "d": ("RelStorage", "relstorage"),
}

#: label -> client processes, all on one ZEO server (W1 (c) and (e))
ZEO_CLIENTS = {"ZEO, 2 clients": 2, "ZEO, 4 clients": 4}

RATE = "commits/s, one client"
ALL = "commits/s, all clients"
CLIENT_CPU = "clients' CPU per 1,000 commits"
SERVER_CPU = "server's CPU per 1,000 commits"
PACED = "one commit at W2's pace"
SHAPED = "commits/s, one client, an enqueue's three objects"


def run(ctx: Context) -> None:
    p = ctx.params
    # ZEO's commits/s by the number of clients, for the plot of W1
    by_clients = ctx.results.extra.setdefault("zeo_clients", {})
    for _letter, (label, kind) in SETUPS.items():
        with ctx.setup("storage", label):
            figure = _runs(
                ctx, label, RATE, partial(_once, ctx, kind, p.storage_seconds)
            )
            if kind == "zeo":
                by_clients[1] = figure.samples
            ctx.progress(f"storage {label}: {figure.median:,.0f} commits/s")
    for label, clients in ZEO_CLIENTS.items():
        with ctx.setup("storage", label):
            figure = _runs(
                ctx, label, ALL, partial(_clients, ctx, clients, p.storage_seconds)
            )
            by_clients[clients] = figure.samples
            ctx.progress(f"storage {label}: {figure.median:,.0f} commits/s in all")
    # What W1 (e) against (b) and (c) is set beside: four clients against
    # the faster of one and two.
    ctx.results.ratio(
        "storage",
        "ZEO, 4 clients",
        "commits/s against 1 or 2 clients",
        ("ZEO, 4 clients", ALL),
        [("ZEO", RATE), ("ZEO, 2 clients", ALL)],
    )


def _runs(ctx: Context, label: str, rate: str, once) -> Figure:
    """Call ``once()`` for each run, add the figures it returns ((metric,
    unit, value)) to setup ``label``, and return its figure ``rate``."""
    for _index in range(ctx.params.runs):
        for metric, unit, value in once():
            ctx.results.add("storage", label, metric, unit, value)
    return ctx.results.figure("storage", label, rate, "1/s")


def _once(ctx: Context, kind: str, seconds: float) -> list:
    """Figures of one client in the harness's process (and of the server,
    for ZEO)."""
    work = ctx.scratch(f"storage-{kind}")
    with store_for(kind, work / "server") as store:
        db = open_db(store.uri)
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                conn.root()["bench"] = PersistentMapping()
            server_cpu = spawn.server_cpu_seconds(store)
            count, elapsed, cpu = commit_loop(conn, tm, "bench", seconds)
            if server_cpu is not None:
                server_cpu = spawn.server_cpu_seconds(store) - server_cpu
            p = ctx.params
            paced = paced_commits(conn, tm, "bench", p.paced_commits, p.w2_interval)
            shaped, shaped_seconds = enqueue_shaped_loop(conn, tm, "shaped", seconds)
        finally:
            conn.close()
            db.close()
    figures = [(RATE, "1/s", count / elapsed), (CLIENT_CPU, "s", cpu * 1000 / count)]
    if server_cpu is not None:
        figures.append((SERVER_CPU, "s", server_cpu * 1000 / count))
    figures += [
        (f"{PACED}, p50", "ms", percentile(paced, 50)),
        (f"{PACED}, p99", "ms", percentile(paced, 99)),
        (SHAPED, "1/s", shaped / shaped_seconds),
    ]
    return figures


def _clients(ctx: Context, clients: int, seconds: float) -> list:
    """Figures of ``clients`` processes (``benchmarks.procs.storage_client``)
    committing at once on one ZEO server."""
    work = ctx.scratch(f"storage-zeo-{clients}")
    with store_for("zeo", work / "server") as store:
        open_db(store.uri).close()  # the root, made before they start
        argvs = [
            [
                sys.executable,
                "-m",
                "benchmarks.procs.storage_client",
                store.uri,
                f"client{index}",
                str(seconds),
            ]
            for index in range(clients)
        ]
        group = spawn.gated("client", argvs, stamps=work / "stamps", logs=work / "logs")
        try:
            server_cpu = spawn.server_cpu_seconds(store)
            spawn.go(group)
            reports = [json.loads(proc.read_line(seconds + 60)) for proc in group]
            server_cpu = spawn.server_cpu_seconds(store) - server_cpu
        finally:
            spawn.stop_all(group)
    commits = sum(r["commits"] for r in reports)
    return [
        (ALL, "1/s", sum(r["commits"] / r["seconds"] for r in reports)),
        (CLIENT_CPU, "s", sum(r["cpu"] for r in reports) * 1000 / commits),
        (SERVER_CPU, "s", server_cpu * 1000 / commits),
    ]
