"""Retry policies: what happens to a job after an error or an interruption.

A policy is made per job by ``job.retry_policy_factory(job)`` (the default
is :class:`RetryPolicy`); ``job.getRetryPolicy()`` returns it. The worker
asks it three questions:

- ``job_error(failure)``: the job's callable raised;
- ``commit_error(failure)``: committing the job's work failed (a
  ConflictError, usually);
- ``interrupted()``: the worker running the job died or stopped.

Each answer is a :class:`Decision`: run again now, run again later (after a
delay), or give up and record the failure. A job cancelled while it ran
(JobCancelled) is never run again, whatever the policy's settings.

A factory may also make a policy written for zc.async, with
``jobError(failure, data_cache)``, ``commitError(failure, data_cache)`` and
``interrupted()`` answering True, False, a timedelta or a datetime: it is
wrapped in :class:`ZcAsyncPolicy`.
"""

from __future__ import annotations

import datetime
import math
import pickle
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zope.interface
from transaction.interfaces import TransientError

from zasync.interfaces import IRetryPolicy, JobCancelled, JobTimeout

if TYPE_CHECKING:
    from zasync.failure import Failure
    from zasync.job import Job


@dataclass(frozen=True)
class Decision:
    """What to do with a job: ``retry`` it, after ``delay`` seconds; or not."""

    retry: bool
    delay: float = 0.0


GIVE_UP = Decision(False)
AGAIN = Decision(True)


#: seconds: the first conflict waits up to this long, doubled each time
CONFLICT_DELAY_BASE = 0.01
#: seconds: the longest wait after a conflict
CONFLICT_DELAY_CAP = 2.0


def _jitter(
    attempt: int, base: float = CONFLICT_DELAY_BASE, cap: float = CONFLICT_DELAY_CAP
) -> float:
    # Full jitter: spreads workers that conflicted on the same objects.
    return random.uniform(0, min(cap, base * (2**attempt)))


@zope.interface.implementer(IRetryPolicy)
class RetryPolicy:
    """The default policy.

    - transient transaction errors (ConflictError and the like), raised by
      the job or by its commit, are retried at once with a little jitter, up
      to ``max_conflicts`` times: a conflict is not the job's fault;
    - any other exception fails the job (no retry), unless ``max_errors``
      allows retries: then the exceptions ``retry_on`` names (default:
      every one but JobTimeout) run again after ``error_delay`` seconds,
      multiplied by ``backoff`` at each error, at most ``max_delay``, with
      ``jitter`` (a random delay between half that and that);
    - a job cancelled while it ran (JobCancelled) is never run again;
    - an interrupted job goes back to the front of its queue, up to
      ``max_interruptions`` times, then fails with AbortedError.

    Make one with other settings with :meth:`configure`, or subclass and
    change the class attributes.
    """

    max_conflicts: int = 20
    max_interruptions: int = 3
    #: True: the job starts once at most, whatever fails (NeverRetry)
    at_most_once: bool = False
    #: how many times an application error is retried (0: never)
    max_errors: int = 0
    #: seconds before the first retry of an application error
    error_delay: float = 0.0
    #: what the delay is multiplied by at each error (1: the same each time)
    backoff: float = 2.0
    #: seconds: the longest delay (None: no cap)
    max_delay: float | None = None
    #: True: each delay is a random one between half the delay and the delay
    jitter: bool = False
    #: the exception classes that are retried (empty: all but JobTimeout)
    retry_on: tuple[type[BaseException], ...] = ()

    def __init__(self, job: Job) -> None:
        self.job = job

    def job_error(self, failure: Failure) -> Decision:
        if failure.check(TransientError):
            return self._conflict()
        if failure.check(JobCancelled):
            return GIVE_UP
        errors = self.job._errors
        if errors < self.max_errors and self.retries(failure):
            return Decision(True, self.error_delay_after(errors))
        return GIVE_UP

    def retries(self, failure: Failure) -> bool:
        """Whether ``failure`` is one of the errors this policy retries."""
        if self.retry_on:
            return failure.check(*self.retry_on) is not None
        return failure.check(JobTimeout) is None

    def error_delay_after(self, errors: int) -> float:
        """Seconds before the retry that follows ``errors`` earlier errors
        (0 for the first): ``error_delay * backoff ** errors``, at most
        ``max_delay``, with jitter when asked."""
        try:
            delay = self.error_delay * self.backoff**errors
        except OverflowError:
            delay = math.inf
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        if not math.isfinite(delay):
            delay = MAX_ERROR_DELAY
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        return delay

    def commit_error(self, failure: Failure) -> Decision:
        if failure.check(TransientError):
            return self._conflict()
        return GIVE_UP

    def interrupted(self) -> Decision:
        if self.job._interruptions < self.max_interruptions:
            return AGAIN
        return GIVE_UP

    def _conflict(self) -> Decision:
        if self.job._conflicts < self.max_conflicts:
            return Decision(True, _jitter(self.job._conflicts))
        return GIVE_UP

    @classmethod
    def configure(cls, **settings: Any) -> _Configured:
        """A picklable factory of this policy with other settings, for a
        job's ``retry_policy_factory``: ``max_errors``, ``error_delay`` (or
        its other name ``base_delay``), ``backoff``, ``max_delay``,
        ``jitter``, ``retry_on`` (exception classes, stored by reference),
        ``max_conflicts``, ``max_interruptions``. TypeError or ValueError,
        naming the setting, for one that cannot work."""
        if "base_delay" in settings:
            if "error_delay" in settings:
                raise TypeError(
                    f"{cls.__name__}.configure() got base_delay and "
                    f"error_delay, two names of one setting: give one"
                )
            settings["error_delay"] = settings.pop("base_delay")
        unknown = set(settings) - set(_CHECKS)
        if unknown:
            raise TypeError(
                f"{cls.__name__}.configure() got unknown settings "
                f"{sorted(unknown)}; use {', '.join(sorted(_CHECKS))} "
                f"(or base_delay)"
            )
        checked = {
            name: _CHECKS[name](cls.__name__, name, value)
            for name, value in settings.items()
        }
        # A named, module-level class would be needed to pickle it by
        # reference; subclasses made here are stored by value instead.
        return _Configured(cls, checked)


