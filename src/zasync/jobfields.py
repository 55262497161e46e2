"""How a Job keeps some of its attributes: times as microseconds, the
arguments as a list and a dict in the job's own record (changed in place
through views that mark the job changed), quota names as a checked tuple.

None of these is a persistent object of its own: a job is one record,
loaded and stored in one go.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import (
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
    Sequence,
)
from typing import Any, SupportsIndex, overload

from zasync.callables import as_argument, check_picklable
from zasync.interfaces import NEW, PENDING, BadStatusError
from zasync.keys import from_us, to_us


def check_timeout(timeout: Any) -> float:
    """``timeout`` (seconds a job may run, see ``zasync.local.check``) as a
    float; ValueError naming it unless it is a finite positive number."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise ValueError(
            f"timeout={timeout!r}: give the seconds the job may run, a finite "
            f"number > 0 (or no timeout)"
        )
    return float(timeout)


class Moment:
    """A timezone-aware datetime attribute of a job (read back in UTC),
    kept in the job's state as microseconds since the epoch: a datetime
    with a timezone pickles through copyreg, which costs several
    microseconds each time a job is stored. Jobs stored with the datetime
    itself, under the attribute's name, still read it."""

    name = stored = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.stored = f"_{name}_us"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        us = getattr(obj, self.stored)
        if us is None:
            return obj.__dict__.get(self.name)
        return from_us(us)

    def __set__(self, obj: Any, value: datetime.datetime | None) -> None:
        obj.__dict__.pop(self.name, None)
        setattr(obj, self.stored, None if value is None else to_us(value))


def _checked(value: Any, job: Any, name: str | None = None) -> Any:
    """``value`` as an argument of ``job`` stores it; TypeError, naming
    it, if it cannot be stored."""
    what = f"argument {name}=" if name is not None else "an argument"
    check_picklable(value, f"{what} of {job.callable_name}")
    return as_argument(value)


class ArgsView(MutableSequence):
    """``job.args``: the job's positional arguments, a list that can be
    changed in place (``job.args.append(x)``); each change marks the job
    changed, so that it is stored with the transaction. A value that could
    not be stored is refused with TypeError. Compares equal to a list or
    tuple with the same items."""

    __slots__ = ("_job",)

    def __init__(self, job: Any):
        self._job = job

    def _items(self) -> Any:
        return self._job._stored_args()

    def _writable(self) -> list:
        return self._job._writable_args()

    @overload
    def __getitem__(self, index: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list: ...
    def __getitem__(self, index: Any) -> Any:
        items = self._items()[index]
        return list(items) if isinstance(index, slice) else items

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = [_checked(item, self._job) for item in value]
        else:
            value = _checked(value, self._job)
        self._writable()[index] = value

    def __delitem__(self, index: Any) -> None:
        del self._writable()[index]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def insert(self, index: int, value: Any) -> None:
        self._writable().insert(index, _checked(value, self._job))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str | bytes) or not hasattr(other, "__iter__"):
            return NotImplemented
        try:
            return list(self._items()) == list(other)
        except TypeError:
            return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self._items()))


class KwargsView(MutableMapping):
    """``job.kwargs``: the job's keyword arguments, a mapping that can be
    changed in place (``job.kwargs['k'] = v``); each change marks the job
    changed. A value that could not be stored is refused with TypeError.
    Compares equal to a mapping with the same items."""

    __slots__ = ("_job",)

    def __init__(self, job: Any):
        self._job = job

    def _items(self) -> Mapping:
        return self._job._stored_kwargs()

    def __getitem__(self, key: str) -> Any:
        return self._items()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"keyword argument names are strings, not {key!r}")
        self._job._writable_kwargs()[key] = _checked(value, self._job, key)

    def __delitem__(self, key: str) -> None:
        del self._job._writable_kwargs()[key]

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._items()) == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self._items()))


class JobFields:
    """The attributes of a Job (a mixin of zasync.job.Job) kept in a form
    of their own: the arguments, the quota names."""

    # The arguments as a list and a dict; jobs stored before kept them as a
    # tuple and a dict under ``args`` and ``kwargs`` (read by _stored_args).
    _args: list | None = None
    _kwargs: dict | None = None
    # Jobs stored before keep them under ``quota_names``.
    _quota_names: tuple = ()
    #: where jobs stored before kept the positional arguments
    _legacy_args = "args"
    _status: str = NEW
    _queue: Any = None
    _p_changed: Any
    callable_name: Any

    @property
    def args(self) -> ArgsView:
        """The positional arguments: a list, changed in place with the
        job (``job.args.append(x)``)."""
        return ArgsView(self)

    @args.setter
    def args(self, value: Sequence) -> None:
        values = [_checked(arg, self) for arg in value]
        self.__dict__.pop(self._legacy_args, None)
        self._args = values

    @property
    def kwargs(self) -> KwargsView:
        """The keyword arguments: a mapping, changed in place with the job
        (``job.kwargs['k'] = v``)."""
        return KwargsView(self)

    @kwargs.setter
    def kwargs(self, value: Mapping) -> None:
        values = {name: _checked(arg, self, name) for name, arg in dict(value).items()}
        self.__dict__.pop("kwargs", None)
        self._kwargs = values

    def _stored_args(self) -> Sequence:
        args = self._args
        if args is None:
            return self.__dict__.get(self._legacy_args, ())
        return args

    def _stored_kwargs(self) -> Mapping:
        kwargs = self._kwargs
        if kwargs is None:
            return self.__dict__.get("kwargs", {})
        return kwargs

    def _writable_args(self) -> list:
        args = self._stored_args()
        if args is not self._args:
            self.__dict__.pop(self._legacy_args, None)
            args = self._args = list(args)
        self._p_changed = True
        return args

    def _writable_kwargs(self) -> dict:
        kwargs = self._stored_kwargs()
        if kwargs is not self._kwargs:
            self.__dict__.pop("kwargs", None)
            kwargs = self._kwargs = dict(kwargs)
        self._p_changed = True
        return kwargs

    @property
    def quota_names(self) -> tuple:
        """The names of the quotas of its queue the job needs. Set it to a
        tuple (or list) of names while the job is new or pending; a pending
        job's queue must have them."""
        names = self._quota_names
        if not names:
            return self.__dict__.get("quota_names", names)
        return names

    @quota_names.setter
    def quota_names(self, value: Any) -> None:
        names = check_quota_names(value)
        if self._status not in (NEW, PENDING):
            raise BadStatusError(
                f"{self!r} is {self._status}: quota_names can be set while a "
                f"job is new or pending"
            )
        queue = self._queue
        if self._status == PENDING and queue is not None:
            for name in names:
                if name not in queue.quotas:
                    raise ValueError(
                        f"{self!r} names quota {name!r}, which queue "
                        f"{queue.name!r} does not have; create it with "
                        f"queue.quotas.create({name!r}, size=1)"
                    )
        self.__dict__.pop("quota_names", None)
        self._quota_names = names


def check_quota_names(value: Any) -> tuple[str, ...]:
    """``value`` as a tuple of quota names; TypeError, naming the fix, for
    a string (``''`` included) or anything but an iterable of strings."""
    if isinstance(value, str | bytes):
        hint = "()" if not value else f"({value!r},)"
        raise TypeError(
            f"quota_names={value!r} is a string; give a tuple of names, "
            f"for example quota_names={hint}"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"quota_names={value!r}: give a tuple of quota names") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"quota_names={value!r}: quota names are strings, not {name!r}"
            )
    return names
