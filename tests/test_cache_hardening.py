"""Issue 12 hardening of the cache folder: planted paths, read-only opens, parents, full disk."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from querysync import CacheError, CacheSecurityError
from querysync.cli import main
from querysync.sinks import QueryCache
from querysync.sinks._table import CacheTable

_DOC = b'{"etag":null,"stale":false,"updated_at":0,"error":null,"data":1}'


def _plant_file_row(directory: Path, key: str, filename: str) -> None:
    con = sqlite3.connect(directory / "cache.db")
    with con:
        con.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time,"
            " access_count, tag, size, mode, filename, value)"
            " VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, 2, ?, NULL)",
            (key, filename),
        )
    con.close()


@pytest.fixture
def victims(tmp_path: Path) -> list[Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    files = [outside / "precious.json", tmp_path / "also-precious.json"]
    for f in files:
        f.write_bytes(_DOC)
    return files


def _planted_cache(tmp_path: Path, victims: list[Path], buster: str = "") -> Path:
    directory = tmp_path / "c"
    with QueryCache(directory, buster=buster) as cache:
        cache.set(("good",), 1)
    _plant_file_row(directory, '["evil","abs"]', str(victims[0]))
    _plant_file_row(directory, '["evil","rel"]', "../also-precious.json")
    return directory


def test_overwriting_a_planted_row_leaves_the_file_it_names(
    tmp_path: Path, victims: list[Path]
) -> None:
    directory = _planted_cache(tmp_path, victims)
    with QueryCache(directory) as cache:
        assert cache.get(("evil", "abs")) is None
        cache.set(("evil", "abs"), {"new": 1})
        cache.set(("evil", "rel"), {"new": 2})
        cache.flush()
        assert cache.stats()["unsafe_rows"] >= 2
    assert all(v.read_bytes() == _DOC for v in victims)
    with QueryCache(directory) as cache:
        entry = cache.get(("evil", "abs"))
        assert entry is not None
        assert entry.data == {"new": 1}


def test_removing_a_row_repointed_outside_leaves_the_file_it_names(
    tmp_path: Path, victims: list[Path]
) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("evil", "x"), 1)
    with QueryCache(directory) as cache:
        cache.load_index()
        # Another writer of the file points the (indexed) row at a file outside.
        con = sqlite3.connect(directory / "cache.db")
        with con:
            con.execute(
                "UPDATE Cache SET mode = 2, filename = ?, value = NULL WHERE key = ?",
                (str(victims[0]), '["evil","x"]'),
            )
        con.close()
        assert cache.remove(("evil",)) == 1
        assert cache.flush(timeout=10)
        assert cache.stats()["unsafe_rows"] == 1
    assert victims[0].read_bytes() == _DOC
    with QueryCache(directory) as cache:
        assert cache.keys() == []


def test_discarding_at_open_leaves_the_files_planted_rows_name(
    tmp_path: Path, victims: list[Path]
) -> None:
    directory = _planted_cache(tmp_path, victims, buster="v1")
    with QueryCache(directory, buster="v2") as cache:  # another buster: discarded
        assert cache.stats()["discarded_at_open"] == 3
        assert cache.keys() == []
        assert cache.stats()["unsafe_rows"] == 2
    assert all(v.read_bytes() == _DOC for v in victims)
    assert victims[0].parent.is_dir()  # and its emptied parent folder survives too


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name == "cache.db"
    }


def test_inspect_on_a_buster_cache_leaves_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory, buster="v2") as cache:
        for i in range(5):
            cache.set(("workflow", f"w{i}"), {"id": f"w{i}"})
    before = _digest(directory)
    assert main(["inspect", str(directory), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 5
    assert "buster 'v2'" in err
    assert "would discard" in err
    assert _digest(directory) == before
    with QueryCache(directory, buster="v2") as cache:
        assert len(cache) == 5


def test_a_read_only_cache_writes_nothing_and_refuses_changes(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory, buster="old") as cache:
        cache.set(("k",), 1)
    before = _digest(directory)
    with QueryCache(directory, read_only=True, max_age=0.0) as cache:
        assert cache.discard_reason is not None
        assert cache.stored_buster == "old"
        assert cache.written_at is not None
        entry = cache.get(("k",))
        assert entry is not None
        assert entry.data == 1
        for change in (
            lambda: cache.set(("k",), 2),
            lambda: cache.invalidate_all(),
            lambda: cache.remove(("k",)),
        ):
            with pytest.raises(CacheError, match="read-only"):
                change()
    assert _digest(directory) == before
    with pytest.raises(CacheError):
        QueryCache(tmp_path / "none", read_only=True)
    assert not (tmp_path / "none").exists()


def test_a_world_writable_parent_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(CacheSecurityError, match="parent"):
        QueryCache(parent / "c")
    parent.chmod(0o1777)  # like /tmp: others cannot rename what is ours
    with QueryCache(parent / "c") as cache:
        cache.set(("k",), 1)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_folders_are_created_private_under_umask_0(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "c"
    with _umask(0), QueryCache(directory) as cache:
        cache.set(("big",), {"blob": "x" * 40_000})  # a value file in xx/yy/
        cache.flush()
    for folder in (tmp_path / "a", tmp_path / "a" / "b", directory):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    subfolders = [p for p in directory.rglob("*") if p.is_dir()]
    assert subfolders
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in subfolders)


def test_values_are_never_written_through_a_symlinked_subfolder(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with QueryCache(directory) as cache:
        cache.set(("k",), 1)
    for i in range(256):  # every name diskcache may pick for the first level
        (directory / f"{i:02x}").symlink_to(elsewhere, target_is_directory=True)
    cache = QueryCache(directory)
    try:
        cache.set(("big",), {"blob": "x" * 40_000})
        assert not cache.flush(timeout=1.0)
        assert cache.stats()["write_errors"] >= 1
    finally:
        cache.close()
    assert list(elsewhere.iterdir()) == []
    assert cache.stats()["lost_writes"] == 1


def test_a_symlinked_database_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    with QueryCache(real) as cache:
        cache.set(("k",), 1)
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    (directory / "cache.db").symlink_to(real / "cache.db")
    with pytest.raises(CacheSecurityError, match="symlink"):
        QueryCache(directory)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk refuses another byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


@contextmanager
def _small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs where the machine allows mounting one, else None."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        done = None
    if done is None or done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10, check=False)


async def test_a_full_disk_is_reported_and_writes_resume_without_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _small_disk(tmp_path) as mount:
        directory = (mount or tmp_path) / "c"
        with QueryCache(directory) as cache:
            cache.set(("seed",), 0)
        filler = (mount or tmp_path) / "filler"
        full = {"on": True}
        if mount is None:
            # No tmpfs here: the store's write call fails the way SQLite does on a full disk.
            real_write = CacheTable.write

            def write(self: CacheTable, rows: object, now: float) -> None:
                if full["on"]:
                    raise sqlite3.OperationalError("database or disk is full")
                real_write(self, rows, now)  # type: ignore[arg-type]

            monkeypatch.setattr(CacheTable, "write", write)
        async with QueryCache(directory) as cache:
            cache.set(("warm",), 1)  # the writer's connection and WAL exist before the disk fills
            if mount is not None:
                assert await cache.wait_idle(timeout=10)
                # Take every free byte; removing the file gives the space back.
                _fill(filler)
            for i in range(200):
                cache.set(("item", i), {"i": i, "pad": "z" * 400})
            assert not await cache.wait_idle(timeout=0.5)
            assert cache.disk_full
            stats = cache.stats()
            assert stats["disk_full"] == 1
            assert stats["disk_full_errors"] >= 1
            assert stats["queued_writes"] >= 200
            if mount is not None:
                filler.unlink()
            full["on"] = False
            assert await cache.wait_idle(timeout=15)
            assert not cache.disk_full
            assert cache.stats()["disk_full"] == 0
        with QueryCache(directory) as cache:
            assert len(cache.keys(("item",))) == 200
            entry = cache.get(("item", 199))
            assert entry is not None
            assert entry.data["i"] == 199


async def test_settle_times_out_on_a_full_disk_and_settles_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from querysync import sync
    from querysync.server import NodeToolServer

    full = {"on": False}
    real_write = CacheTable.write

    def write(self: CacheTable, rows: object, now: float) -> None:
        if full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        real_write(self, rows, now)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheTable, "write", write)
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        workflow = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}
        created = server.create("workflow", workflow)
        running = await sync(
            server.ws_url, server.api_url, tmp_path / "cache", window=0.02, mirror=True
        )
        try:
            assert await running.settle(timeout=20)
            full["on"] = True
            server.update("workflow", created["id"], {"name": "x"})
            assert not await running.settle(timeout=1.0)
            assert running.cache.disk_full
            full["on"] = False
            assert await running.settle(timeout=20)
            assert not running.cache.disk_full
        finally:
            await running.stop()
