"""What a job can call and keep: the checks that refuse, when a job is
made, a callable or an argument the database could not store, and the
readable names of callables."""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import pickle
import sys
import types
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


class ByName:
    """A function or class defined inside a class (``Document.reindex``,
    a static method, a nested class), stored by its module and qualified
    name and looked up when the job runs: the database stores such a
    function by reference no better than pickle's oldest protocols do.

    Calling it calls what it names; it compares equal to it.
    """

    def __init__(self, module: str, qualname: str):
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Any:
        """What the name stands for; ImportError, naming it, if it is gone."""
        try:
            found: Any = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as e:
            raise ImportError(
                f"{self.module}.{self.qualname} cannot be found in this "
                f"process ({e}): the job's callable was renamed or moved, or "
                f"its module is not importable here"
            ) from e
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (ByName, (self.module, self.qualname))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ByName):
            return (self.module, self.qualname) == (other.module, other.qualname)
        return (
            getattr(other, "__module__", None) == self.module
            and getattr(other, "__qualname__", None) == self.qualname
        )

    def __hash__(self) -> int:
        return hash((self.module, self.qualname))

    def __repr__(self) -> str:
        return f"<zasync.callables.ByName {self.module}.{self.qualname}>"


def by_reference(func: Any) -> Any:
    """``func`` as a job stores it: a function or class defined in a class
    (a qualified name with a dot) becomes a ByName; anything else is
    returned as it is. ``func`` has passed check_callable."""
    kind = type(func)
    if kind is types.FunctionType:
        if "." in func.__qualname__:
            return ByName(func.__module__, func.__qualname__)
        return func
    if kind is types.MethodType:
        return func
    if isinstance(func, functools.partial):
        inner = by_reference(func.func)
        if inner is func.func:
            return func
        return functools.partial(inner, *func.args, **(func.keywords or {}))
    if (inspect.isfunction(func) or inspect.isclass(func)) and "." in getattr(
        func, "__qualname__", ""
    ):
        return ByName(func.__module__, func.__qualname__)
    return func


#: types whose values always pickle: not pickled to find out
_ATOMS = frozenset({int, float, str, bytes, bool, type(None)})


def stored_argument(value: Any, func: Any, where: int | str) -> Any:
    """``value``, the argument ``where`` (an index or a keyword) of a job
    calling ``func``, as the job stores it (see as_argument); TypeError,
    naming it, when it cannot be stored."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if unpicklable(value) is not None:
        name = f"{where}=" if isinstance(where, str) else str(where)
        check_picklable(value, f"argument {name} of {callable_name(func)}")
    if kind is types.FunctionType:
        return as_argument(value)
    return value


def as_argument(value: Any) -> Any:
    """An argument of a job as the job stores it: a function defined in a
    class (``Document.reindexObject``, passed to a wrapper that calls it)
    becomes a ByName; anything else is returned as it is."""
    if inspect.isfunction(value) and "." in value.__qualname__:
        if _module_level(value):
            return ByName(value.__module__, value.__qualname__)
    return value


def callable_name(func: Any) -> str:
    """A readable dotted name for a job's callable."""
    if isinstance(func, ByName):
        return f"{func.module}.{func.qualname}"
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
