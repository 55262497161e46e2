"""W3 idle cost: one worker on an empty queue, left idle; the storage's
growth, the transactions committed and the worker's CPU time, extrapolated
to one hour.

The runs of both setups go side by side (each with its own storage and
worker): an idle worker hardly competes for the machine, and the full
window (120 s) is then paid once."""

from __future__ import annotations

import contextlib
import time

from benchmarks import spawn
from benchmarks.context import Context, open_installed
from benchmarks.setups import store_for

SETUPS = {"a": ("a FileStorage", "file"), "b": ("b ZEO", "zeo")}
SETTLE = 2.0  # seconds after the start before the window opens


def run(ctx: Context) -> None:
    p = ctx.params
    window = p.w3_seconds
    runs = []  # (label, store, worker)
    with contextlib.ExitStack() as stack:
        for letter, (label, kind) in SETUPS.items():
            if not ctx.wants(letter):
                continue
            with ctx.setup("W3", label):
                for index in range(p.runs):
                    work = ctx.scratch(f"w3-{kind}-{index + 1}")
                    store = stack.enter_context(store_for(kind, work / "server"))
                    open_installed(store.uri).close()
                    worker = spawn.cli_worker(
                        store.uri,
                        stamps=work / "stamps",
                        log=work / "logs" / "worker.log",
                    )
                    stack.callback(worker.stop)
                    runs.append((label, store, worker))
        if not runs:
            return
        ctx.progress(
            f"W3: {len(runs)} idle workers side by side for {window:g} s"
            + (" (quick: extrapolated from a short window)" if p.quick else "")
        )
        time.sleep(SETTLE)
        before = [(s.size(), s.end(), w.cpu_seconds(), time.time()) for _, s, w in runs]
        time.sleep(window)
        after = [(s.size(), s.end(), w.cpu_seconds(), time.time()) for _, s, w in runs]
        for (label, store, _), b, a in zip(runs, before, after, strict=True):
            hours = (a[3] - b[3]) / 3600
            with ctx.setup("W3", label):
                txns = store.transactions_since(b[1])
                ctx.results.add(
                    "W3",
                    label,
                    "growth per idle hour",
                    "KB",
                    (a[0] - b[0]) / 1024 / hours,
                )
                ctx.results.add(
                    "W3", label, "transactions per idle hour", "", txns / hours
                )
                ctx.results.add(
                    "W3", label, "CPU per idle hour", "s", (a[2] - b[2]) / hours
                )
