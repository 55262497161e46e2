"""What a job can call and keep: the checks that refuse, when a job is
made, a callable or an argument the database could not store, and the
readable names of callables."""

from __future__ import annotations

import functools
import inspect
import io
import pickle
import sys
from typing import Any

import persistent


def _module_level(obj: Any) -> bool:
    """True when ``obj`` can be found again by its module and qualified
    name, which is how pickle stores functions and classes."""
    qualname = getattr(obj, "__qualname__", None)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if not qualname or module is None or "<locals>" in qualname:
        return False
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def check_callable(func: Any) -> None:
    """Raise TypeError, saying what to do instead, when ``func`` cannot be
    stored in a job: a lambda, a nested function or class, a method of an
    object that cannot be stored, or anything that is not callable."""
    if not callable(func):
        raise TypeError(
            f"a job needs something callable; got {func!r} ({type(func).__name__})"
        )
    if isinstance(func, functools.partial):
        check_callable(func.func)
        return
    if inspect.ismethod(func):
        owner = func.__self__
        if isinstance(owner, type):  # a classmethod
            check_callable(owner)
            return
        if isinstance(owner, persistent.Persistent):
            return
        check_picklable(owner, f"the object of the method {func.__qualname__}")
        return
    if inspect.isfunction(func) or inspect.isclass(func) or inspect.isbuiltin(func):
        name = getattr(func, "__qualname__", repr(func))
        if name == "<lambda>" or "<lambda>" in name:
            raise TypeError(
                f"a lambda cannot be stored in a job ({func!r}): define a "
                f"function at module level and queue that instead"
            )
        if not _module_level(func):
            kind = "class" if inspect.isclass(func) else "function"
            raise TypeError(
                f"the {kind} {name} is nested or local and cannot be stored "
                f"in a job by reference: move it to module level (or queue a "
                f"method of a persistent object)"
            )
        return
    # An instance of a callable class: it is stored by value.
    if not isinstance(func, persistent.Persistent):
        check_picklable(func, f"the callable {func!r}")


class _RefPickler(pickle.Pickler):
    """Pickles as ZODB would: persistent objects by reference only."""

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, persistent.Persistent) and not isinstance(obj, type):
            return id(obj)
        return None


def unpicklable(value: Any) -> Exception | None:
    """The error pickling ``value`` the way ZODB stores it (persistent
    objects by reference) raises, or None when it pickles."""
    try:
        _RefPickler(io.BytesIO(), protocol=3).dump(value)
    except Exception as e:
        return e
    return None


def check_picklable(value: Any, what: str) -> None:
    e = unpicklable(value)
    if e is not None:
        raise TypeError(
            f"{what} cannot be stored in the database ({type(e).__name__}: "
            f"{e}); pass values that pickle (persistent objects, plain data, "
            f"module-level functions and classes)"
        ) from e


def callable_name(func: Any) -> str:
    """A readable dotted name for a job's callable."""
    if isinstance(func, functools.partial):
        return f"partial({callable_name(func.func)})"
    if inspect.ismethod(func):
        owner = func.__self__
        cls = owner if isinstance(owner, type) else type(owner)
        return f"{cls.__module__}.{cls.__qualname__}.{func.__name__}"
    qualname = getattr(func, "__qualname__", None)
    if qualname is not None:
        return f"{getattr(func, '__module__', '?')}.{qualname}"
    cls = type(func)
    return f"{cls.__module__}.{cls.__qualname__}"
