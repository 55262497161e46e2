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
"""

from __future__ import annotations

import functools
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


def replace_unimportable(job: Any) -> str | None:
    """If ``job``'s callable (or the function of a ``functools.partial``)
    could not be imported here, put an UnimportableCallable in its place
    and return the dotted name; otherwise change nothing and return None."""
    func = job.callable
    if isinstance(func, functools.partial):
        found = _broken_global(func.func)
        if found is None:
            return None
        job.callable = functools.partial(
            UnimportableCallable(*found), *func.args, **(func.keywords or {})
        )
    else:
        found = _broken_global(func)
        if found is None:
            return None
        job.callable = UnimportableCallable(*found)
    return ".".join(found)
