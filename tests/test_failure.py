"""zasync.failure.Failure: a picklable record of an exception, stored in
the database and read back elsewhere."""

from __future__ import annotations

import pickle
import threading

import pytest
import transaction

import jobfuncs
from dbviews import other_connection
from zasync.failure import Failure, UnpicklableError


def caught(exception: BaseException) -> Failure:
    try:
        raise exception
    except BaseException:  # noqa: B036 - the point: any exception
        return Failure()


def test_the_zc_async_api():
    failure = caught(RuntimeError("FooBared"))
    assert failure.type is RuntimeError
    assert isinstance(failure.value, RuntimeError)
    assert failure.getErrorMessage() == "FooBared"
    assert repr(failure) == "<zasync.Failure builtins.RuntimeError: FooBared>"
    assert str(failure) == repr(failure)
    traceback = failure.getTraceback()
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in caught" in traceback
    assert traceback.rstrip().endswith("RuntimeError: FooBared")


def test_check_returns_the_first_matching_type_or_none():
    failure = caught(KeyError("k"))
    assert failure.check(ValueError) is None
    assert failure.check(ValueError, LookupError, KeyError) is LookupError
    assert failure.check(KeyError) is KeyError


def test_raise_exception_raises_it_again():
    failure = caught(ValueError("again"))
    with pytest.raises(ValueError, match="again"):
        failure.raiseException()


def test_from_an_exception_object():
    failure = Failure(KeyError("x"))
    assert failure.type is KeyError
    assert repr(failure) == "<zasync.Failure builtins.KeyError: 'x'>"


def test_without_an_exception_being_handled_it_says_what_to_do():
    with pytest.raises(ValueError, match="pass the exception instead"):
        Failure()


def test_system_exit_and_keyboard_interrupt_are_recorded():
    assert caught(SystemExit(3)).check(SystemExit) is SystemExit
    assert caught(KeyboardInterrupt()).type is KeyboardInterrupt


def test_pickles_and_reads_back():
    failure = pickle.loads(pickle.dumps(caught(RuntimeError("x"))))
    assert failure.check(RuntimeError) is RuntimeError
    assert failure.getErrorMessage() == "x"
    assert failure.getTraceback().startswith("Traceback")


@pytest.mark.parametrize(
    "exception, type_name, message",
    [
        (
            jobfuncs.UnpicklableError("holds a lock", threading.Lock()),
            "jobfuncs.UnpicklableError",
            "holds a lock",
        ),
        (jobfuncs.NeedsTwoArgs(1, 2), "jobfuncs.NeedsTwoArgs", "1 and 2"),
    ],
    ids=["cannot-pickle", "cannot-unpickle"],
)
def test_an_exception_that_cannot_be_stored_yields_a_stand_in(
    exception, type_name, message
):
    failure = caught(exception)
    assert failure.type is UnpicklableError
    assert failure.type_name == type_name
    assert failure.getErrorMessage() == message
    assert repr(failure) == f"<zasync.Failure {type_name}: {message}>"
    assert f"{type(exception).__name__}: {message}" in failure.getTraceback()
    # check() still knows the original class, by name.
    assert failure.check(type(exception)) is type(exception)
    assert failure.check(KeyError) is None
    with pytest.raises(UnpicklableError, match=message):
        failure.raiseException()
    copy = pickle.loads(pickle.dumps(failure))
    assert copy.getErrorMessage() == message
    assert copy.type_name == type_name


def test_an_exception_of_a_local_class_yields_a_stand_in():
    class LocalError(Exception):
        pass

    failure = caught(LocalError("local"))
    assert failure.type is UnpicklableError
    assert failure.type_name.endswith("<locals>.LocalError")
    assert failure.getErrorMessage() == "local"


def test_an_exception_whose_str_breaks_is_still_recorded():
    class BadStr(Exception):
        def __str__(self):
            raise RuntimeError("no str")

    failure = caught(BadStr())
    assert "unprintable BadStr" in failure.getErrorMessage()


def test_stored_in_the_database_and_read_by_another_connection(conn):
    conn.root()["failures"] = [
        caught(RuntimeError("FooBared")),
        caught(jobfuncs.UnpicklableError("no pickle", threading.Lock())),
    ]
    transaction.commit()
    with other_connection(conn.db()) as (other, _tm):
        plain, stand_in = other.root()["failures"]
        assert repr(plain) == "<zasync.Failure builtins.RuntimeError: FooBared>"
        assert plain.check(RuntimeError)
        assert "FooBared" in plain.getTraceback()
        assert stand_in.type_name == "jobfuncs.UnpicklableError"
        assert stand_in.getErrorMessage() == "no pickle"
        assert "UnpicklableError: no pickle" in stand_in.getTraceback()
