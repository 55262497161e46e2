"""W4 crash recovery: 200 jobs of 0.2 s, two workers on ZEO, one killed
with SIGKILL while jobs run. Two cases: ``lease`` (the survivor rescues the
dead worker's jobs once its lease has run out) and ``restart`` (the killed
worker is started again at once under the same UUID and recovers them
itself)."""

from __future__ import annotations

import time
from collections import defaultdict

from benchmarks import spawn
from benchmarks.context import Context, Watcher, enqueue, open_installed
from benchmarks.jobs import nap
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader

LABELS = {
    "lease": "ZEO, 2 workers, one killed (lease)",
    "restart": "ZEO, 2 workers, one killed and restarted",
}
#: after the kill, how long to wait for the rest at most
TIMEOUT = 300.0


def run(ctx: Context) -> None:
    p = ctx.params
    for case in ("lease", "restart"):
        label = LABELS[case]
        if case not in p.w4_cases:
            ctx.results.note(
                "W4", label, "skipped in quick mode (waits for the 30 s lease)"
            )
            continue
        with ctx.setup("W4", label):
            for index in range(p.runs):
                figures = _once(ctx, restart=case == "restart")
                for metric, unit, value in figures:
                    if value is not None:
                        ctx.results.add("W4", label, metric, unit, value)
                text = ", ".join(
                    f"{metric} {value:.3g}"
                    for metric, _, value in figures
                    if value is not None
                )
                ctx.progress(f"W4 {case} run {index + 1}/{p.runs}: {text}")


def _once(ctx: Context, *, restart: bool):
    p = ctx.params
    jobs = p.w4_jobs
    work = ctx.scratch("w4-" + ("restart" if restart else "lease"))
    stamps = StampReader(work / "stamps")
    with store_for("zeo", work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        group = []
        try:
            enqueue(db, jobs, batch=100, func=nap)

            def start(name: str) -> spawn.Proc:
                proc = spawn.cli_worker(
                    store.uri,
                    stamps=work / "stamps",
                    log=work / "logs" / f"{name}-{len(group)}.log",
                    name=name,
                    uuid_file=work / f"{name}.uuid",
                )
                group.append(proc)
                return proc

            victim = start("victim")
            start("survivor")
            # Kill while both run jobs, a few rounds in.
            deadline = time.monotonic() + 30
            while stamps.count() < 24 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # in the middle of a job
            victim.kill()
            killed = time.time()
            started_by_victim = {
                (s.a, s.b) for s in stamps.all() if s.pid == victim.pid
            }
            interrupted = started_by_victim - watcher.completed_ids()
            if restart:
                start("victim")
            error = None
            try:
                watcher.wait_completed(stamps, jobs, timeout=TIMEOUT)
            except TimeoutError as e:
                error = e
            completed = watcher.completed_ids()
        finally:
            spawn.stop_all(group)
            watcher.close()
            db.close()
    runs = defaultdict(list)
    for s in stamps.all():
        runs[(s.a, s.b)].append(s.time)
    lost = sum(1 for i in range(jobs) if (0, i) not in completed)
    if lost and error is not None:
        ctx.progress(f"W4: {error}")
    twice = sum(1 for times in runs.values() if len(times) > 1)
    again = [
        min((t for t in runs[key] if t > killed), default=None) for key in interrupted
    ]
    recovery = None
    if interrupted and None not in again:
        recovery = max(again) - killed
    return [
        ("jobs lost", "", lost),
        ("running at the kill", "", len(interrupted)),
        ("run twice", "", twice),
        (
            "run twice beyond those running at the kill",
            "",
            max(0, twice - len(interrupted)),
        ),
        ("kill to last interrupted job running again", "s", recovery),
    ]
