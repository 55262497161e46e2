"""W6 Plone jobs: in a Plone 6 site on ZEO, ``createDocument`` jobs queued
through ``IAsyncService`` by a member of the site, run by one
``zasync worker --zope-conf`` process, under the ``default`` quota (size 1,
one worker thread), then without quotas (``quota_names=()``, four threads).

The processes are those of ``make cluster`` (examples/cluster), from the
example files as they are; the environment gives them their paths
(``EXAMPLE_HOME``, ``EXAMPLE_VAR``) and the ZEO server's address:

- a ZEO server (zasync.testservers.ZEOServer, with blobs) for the whole
  workload;
- the producer, ``python -m benchmarks.procs.plone_producer`` with the instance's
  zope.conf: creates the site as examples/create_site.py does (with
  zasync), a member, and for each run a new folder where the member is
  Contributor, then queues the jobs as that member, 100 per transaction;
- for each run, once every job is queued (as in W1), a new worker,
  ``zasync worker --zope-conf examples/cluster/worker/etc/worker-1.conf
  --threads N`` with a UUID file of its own.

The runs share the site (one folder each, the setups taking turns), so
the catalog grows by the jobs of the runs before.

The clock runs from the dispatcher's start (the ``started`` time its
worker record gets when the dispatcher registers, after Zope's start-up,
which is reported apart) until the harness sees every job finished.
Latency is as in W2: start stamp minus the time the producer's commit (of
the job's batch) returned. In the quota-1 run, the ZEO server's file gives
the time of each job's two commits (its work, then its ``notify_finished``
callback, which completes it): the gap is from one job's completing commit
to the next job's start stamp.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from persistent.TimeStamp import TimeStamp
from ZODB.FileStorage import FileIterator
from ZODB.utils import u64

import zasync
from benchmarks import spawn
from benchmarks.context import Context, Watcher, percentile
from benchmarks.setups import SetupMissingError
from benchmarks.stamps import StampReader, first_starts
from zasync.failure import Failure
from zasync.storage import open_db
from zasync.testservers import ZEOServer

EXAMPLES = spawn.ROOT / "examples"
CLUSTER = EXAMPLES / "cluster"
INSTANCE_CONF = CLUSTER / "instance" / "etc" / "zope.conf"
WORKER_CONF = CLUSTER / "worker" / "etc" / "worker-1.conf"
MEMBER = "w6-member"
START_TIMEOUT = 240.0  # a Zope process on 2 busy CPUs
#: the workers' log level (INFO shows each conflict and batch), in logs/
LOG_LEVEL = os.environ.get("ZASYNC_BENCH_W6_LOG_LEVEL", "INFO")

#: letter -> (label, worker threads, jobs under the default quota); BENCH.md's
#: two by default, ``--setups p`` adds the default quota with four threads
SETUPS = {
    "q": ("Plone 6 on ZEO, default quota 1, 1 thread", 1, True),
    "u": ("Plone 6 on ZEO, no quota, 4 threads", 4, False),
    "p": ("Plone 6 on ZEO, default quota 1, 4 threads", 4, True),
}
DEFAULT = "qu"


def letters(ctx: Context) -> str:
    """The setups of W6 to run: those named by --setups, else the default."""
    chosen = "".join(k for k in SETUPS if ctx.setups and k in ctx.setups)
    return chosen or DEFAULT


def _plone_missing() -> str | None:
    try:
        import Products.CMFPlone  # noqa: F401, PLC0415 - optional: the plone extra
        import ZEO  # noqa: F401, PLC0415 - optional: the zeo extra

        import zasync.plone.service  # noqa: F401, PLC0415 - needs Plone
    except ImportError as e:
        return (
            f"needs Plone and ZEO ({e}): pip install -c constraints.txt 'zasync[plone]'"
        )
    return None


def run(ctx: Context) -> None:
    problem = _plone_missing()
    if problem:
        raise SetupMissingError(problem)

    p = ctx.params
    work = ctx.scratch("w6")
    server = ZEOServer(work / "server", blobs=True)
    server.start()
    env = {
        "EXAMPLE_HOME": str(CLUSTER),
        "EXAMPLE_VAR": str(server.directory),
        "ZEO_ADDRESS": "{}:{}".format(*server.address),
    }
    producer = db = watcher = None
    try:
        producer = spawn.Proc(
            "producer",
            [sys.executable, "-m", "benchmarks.procs.plone_producer"]
            + ["--zope-conf", str(INSTANCE_CONF)],
            stamps=work / "stamps",
            log=work / "logs" / "producer.log",
            env=env,
        )
        _line(producer, lambda line: line == "ready", START_TIMEOUT)
        clock = time.monotonic()
        quotas = _ask(producer, {"op": "setup", "user": MEMBER}, START_TIMEOUT)
        ctx.progress(
            f"W6: site created in {time.monotonic() - clock:.0f} s; "
            f"quotas of queue '': {quotas['quotas']}"
        )
        if quotas["quotas"].get("default") != 1:
            raise RuntimeError(f"the default quota is not of size 1: {quotas}")
        db = open_db(server.uri)
        watcher = Watcher(db)
        tag = 0
        for index in range(p.runs):
            for key in letters(ctx):
                label, threads, quota = SETUPS[key]
                tag += 1
                with ctx.setup("W6", label):
                    figures = _once(
                        ctx,
                        server=server,
                        env=env,
                        producer=producer,
                        watcher=watcher,
                        tag=tag,
                        threads=threads,
                        quota=quota,
                    )
                    for metric, unit, value in figures:
                        ctx.results.add("W6", label, metric, unit, value)
                    shown = {m: v for m, _, v in figures}
                    ctx.progress(
                        f"W6 {key} run {index + 1}/{p.runs}: "
                        f"{shown['throughput']:.1f} jobs/s, p50 latency "
                        f"{shown['p50 latency']:.1f} s"
                        + (
                            f", gap median {shown['gap, median']:.1f} ms, "
                            f"max {shown['gap, max']:.1f} ms"
                            if "gap, median" in shown
                            else ""
                        )
                    )
    finally:
        if watcher is not None:
            watcher.close()
        if db is not None:
            db.close()
        if producer is not None:
            if producer.popen.poll() is None:
                try:
                    producer.send(json.dumps({"op": "quit"}))
                    producer.popen.wait(30)
                except Exception:
                    pass
            producer.stop()
        server.stop()


def _line(proc: spawn.Proc, wanted, timeout: float) -> str:
    """The first line of ``proc``'s output for which ``wanted`` is true
    (Zope may print other lines first)."""
    deadline = time.monotonic() + timeout
    while True:
        line = proc.read_line(max(1.0, deadline - time.monotonic()))
        if wanted(line):
            return line


def _ask(proc: spawn.Proc, command: dict, timeout: float) -> dict:
    proc.send(json.dumps(command))
    line = _line(proc, lambda line: line.startswith("W6 "), timeout)
    answer = json.loads(line[3:])
    if "error" in answer:
        raise RuntimeError(f"{proc.name}: {answer['error']}{proc.tail()}")
    return answer


def _once(ctx, *, server, env, producer, watcher, tag, threads, quota):
    p = ctx.params
    count = p.w6_jobs
    work = ctx.scratch(f"w6-{tag}")
    queued = _ask(
        producer,
        {
            "op": "queue",
            "user": MEMBER,
            "folder": f"w6-run-{tag}",
            "tag": tag,
            "count": count,
            "batch": p.w6_batch,
            "quotas": quota,
        },
        timeout=600,
    )
    commits = queued["commits"]
    queueing = commits[-1] - queued["began"]
    position = os.path.getsize(server.data_path)
    stamps = StampReader(work / "stamps")
    launched = time.time()
    worker = spawn.Proc(
        "worker",
        [sys.executable, "-m", "zasync", "--log-level", LOG_LEVEL, "worker"]
        + ["--zope-conf", str(WORKER_CONF), "--threads", str(threads)]
        + ["--uuid-file", str(work / "worker.uuid")],
        stamps=work / "stamps",
        log=work / "logs" / "worker.log",
        env=env,
    )
    try:
        line = worker.wait_in_log(spawn.WORKER_READY, 240)
        uuid = line.split(", uuid ", 1)[1].split(",", 1)[0]
        ended = watcher.wait_completed(stamps, count, timeout=900, workers=[worker])
    finally:
        worker.stop()
    started, done, failures, conflicts = _outcome(watcher, uuid, tag)
    if len(done) + len(failures) < count:
        raise RuntimeError(
            f"only {len(done) + len(failures)} of {count} jobs COMPLETED"
        )
    if failures:
        ctx.progress(f"W6: {len(failures)} jobs failed, the first: {failures[0]}")
    _check_documents(producer, f"w6-run-{tag}", len(done))
    starts = first_starts(stamps.all())
    latencies = [starts[(tag, i)] - t for i, t in enumerate(commits)]
    figures = [
        ("throughput", "jobs/s", count / (ended - started)),
        ("p50 latency", "s", percentile(latencies, 50)),
        ("worker process start to dispatcher start", "s", started - launched),
        ("queueJob in the producer, per job", "ms", queueing * 1000 / count),
        ("ConflictErrors per job", "", conflicts / count),
        ("jobs failed", "", len(failures)),
    ]
    if quota:
        figures += _gaps(
            work / "stamps",
            server.data_path,
            position,
            after="completed" if threads == 1 else "work",
        )
    return figures


def _outcome(watcher: Watcher, uuid: str, tag: int):
    """(the dispatcher's start, the indexes of the run's jobs COMPLETED
    without error, the failures' messages, the ConflictErrors its jobs
    met), from the database."""
    from zasync.plone.runner import run_as_user  # noqa: PLC0415 - needs Plone

    watcher.tm.begin()
    try:
        queues = watcher.conn.root()[zasync.KEY]
        record = queues.workers[uuid]
        done, failures, conflicts = set(), [], 0
        for slot in record.slots:
            for job in slot.done.values():
                if job.callable is not run_as_user or job.args[2] != tag:
                    continue
                conflicts += job._conflicts
                if isinstance(job._result, Failure):
                    failures.append(job._result.getErrorMessage())
                elif job.status == zasync.COMPLETED:
                    done.add(job.args[3])
        return record.started, done, failures, conflicts
    finally:
        watcher.tm.abort()


def _check_documents(producer: spawn.Proc, folder: str, count: int) -> None:
    """The folder holds a document for each job that did not fail, made
    and owned by the member who queued it (asked of the producer, which
    has Plone's components)."""
    found = _ask(producer, {"op": "check", "folder": folder}, timeout=120)
    expected = {MEMBER: count} if count else {}
    if found["owners"] != expected or found["creators"] != expected:
        raise RuntimeError(
            f"{folder}: documents by owner {found['owners']}, by creator "
            f"{found['creators']}; expected {expected}"
        )


def _ends(directory: Path) -> list[tuple[float, int, float]]:
    """(start, job oid, return) of each job's last attempt, in the order
    they started, from the ``.ends`` files."""
    last: dict[int, tuple[float, int, float]] = {}
    for path in directory.glob("*.ends"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                row = (float(parts[4]), int(parts[3]), float(parts[0]))
                if row[1] not in last or last[row[1]] < row:
                    last[row[1]] = row
    return sorted(last.values())


def _commit_times(data_path: Path, position: int, oids: set[int]):
    """oid -> the times of the transactions (their tids) that wrote it,
    for the transactions after ``position`` in the FileStorage file."""
    writes: dict[int, list[float]] = {}
    iterator = FileIterator(str(data_path), pos=position)
    try:
        for txn in iterator:
            when = TimeStamp(txn.tid).timeTime()
            for record in txn:
                oid = u64(record.oid)
                if oid in oids:
                    writes.setdefault(oid, []).append(when)
    finally:
        iterator.close()
    return writes


def _gaps(stamps: Path, data_path: Path, position: int, *, after: str):
    """For jobs run one at a time: where each job's time goes, and the gap
    until the next job starts: from the previous job's completing commit
    (``after="completed"``: one thread, busy until then), or from its work's
    commit, which frees the quota (``after="work"``)."""
    jobs = _ends(stamps)
    writes = _commit_times(data_path, position, {oid for _, oid, _ in jobs})
    callback, gaps, own, commit = [], [], [], []
    for (start, oid, returned), (next_start, _, _) in zip(jobs, jobs[1:], strict=False):
        times = sorted(t for t in writes.get(oid, ()) if t > start)
        if len(times) < 2:
            raise RuntimeError(f"job oid {oid}: {len(times)} commits after its start")
        own.append(returned - start)
        commit.append(times[0] - returned)
        callback.append(times[-1] - times[0])
        gaps.append(next_start - (times[-1] if after == "completed" else times[0]))
    ms = 1000.0
    return [
        ("gap, median", "ms", statistics.median(gaps) * ms),
        ("gap, max", "ms", max(gaps) * ms),
        ("createDocument, median", "ms", statistics.median(own) * ms),
        ("return to work committed, median", "ms", statistics.median(commit) * ms),
        (
            "work committed to callback committed, median",
            "ms",
            statistics.median(callback) * ms,
        ),
    ]
