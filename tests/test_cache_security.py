"""The cache never unpickles, keeps its directory private and reports a broken database."""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import stat
import time
from pathlib import Path

import diskcache
import pytest

from querysync import CacheCorruptError, CacheError, CacheSecurityError
from querysync.sinks import QueryCache
from querysync.sinks._disk import JsonDisk


class _Bomb:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def _plant(directory: Path, key: str | bytes, raw: int, mode: int, value: bytes) -> None:
    """Insert a row straight into cache.db, as an attacker with file access would."""
    con = sqlite3.connect(directory / "cache.db")
    try:
        with con:
            con.execute(
                "INSERT INTO Cache (key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                " VALUES (?, ?, ?, NULL, ?, 0, NULL, 0, ?, NULL, ?)",
                (key, raw, time.time(), time.time(), mode, value),
            )
    finally:
        con.close()


def _make_cache(directory: Path) -> None:
    with QueryCache(directory) as cache:
        cache.set(("workflow", "good"), {"id": "good"})


def test_directory_is_created_private(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "cache"
    old = os.umask(0o022)
    try:
        with QueryCache(target):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720])
def test_writable_by_others_directory_is_refused(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(mode)
    with pytest.raises(CacheSecurityError, match="writable"):
        QueryCache(target)
    assert not (target / "cache.db").exists()


def test_readable_but_not_writable_directory_is_accepted(tmp_path: Path) -> None:
    target = tmp_path / "c"
    target.mkdir()
    target.chmod(0o755)
    with QueryCache(target) as cache:
        cache.set(("k",), 1)


def test_world_writable_database_file_is_refused(tmp_path: Path) -> None:
    _make_cache(tmp_path / "c")
    (tmp_path / "c" / "cache.db").chmod(0o666)
    with pytest.raises(CacheSecurityError, match=r"cache\.db"):
        QueryCache(tmp_path / "c")


def test_planted_pickle_value_never_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "c"
    marker = tmp_path / "pwned"
    _make_cache(directory)
    _plant(directory, '["workflow","evil"]', 1, 4, pickle.dumps(_Bomb(str(marker))))
    with caplog.at_level(logging.ERROR, logger="querysync.sinks"), QueryCache(directory) as cache:
        assert cache.get(("workflow", "evil")) is None
        assert cache.get(("workflow", "good")) is not None
        assert cache.stats()["unsafe_rows"] == 1
        assert ("workflow", "evil") not in cache
        # Writing the key later replaces the planted row with JSON.
        cache.set(("workflow", "evil"), {"id": "evil"})
    assert not marker.exists()
    assert any("refusing to unpickle" in r.getMessage() for r in caplog.records)
    with QueryCache(directory) as cache:
        entry = cache.get(("workflow", "evil"))
        assert entry is not None
        assert entry.data == {"id": "evil"}
        assert cache.stats()["unsafe_rows"] == 0
    assert not marker.exists()


def test_planted_pickle_in_a_value_file_never_runs(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    marker = tmp_path / "pwned"
    _make_cache(directory)
    (directory / "ab").mkdir()
    (directory / "ab" / "bomb.val").write_bytes(pickle.dumps(_Bomb(str(marker))))
    con = sqlite3.connect(directory / "cache.db")
    with con:
        con.execute(
            "INSERT INTO Cache (key, raw, store_time, access_time, mode, filename, value)"
            " VALUES ('[\"x\"]', 1, 0, 0, 4, 'ab/bomb.val', NULL)"
        )
    con.close()
    with QueryCache(directory) as cache:
        assert cache.get(("x",)) is None
        assert cache.stats()["unsafe_rows"] == 1
    assert not marker.exists()


def test_planted_pickled_key_never_runs(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    marker = tmp_path / "pwned"
    _make_cache(directory)
    _plant(directory, pickle.dumps(_Bomb(str(marker))), 0, 1, b'{"data": 1}')
    with QueryCache(directory) as cache:
        assert cache.stats()["unsafe_rows"] == 1
        assert cache.keys() == [("workflow", "good")]
    assert not marker.exists()


def test_value_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    _make_cache(directory)
    secret = tmp_path / "secret.json"
    secret.write_text('{"etag": null, "stale": false, "updated_at": 0, "error": null, "data": 1}')
    con = sqlite3.connect(directory / "cache.db")
    with con:
        for i, name in enumerate([str(secret), "../secret.json"]):
            con.execute(
                "INSERT INTO Cache (key, raw, store_time, access_time, mode, filename, value)"
                " VALUES (?, 1, 0, 0, 2, ?, NULL)",
                (f'["leak",{i}]', name),
            )
    con.close()
    with QueryCache(directory) as cache:
        assert cache.keys(("leak",)) == []
        assert cache.stats()["unsafe_rows"] == 2


def test_disk_refuses_pickles_inside_diskcache_itself(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    marker = tmp_path / "pwned"
    _make_cache(directory)
    _plant(directory, '["workflow","evil"]', 1, 4, pickle.dumps(_Bomb(str(marker))))
    with diskcache.Cache(str(directory), disk=JsonDisk) as raw:
        with pytest.raises(CacheSecurityError):
            raw.get(("workflow", "evil"))
        with pytest.raises(TypeError):
            raw.set(("k",), {"not": "bytes"})
        with pytest.raises(TypeError):
            raw.set("some other key", b"{}")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ('["bad"]', b"not json"),
        ('["bad"]', b'{"data": 1}'),
        ('["bad"]', b'{"data": 1, "etag": 5, "stale": false, "updated_at": 0, "error": null}'),
        ('["bad"]', b"[1, 2]"),
        ("not a json key", b'{"data":1,"etag":null,"stale":false,"updated_at":0,"error":null}'),
        ('{"a": 1}', b'{"data":1,"etag":null,"stale":false,"updated_at":0,"error":null}'),
    ],
)
def test_corrupt_rows_are_skipped_and_counted(tmp_path: Path, key: str, value: bytes) -> None:
    directory = tmp_path / "c"
    _make_cache(directory)
    _plant(directory, key, 1, 1, value)
    with QueryCache(directory) as cache:
        assert cache.keys() == [("workflow", "good")]
        assert cache.stats()["corrupt_rows"] == 1


def test_truncated_database_gives_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        for i in range(3000):
            cache.set(("item", i), {"payload": "x" * 200})
    db = directory / "cache.db"
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with pytest.raises(CacheCorruptError, match=r"cache\.db.*recover=True"):
        QueryCache(directory)


def test_non_database_file_gives_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    (directory / "cache.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheCorruptError, match="not a readable cache database"):
        QueryCache(directory)


def test_recover_moves_broken_files_aside_and_starts_empty(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    (directory / "cache.db").write_bytes(b"this is not sqlite" * 100)
    with QueryCache(directory, recover=True) as cache:
        assert cache.keys() == []
        cache.set(("k",), 1)
    kept = [p.name for p in directory.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1
    assert (directory / kept[0]).read_bytes().startswith(b"this is not sqlite")
    with QueryCache(directory) as cache:
        assert cache.keys() == [("k",)]


def test_a_directory_that_cannot_be_created_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="cannot create the cache directory"):
        QueryCache(blocker / "cache")
