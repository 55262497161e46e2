"""W5 producers under contention: four producer processes on ZEO each queue
their jobs one per transaction as fast as they can while two workers
consume. ConflictErrors are counted on the producers' side (caught around
commit, and the job queued again)."""

from __future__ import annotations

import json
import sys

from benchmarks import spawn
from benchmarks.context import Context, Watcher, open_installed
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader

LABEL = "ZEO, 4 producers, 2 workers"


def run(ctx: Context) -> None:
    p = ctx.params
    with ctx.setup("W5", LABEL):
        for index in range(p.runs):
            figures = _once(ctx)
            for metric, unit, value in figures:
                ctx.results.add("W5", LABEL, metric, unit, value)
            ctx.progress(
                f"W5 run {index + 1}/{p.runs}: "
                + ", ".join(f"{m} {v:.3g}" for m, _, v in figures)
            )
        kinds = ctx.results.extra.get("w5_conflicts") or {}
        top = sorted(kinds.items(), key=lambda kv: -kv[1])
        ctx.progress("W5 conflicts by kind: " + "; ".join(f"{k}: {n}" for k, n in top))


def _once(ctx: Context):
    p = ctx.params
    total = p.w5_producers * p.w5_jobs
    work = ctx.scratch("w5")
    stamps = StampReader(work / "stamps")
    with store_for("zeo", work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        workers, producers = [], []
        try:
            for index in range(2):
                workers.append(
                    spawn.cli_worker(
                        store.uri,
                        stamps=work / "stamps",
                        log=work / "logs" / f"worker-{index + 1}.log",
                        name=f"worker {index + 1}",
                    )
                )
            producers = spawn.gated(
                "producer",
                [
                    [sys.executable, "-m", "benchmarks.procs.producer"]
                    + ["--db", store.uri, "--out", str(work / f"producer-{tag}.json")]
                    + ["--count", str(p.w5_jobs), "--tag", str(tag)]
                    for tag in range(1, p.w5_producers + 1)
                ],
                stamps=work / "stamps",
                logs=work / "logs",
            )
            started = spawn.go(producers)
            for producer in producers:
                producer.read_line(timeout=600)
            ended = watcher.wait_completed(stamps, total, timeout=600, workers=workers)
            completed = watcher.completed_ids()
        finally:
            spawn.stop_all(producers)
            spawn.stop_all(workers)
            watcher.close()
            db.close()
    conflicts = 0
    kinds = ctx.results.extra.setdefault("w5_conflicts", {})
    shards = []
    for tag in range(1, p.w5_producers + 1):
        out = json.loads((work / f"producer-{tag}.json").read_text())
        conflicts += out["conflicts"]
        shards.append(out["shard"])
        for what, count in out["kinds"].items():
            kinds[what] = kinds.get(what, 0) + count
    expected = {
        (tag, i) for tag in range(1, p.w5_producers + 1) for i in range(p.w5_jobs)
    }
    ctx.progress(f"W5: the producers wrote shards {shards}")
    return [
        ("ConflictErrors per 1,000 producer commits", "", conflicts * 1000 / total),
        ("time until all COMPLETED", "s", ended - started),
        ("jobs lost", "", len(expected - completed)),
    ]
