"""The storages alone: how many small commits per second one client makes
(one object changed per transaction), to set beside the workloads, whose
rates a storage's commit rate bounds."""

from __future__ import annotations

import time

import transaction
from persistent.mapping import PersistentMapping

from benchmarks.context import Context
from benchmarks.setups import store_for

SETUPS = {
    "a": ("FileStorage", "file"),
    "b": ("ZEO", "zeo"),
    "d": ("RelStorage", "relstorage"),
}


def run(ctx: Context) -> None:
    p = ctx.params
    for _letter, (label, kind) in SETUPS.items():
        with ctx.setup("storage", label):
            for _index in range(p.runs):
                rate = _once(ctx, kind, p.storage_seconds)
                ctx.results.add("storage", label, "commits/s, one client", "1/s", rate)
            median = ctx.results.figure(
                "storage", label, "commits/s, one client", "1/s"
            ).median
            ctx.progress(f"storage {label}: {median:,.0f} commits/s")


def _once(ctx: Context, kind: str, seconds: float) -> float:
    from zasync.storage import open_db

    work = ctx.scratch(f"storage-{kind}")
    with store_for(kind, work / "server") as store:
        db = open_db(store.uri)
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                conn.root()["bench"] = PersistentMapping()
            count = 0
            started = time.perf_counter()
            deadline = started + seconds
            while True:
                with tm:
                    conn.root()["bench"]["n"] = count
                count += 1
                if count % 16 == 0 and time.perf_counter() > deadline:
                    break
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
            db.close()
    return count / elapsed
