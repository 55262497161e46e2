"""Every scheme zodburi resolves opens through open_db and ``zasync
--db``, with zodburi's query options; zasync's additions on top."""

from __future__ import annotations

from pathlib import Path

import pytest
import transaction
from tests.processes import run_zasync

from zasync.storage import StorageError, open_db, parse_uri, storage_kind


def roundtrip(uri: str) -> None:
    db = open_db(uri)
    try:
        with db.transaction() as conn:
            conn.root()["x"] = 1
        with db.transaction() as conn:
            assert conn.root()["x"] == 1
    finally:
        db.close()
        transaction.abort()


def test_file(tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'a' / 'Data.fs'}?connection_pool_size=3"
    db = open_db(uri)
    try:
        assert storage_kind(db) == "file" and db.getPoolSize() == 3
    finally:
        db.close()
    roundtrip(uri)


def test_memory() -> None:
    db = open_db("memory://name?database_name=mem&connection_cache_size=50")
    try:
        assert storage_kind(db) == "other"
        assert db.database_name == "mem" and db.getCacheSize() == 50
    finally:
        db.close()
    roundtrip("memory://")


def test_demo(tmp_path: Path) -> None:
    roundtrip(f"demo:(file://{tmp_path / 'base.fs'})/(memory://)")


def test_zconfig(tmp_path: Path) -> None:
    conf = tmp_path / "zodb.conf"
    conf.write_text(
        f"<zodb main>\n  pool-size 5\n  <filestorage>\n    path {tmp_path}/Data.fs\n"
        "  </filestorage>\n</zodb>\n"
    )
    db = open_db(f"zconfig://{conf}#main")
    try:
        assert storage_kind(db) == "file" and db.getPoolSize() == 5
    finally:
        db.close()
    with pytest.raises(StorageError, match="No storage or database named other"):
        open_db(f"zconfig://{conf}#other")


@pytest.mark.zeo
def test_zeo(zeo_server) -> None:
    db = open_db(zeo_server.uri + "?cache_size=1MB&wait_timeout=5")
    try:
        assert storage_kind(db) == "zeo"
        assert db.storage._cache.maxsize == 1024 * 1024
    finally:
        db.close()
    roundtrip(zeo_server.uri)


@pytest.mark.zeo
def test_zeo_client_cache_is_4mb_unless_the_uri_says(zeo_server) -> None:
    """zasync's default ZEO client cache, not ZEO's 20 MB (whose index
    grows a worker as it fills with jobs read once)."""
    db = open_db(zeo_server.uri)
    try:
        assert db.storage._cache.maxsize == 4 * 1024 * 1024
    finally:
        db.close()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_through_relstorage(pg_uri: str, scheme: str) -> None:
    uri = scheme + pg_uri[pg_uri.index("://") :]
    db = open_db(uri + "&cache_local_mb=5" if "?" in uri else uri + "?cache_local_mb=5")
    try:
        assert storage_kind(db) == "relstorage"
        assert db.storage._options.keep_history is False
    finally:
        db.close()
    roundtrip(uri)


@pytest.mark.multiprocess
def test_cli_accepts_zodburi_uris_and_reports_bad_ones(tmp_path: Path) -> None:
    opened = run_zasync("status", "--db", "memory://")  # opens, holds no queues
    assert opened.returncode == 1 and "no zasync queues" in opened.stderr
    bad = run_zasync("status", "--db", f"file://{tmp_path}/x.fs?nope=1")
    assert bad.returncode == 3
    assert bad.stderr.count("\n") == 1 and "unknown option(s) nope" in bad.stderr


def test_parse_uri_opens_nothing(tmp_path: Path) -> None:
    spec = parse_uri(f"file://{tmp_path / 'never' / 'Data.fs'}")
    assert spec.kind == "file" and not (tmp_path / "never").exists()


def test_connection_caches_keep_zodbs_default_size_unless_the_uri_says(tmp_path):
    """zodburi's default (10,000 objects a connection) would let a worker's
    caches, one per thread, fill with finished jobs."""
    path = str(tmp_path / "Data.fs")
    assert parse_uri(path).dbkw["cache_size"] == 400
    assert parse_uri(f"file://{path}").dbkw["cache_size"] == 400
    sized = parse_uri(f"file://{path}?connection_cache_size=5000")
    assert sized.dbkw["cache_size"] == 5000
