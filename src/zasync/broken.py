"""Jobs whose callable a worker cannot import.

A job names its function by module and name. When a worker cannot import
it (a function defined in the producer's ``__main__``, a module renamed or
not installed in the worker), ZODB loads a ``Broken`` stand-in class, which
can be read but never stored again: the claim that takes the job could not
commit, and one such job would stop its workers from claiming anything.

Instead the worker puts an :class:`UnimportableCallable` in the callable's
place before it claims the job; calling it raises ImportError, so the job
fails (callbacks and retry policy as for any error) with a message that
says what to do. The dotted name is kept, and shown as the job's callable.

The same holds for a function or class passed as an argument (a Plone
job's function is an argument of ``run_as_user``): each such argument gets
a stand-in, which raises the same ImportError when the job calls it.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
from typing import Any

from ZODB.broken import Broken


class UnimportableCallable:
    """Stands in for a job's callable ``module.name`` that a worker could
    not import. Calling it raises ImportError naming it."""

    module: str = ""
    name: str = ""

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name
        # What zasync.job.callable_name shows: the original name.
        self.__module__ = module
        self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function if it can be imported now (a job retried once
        its module is installed), else raise ImportError naming it."""
        try:
            func = getattr(importlib.import_module(self.module), self.name)
        except (ImportError, AttributeError):
            pass
        else:
            return func(*args, **kwargs)
        raise ImportError(
            f"{self.module}.{self.name} cannot be imported in the worker "
            f"(pid {os.getpid()} on {socket.gethostname()}): define job "
            f"functions in a module the workers can import (not in the "
            f"producer's __main__), and load it with `zasync worker --import "
            f"MODULE` or on the worker's path"
        )

    def __repr__(self) -> str:
        return f"<unimportable {self.module}.{self.name}>"


def _broken_global(func: Any) -> tuple[str, str] | None:
    if isinstance(func, type) and issubclass(func, Broken):
        return func.__module__, func.__name__
    return None


def _stand_in(value: Any) -> tuple[Any, str] | None:
    """A storable stand-in for ``value`` and the dotted name it replaces,
    if ``value`` (or the function of a ``functools.partial``) could not be
    imported here; else None."""
    if isinstance(value, functools.partial):
        found = _broken_global(value.func)
        if found is None:
            return None
        partial = functools.partial(
            UnimportableCallable(*found), *value.args, **(value.keywords or {})
        )
        return partial, ".".join(found)
    found = _broken_global(value)
    if found is None:
        return None
    return UnimportableCallable(*found), ".".join(found)


def replace_unimportable(job: Any) -> str | None:
    """Put stand-ins in the place of ``job``'s callable and arguments that
    could not be imported here (see the module's docstring) and return
    their dotted names, comma-separated; change nothing and return None
    when there are none."""
    names = []
    replaced = _stand_in(job.callable)
    if replaced is not None:
        job.callable, name = replaced
        names.append(name)
    args = list(job._stored_args())
    kwargs = dict(job._stored_kwargs())
    changed = False
    for index, arg in enumerate(args):
        replaced = _stand_in(arg)
        if replaced is not None:
            args[index], name = replaced
            names.append(name)
            changed = True
    for key, arg in kwargs.items():
        replaced = _stand_in(arg)
        if replaced is not None:
            kwargs[key], name = replaced
            names.append(name)
            changed = True
    if changed:
        job.args = args
        job.kwargs = kwargs
    return ", ".join(names) or None
