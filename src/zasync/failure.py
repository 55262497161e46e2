"""Failure: a picklable record of an exception.

A job that raises ends COMPLETED with a Failure as its result. The Failure
keeps the exception class (by reference), the exception itself and the
formatted traceback, so it can be stored in the database and read by any
process. An exception that cannot be pickled, or whose class cannot be
imported by name, is kept as a stand-in that carries its type name and
message: a Failure is always storable.
"""

from __future__ import annotations

import builtins
import pickle
import sys
import traceback
from typing import IO, Any, NoReturn

import zope.interface

from zasync.interfaces import IFailure


class UnpicklableError(Exception):
    """Stands in for an exception that could not be stored.

    ``type_name`` is the dotted name of the original exception's class.
    """

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (type(self), (self.type_name, self.message))

    def __str__(self) -> str:
        return self.message


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _importable(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    if module is None or "<locals>" in cls.__qualname__:
        return False
    obj: Any = module
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


@zope.interface.implementer(IFailure)
class Failure:
    """A record of an exception: ``type``, ``value``, ``getTraceback()``.

    Build one inside an ``except`` block with ``Failure()``, or from an
    exception with ``Failure(exc)``.
    """

    # Class-level defaults: old pickles load whatever attributes they lack.
    type: type = Exception
    value: BaseException | None = None
    type_name: str = ""
    _traceback: str = ""

    def __init__(self, exception: BaseException | None = None):
        if exception is None:
            exception = sys.exc_info()[1]
            if exception is None:
                raise ValueError(
                    "Failure() without an argument must be called while an "
                    "exception is being handled; pass the exception instead"
                )
        self.type_name = _dotted(type(exception))
        lines = traceback.format_exception(
            type(exception), exception, exception.__traceback__
        )
        if exception.__traceback__ is None:
            # Never raised: no frames to show, but the same first line as
            # any traceback, which log readers look for.
            lines.insert(0, "Traceback (failure with no frames):\n")
        self._traceback = "".join(lines)
        message = _message(exception)
        if _importable(type(exception)) and _picklable(exception):
            self.type = type(exception)
            self.value = exception
        else:
            self.type = UnpicklableError
            self.value = UnpicklableError(self.type_name, message)

    def getTraceback(  # noqa: N802 - compat name
        self,
        elideFrameworkCode: Any = 0,  # noqa: N803 - Twisted's name
        detail: str = "default",
    ) -> str:
        """The traceback as formatted when the exception was caught. The
        arguments of Twisted's Failure are accepted and change nothing."""
        return self._traceback

    def printTraceback(  # noqa: N802 - compat name
        self,
        file: IO[str] | None = None,
        elideFrameworkCode: Any = 0,  # noqa: N803 - Twisted's name
        detail: str = "default",
    ) -> None:
        """Write the traceback to ``file`` (default: sys.stderr)."""
        (sys.stderr if file is None else file).write(self._traceback)

    def getErrorMessage(self) -> str:  # noqa: N802 - compat name
        """The exception's message (``str(exception)``)."""
        return _message(self.value) if self.value is not None else ""

    # builtins.type: in the class body, ``type`` is the attribute above.
    def check(self, *types: builtins.type) -> builtins.type | None:
        """Return the first of ``types`` the recorded exception is an
        instance of (by class, or by dotted name for a stand-in), else None."""
        for t in types:
            if isinstance(self.value, t):
                return t
            if self.type is UnpicklableError and isinstance(t, type):
                if _dotted(t) == self.type_name:
                    return t
        return None

    def trap(self, *types: builtins.type) -> builtins.type:
        """Return the first of ``types`` the recorded exception is an
        instance of (as check()); if none, raise the recorded exception
        again, so that a failure callback passes on what it does not
        handle."""
        found = self.check(*types)
        if found is None:
            self.raiseException()
        return found

    def raiseException(self) -> NoReturn:  # noqa: N802 - compat name
        """Raise the recorded exception (or its stand-in) again; TypeError
        for a Failure that records none."""
        if self.value is None:
            raise TypeError(f"{self!r} records no exception to raise")
        raise self.value

    def __repr__(self) -> str:
        return f"<zasync.Failure {self.type_name}: {self.getErrorMessage()}>"

    __str__ = __repr__


def _message(exception: BaseException) -> str:
    try:
        return str(exception)
    except Exception:  # a broken __str__ must not break the record
        return f"<unprintable {type(exception).__name__}>"


def _picklable(value: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(value, protocol=3))
    except Exception:
        return False
    return True
