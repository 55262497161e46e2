"""Bad input is refused where it enters, in one line naming the problem,
and nothing is written next to or into a file that is not a FileStorage."""

from __future__ import annotations

import pytest

from processes import run_zasync


def _refused(result, flag: str) -> None:
    assert result.returncode == 2, result.stderr
    assert flag in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1", "1e12", "week"])
def test_prune_refuses_an_age_that_is_no_number_of_days(tmp_path, value):
    result = run_zasync(
        "prune", "--db", str(tmp_path / "Data.fs"), "--older-than", value
    )
    _refused(result, "--older-than")


@pytest.mark.parametrize(
    "flag", ["--lease", "--heartbeat", "--poll-interval", "--maintenance-interval"]
)
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_worker_refuses_a_duration_that_is_no_finite_positive_number(
    tmp_path, flag, value
):
    result = run_zasync("worker", "--db", str(tmp_path / "Data.fs"), flag, value)
    _refused(result, flag)
    assert not (tmp_path / "Data.fs").exists()


def test_a_file_that_is_no_filestorage_is_left_alone(tmp_path):
    other = tmp_path / "passwd"
    other.write_text("root:x:0:0:root:/root:/bin/bash\n")
    result = run_zasync("status", "--db", str(other))
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.splitlines()
    assert "not a FileStorage" in line and "name a Data.fs" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]
    assert other.read_text() == "root:x:0:0:root:/root:/bin/bash\n"


@pytest.mark.parametrize("command", ["status", "worker"])
def test_an_empty_file_is_not_made_a_filestorage(tmp_path, command):
    empty = tmp_path / "Data.fs"
    empty.touch()
    result = run_zasync(command, "--db", str(empty))
    assert result.returncode == 3, result.stderr
    assert "an empty file" in result.stderr.splitlines()[-1]
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Data.fs"]