#: seconds: the delay used when a backoff without max_delay overflows
MAX_ERROR_DELAY = 86400.0 * 365


def _number(policy: str, name: str, value: Any, lowest: float = 0.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= lowest
        or not math.isfinite(value)
    ):
        raise ValueError(
            f"{policy}.configure({name}={value!r}): use a number >= {lowest:g}"
        )
    return value


def _backoff(policy: str, name: str, value: Any) -> float:
    return _number(policy, name, value, 1.0)


def _max_delay(policy: str, name: str, value: Any) -> float | None:
    return None if value is None else _number(policy, name, value)


def _flag(policy: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{policy}.configure({name}={value!r}): use True or False")
    return value


def _exceptions(policy: str, name: str, value: Any) -> tuple[type, ...]:
    classes = tuple(value) if isinstance(value, tuple | list) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(
                f"{policy}.configure({name}=...): {cls!r} is not an exception "
                f"class; name classes such as (OSError, TimeoutError)"
            )
        try:
            pickle.dumps(cls)
        except Exception:
            raise TypeError(
                f"{policy}.configure({name}=...): {cls.__qualname__} cannot be "
                f"stored by reference; define it at module level"
            ) from None
    return classes


_CHECKS = {
    "max_conflicts": _number,
    "max_interruptions": _number,
    "max_errors": _number,
    "error_delay": _number,
    "backoff": _backoff,
    "max_delay": _max_delay,
    "jitter": _flag,
    "retry_on": _exceptions,
}


def _decision(answer: Any) -> Decision:
    """A zc.async policy's answer as a Decision."""
    if isinstance(answer, datetime.timedelta):
        return Decision(True, max(0.0, answer.total_seconds()))
    if isinstance(answer, datetime.datetime):
        if answer.tzinfo is None:
            answer = answer.replace(tzinfo=datetime.UTC)
        delay = (answer - datetime.datetime.now(datetime.UTC)).total_seconds()
        return Decision(True, max(0.0, delay))
    return AGAIN if answer else GIVE_UP


#: how many jobs' zc.async data caches a process keeps
DATA_CACHES = 1000
_data_caches: OrderedDict[Any, dict] = OrderedDict()
_data_lock = threading.Lock()


def _data_cache(job: Job) -> dict:
    """The ``data_cache`` zc.async passed to a job's policy: one dict per
    job, kept in this process while the job is retried in it."""
    key = job._p_oid if job._p_oid is not None else id(job)
    with _data_lock:
        cache = _data_caches.get(key)
        if cache is None:
            cache = _data_caches[key] = {}
            if len(_data_caches) > DATA_CACHES:
                _data_caches.popitem(last=False)
        else:
            _data_caches.move_to_end(key)
        return cache


@zope.interface.implementer(IRetryPolicy)
class ZcAsyncPolicy:
    """A policy written for zc.async (``jobError``, ``commitError``,
    ``interrupted`` answering True, False, a timedelta or a datetime),
    asked zasync's questions. Its ``data_cache`` is one dict per job, kept
    in the process that retries the job; a policy with ``updateData`` gets
    it before a rescheduled retry."""

    def __init__(self, policy: Any, job: Job) -> None:
        self.policy = policy
        self.job = job

    def _ask(self, name: str, failure: Failure) -> Decision:
        cache = _data_cache(self.job)
        decision = _decision(getattr(self.policy, name)(failure, cache))
        update = getattr(self.policy, "updateData", None)
        if decision.retry and decision.delay and update is not None:
            update(cache)
        return decision

    def job_error(self, failure: Failure) -> Decision:
        if failure.check(JobCancelled):
            return GIVE_UP
        return self._ask("jobError", failure)

    def commit_error(self, failure: Failure) -> Decision:
        return self._ask("commitError", failure)

    def interrupted(self) -> Decision:
        return _decision(self.policy.interrupted())

    def __repr__(self) -> str:
        return f"<ZcAsyncPolicy {self.policy!r}>"


def policy_for(job: Job) -> Any:
    """The retry policy of ``job``: its ``retry_policy_factory``'s (the
    default: RetryPolicy), a zc.async-style one wrapped in ZcAsyncPolicy.
    TypeError, naming the factory, for a policy with neither contract."""
    factory = job.retry_policy_factory or RetryPolicy
    policy = factory(job)
    if hasattr(policy, "job_error"):
        return policy
    if hasattr(policy, "jobError") and hasattr(policy, "commitError"):
        return ZcAsyncPolicy(policy, job)
    raise TypeError(
        f"the retry policy {policy!r} made by {factory!r} for {job!r} has "
        f"neither job_error() (zasync) nor jobError() (zc.async): subclass "
        f"zasync.retry.RetryPolicy"
    )


class NeverRetry(RetryPolicy):
    """For work that must not repeat: any error, conflict or interruption
    fails the job (an interrupted job fails with AbortedError)."""

    max_conflicts = 0
    max_interruptions = 0
    max_errors = 0
    #: one start at most, whatever fails (see zasync.recovery.at_most_once)
    at_most_once = True


class RetryWithDelay(RetryPolicy):
    """Retries application errors too: up to ``max_errors`` times (default
    3), after ``error_delay`` seconds (default 30), doubled each time.

    Make your own with ``RetryWithDelay.configure(max_errors=5,
    error_delay=60)`` (see RetryPolicy.configure), a factory to use as the
    job's ``retry_policy_factory``.
    """

    max_errors = 3
    error_delay = 30.0


class _Configured:
    """A picklable factory for a RetryPolicy subclass with other settings."""

    def __init__(self, base: type[RetryPolicy], settings: dict[str, Any]) -> None:
        self.base = base
        self.settings = dict(settings)

    @property
    def at_most_once(self) -> bool:
        """As its policy's (NeverRetry.configure() keeps one start at most)."""
        return bool(self.base.at_most_once)

    def __call__(self, job: Job) -> RetryPolicy:
        policy = self.base(job)
        for name, value in self.settings.items():
            setattr(policy, name, value)
        return policy

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Configured)
            and self.base is other.base
            and self.settings == other.settings
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(self.settings.items()))
        return f"{self.base.__name__}.configure({args})"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        names = [getattr(v, "__name__", repr(v)) for v in value]
        return f"({', '.join(names)}{',' if len(names) == 1 else ''})"
    return repr(value)
