"""Callables that tests queue as jobs.

Jobs are stored by reference (module and qualified name), so everything a
test queues lives here, at module level. State shared with the test thread
is kept in module-level registries keyed by a name the test chooses
(``gate(name)``), which ``reset()`` clears between tests.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import persistent
import transaction
from persistent.list import PersistentList
from ZODB.POSException import ConflictError

from zasync import local

# -- registries shared with the test thread ----------------------------------

_lock = threading.Lock()
_gates: dict[str, threading.Event] = {}
#: calls per key, counted in the worker thread (a retried call counts again)
calls: defaultdict[str, int] = defaultdict(int)
#: (key, thread name) per call, in call order
trace: list[tuple[str, str]] = []
_flags: set[str] = set()


def gate(name: str) -> threading.Event:
    """The event named ``name`` (made on first use)."""
    with _lock:
        event = _gates.get(name)
        if event is None:
            event = _gates[name] = threading.Event()
        return event


def open_all_gates() -> None:
    with _lock:
        events = list(_gates.values())
    for event in events:
        event.set()


def reset() -> None:
    open_all_gates()
    with _lock:
        _gates.clear()
        calls.clear()
        trace.clear()
        _flags.clear()
        delivered.clear()
        slow_commits.clear()


def _count(key: str) -> int:
    with _lock:
        calls[key] += 1
        trace.append((key, threading.current_thread().name))
        return calls[key]


def first_time(flag: str) -> bool:
    """True the first time it is asked about ``flag``."""
    with _lock:
        if flag in _flags:
            return False
        _flags.add(flag)
        return True


# -- plain functions -------------------------------------------------------------


def add(a, b):
    return a + b


def call(func, *args):
    return func(*args)


def identity(value):
    return value


def noop():
    return None


def boom(message="FooBared"):
    raise RuntimeError(message)


def count(key, result=None):
    """Count a call under ``key``; return ``result``."""
    _count(key)
    return result


def thread_name(*args):
    """The name of the thread that runs the job (args are ignored)."""
    return threading.current_thread().name


def record(key, value):
    """A callback: count under ``key`` and return what it was given."""
    _count(key)
    return value


def describe(result):
    """A callback: what kind of result the job had."""
    from zasync import Failure

    if isinstance(result, Failure):
        return ("failure", result.type_name, result.getErrorMessage())
    return ("value", result)


def on_success(result):
    return ("success", result)


def on_failure(failure):
    return ("failure", failure.getErrorMessage())


def wait_for(name, timeout=20.0, result=None):
    """Block until the gate ``name`` opens (or ``timeout``); return
    ``result``."""
    _count(name)
    if not gate(name).wait(timeout):
        raise RuntimeError(f"gate {name!r} did not open within {timeout} s")
    return result


def signal_and_wait(started, release, timeout=20.0):
    """Open gate ``started``, then wait for gate ``release``."""
    _count(started)
    gate(started).set()
    if not gate(release).wait(timeout):
        raise RuntimeError(f"gate {release!r} did not open within {timeout} s")
    return "released"


def wait_first_time(name, *args, timeout=20.0):
    """The first call opens gate ``name + '-started'`` and waits for gate
    ``name``; later calls return at once. Returns the call's number."""
    call = _count(name)
    if call == 1:
        gate(name + "-started").set()
        gate(name).wait(timeout)
    return call


def meet(mine, other, timeout=10.0):
    """Open gate ``mine`` and wait for gate ``other``: returns True only if
    the two jobs ran at the same time."""
    gate(mine).set()
    return gate(other).wait(timeout)


def interval(key, seconds=0.01):
    """Count, hold the thread a moment so overlapping jobs would overlap,
    return (start, end) on the monotonic clock."""
    start = time.monotonic()
    _count(key)
    time.sleep(seconds)  # the job's own work; nothing waits on it
    return (start, time.monotonic())


def raise_system_exit(code=3):
    raise SystemExit(code)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt()


def raise_conflict_once(flag, result="done"):
    """Raise ConflictError the first time, then return ``result``."""
    _count(flag)
    if first_time(flag):
        raise ConflictError("a conflict raised by the job itself")
    return result


def raise_conflict_always(key):
    _count(key)
    raise ConflictError("always conflicting")


def fail_times(key, times, result="finally"):
    """Raise ValueError for the first ``times`` calls under ``key``."""
    n = _count(key)
    if n <= times:
        raise ValueError(f"failure {n} of {times}")
    return result


def count_then_return_lock(key):
    """Count a call under ``key``; return something that cannot be pickled."""
    _count(key)
    return threading.Lock()


def return_lock(*args):
    """Return something that cannot be pickled."""
    return threading.Lock()


def raise_unpicklable():
    raise UnpicklableError("cannot be stored", threading.Lock())


def raise_unpicklable_after_write(counter):
    counter.value += 1
    raise UnpicklableError("wrote, then raised", threading.Lock())


def current_job_info():
    """What zasync.local says about the running job."""
    job = local.getJob()
    return (job.id, job.callable_name, local.getDispatcher().uuid)


def annotate(key, release):
    """Set live annotations and progress, then wait for gate ``release``;
    return what getLiveAnnotation reads back."""
    local.setLiveAnnotation("stage", "half-way")
    local.progress(5, 10, "five of ten")
    gate(key + "-annotated").set()
    gate(release).wait(20)
    local.progress(10, 10, "done")
    return local.getLiveAnnotation("stage"), local.getLiveAnnotation(
        "missing", default="dflt"
    )


def local_outside_error():
    """Return the error zasync.local raises in a thread that runs no job,
    asked from inside a job."""
    box = {}

    def ask():
        try:
            local.getJob()
        except Exception as e:
            box["error"] = type(e).__name__

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    return box["error"]


def write_then_fail_times(counter, key, times):
    """Write to ``counter``, then raise ValueError for the first ``times``
    calls under ``key``."""
    counter.value += 1
    n = _count(key)
    if n <= times:
        raise ValueError(f"failure {n} of {times}")
    return n


def mark_job(job, value):
    """Set an attribute of another job (a job that manages others)."""
    job.marked = value
    return value


def write_then_raise(counter):
    counter.value += 1
    counter.log.append("written")
    raise RuntimeError("after a write")


def write_then_return(counter, value):
    counter.value += value
    counter.log.append(value)
    return counter.value


def write_with_commit_conflict(counter, key):
    """Write ``counter``; the first time, make another connection commit a
    change to it before this job's transaction commits, so that the commit
    raises ConflictError. Returns the value this attempt wrote."""
    _count(key)
    counter.value += 1
    counter.log.append(key)
    if first_time(key):
        db = counter._p_jar.db()
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                other = conn.get(counter._p_oid)
                other.value += 100
        finally:
            conn.close()
    return counter.value


def increment_and_linger(counter, seconds=0.02):
    """Write ``counter``, then keep the transaction open a little: jobs of
    this kind running side by side conflict, as Plone content created in
    one folder does."""
    counter.value += 1
    time.sleep(seconds)
    return counter.value


def increment_after(counter, result):
    """A callback of the kind above (it gets the job's result last)."""
    return increment_and_linger(counter)


def write_in_composite(counter, value):
    counter.log.append(value)
    return value


# -- classes ------------------------------------------------------------------------


class UnpicklableError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, message, lock):
        super().__init__(message)
        self.lock = lock


class NeedsTwoArgs(Exception):
    """Pickles but cannot be unpickled (``__init__`` takes two args)."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


class Point:
    """A module-level class: a job may call it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))


class Multiplier:
    """Instances are callable and picklable: stored by value."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, value):
        return value * self.factor


class Counter(persistent.Persistent):
    """A persistent object: jobs call its methods and write it."""

    value = 0

    def __init__(self):
        self.log = PersistentList()

    def increment(self, by=1):
        self.value += by
        return self.value

    def fail_after_increment(self):
        self.value += 1
        raise RuntimeError("incremented, then failed")


class Holder:
    """A non-persistent, picklable object whose method can be a job."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


class NotPicklableHolder:
    def __init__(self):
        self.lock = threading.Lock()

    def get(self):
        return 1


# -- a resource without savepoints (as some mail or SQL data managers) ----------

#: keys delivered by committed transactions, in order
delivered: list[str] = []


class _DataManager:
    """A transaction resource that does nothing unless told to."""

    def __init__(self, tm):
        self.transaction_manager = tm

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass


class NoSavepointDataManager(_DataManager):
    """A transaction resource that cannot take savepoints: it "delivers"
    its key when the transaction commits."""

    def __init__(self, key, tm):
        super().__init__(tm)
        self.key = key

    def tpc_finish(self, txn):
        with _lock:
            delivered.append(self.key)

    def sortKey(self):  # noqa: N802 - transaction API
        return f"~jobfuncs-{self.key}"


def deliver(key):
    """Join a resource without savepoints to the job's transaction."""
    transaction.get().join(NoSavepointDataManager(key, transaction.manager))
    return f"queued {key}"


# -- a resource whose commit is slow (a remote server far away) ---------------

#: how many transactions a SlowCommitDataManager took part in
slow_commits: list[int] = []


class SlowCommitDataManager(_DataManager):
    """A transaction resource whose vote takes ``seconds``; it takes
    savepoints. One per transaction, however many jobs join it."""

    def __init__(self, seconds, tm):
        super().__init__(tm)
        self.seconds = seconds

    def tpc_vote(self, txn):
        time.sleep(self.seconds)  # the far server's time, not a test's wait

    def tpc_finish(self, txn):
        with _lock:
            slow_commits.append(1)

    def savepoint(self):
        return _NothingToRollBack()

    def sortKey(self):  # noqa: N802 - transaction API
        return "~jobfuncs-slow-commit"


class _NothingToRollBack:
    def rollback(self):
        pass


def commit_slowly(seconds):
    """A quick job whose transaction commits slowly."""
    txn = transaction.get()
    try:
        txn.data(SlowCommitDataManager)
    except KeyError:
        manager = SlowCommitDataManager(seconds, transaction.manager)
        txn.set_data(SlowCommitDataManager, manager)
        txn.join(manager)
    return seconds


def count_jobs(jobs):
    """A callback of a composite: how many jobs it had."""
    return len(jobs)


def read_live_of(other, name, timeout=10.0):
    """Wait for the live annotation ``name`` of the job ``other``."""
    return local.getLiveAnnotation(name, timeout=timeout, job=other)


def annotate_other(other):
    """Try to set a live annotation of a job that is not this one."""
    local.setLiveAnnotation("x", 1, job=other)
