"""CacheTable: whole batches of rows written into diskcache's ``Cache`` table in one statement.

Why not ``diskcache.Cache.set`` per row: it costs about 20 µs of Python per row and three
SQLite statements, each of which gives up the GIL and has to take it back. The cache's
writer thread shares the GIL with the event loop; while the loop is busy each re-take
waits (up to the interpreter's switch interval, 5 ms), so a batch of 500 rows took long
enough for the next rows to queue behind it. Here the usual batch (values kept in the
row, no deletions) is a single multi-row upsert, committed on its own, whatever its
size; SQLite runs it with the GIL released. A batch that deletes rows or stores a value
in a file is one transaction of a handful of statements.

The rows are exactly what ``Cache.set`` writes for the same value through the same Disk
(:class:`JsonDisk`): ``raw`` 1, ``store_time`` and ``access_time`` now, ``expire_time``
and ``tag`` NULL, ``access_count`` 0, and size, mode, filename and value as
``Disk.store`` gives them (the value in the row below ``disk_min_file_size``, a file from
there on). diskcache reads them back as its own (``Cache.get``, iteration), and the
``Settings`` count and size stay right: diskcache's triggers maintain them on every
insert, update and delete, whoever makes it. Nothing here evicts or expires, so the
cache is opened with eviction policy ``none`` and culling off (DISKCACHE_SETTINGS).

Checkpoints: SQLite copies the write-ahead log into the database file every 1,000 pages
by default, inside whichever commit crosses that mark, with an fsync. At a steady stream
of small batches that was one batch in sixty, a few milliseconds each, and every row
queued meanwhile waited too. The writer's connection does not checkpoint; a
:class:`WalCheckpointer` thread does, shortly after commits, while the writer goes on
(a passive checkpoint takes no write lock).
"""

from __future__ import annotations

import logging
import os.path as op
import sqlite3
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

import diskcache

from querysync._keys import QueryKey

from ._disk import DB_NAME, JsonDisk
from ._entry import encode_key

__all__ = ["CacheTable", "RowOp", "WalCheckpointer"]

log = logging.getLogger("querysync.sinks")

RowOp = tuple[QueryKey | str, bytes | None]
"""One row to write: its key (a query key, or a special row's name), its JSON (None: delete)."""

_COLUMNS = (
    "key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename,"
    " value"
)
# Replacing a row sets what Cache.set changes for a value: expire_time, tag and
# access_count are left as they are, because this cache never sets them (they stay
# NULL, NULL, 0 from the insert). Setting them anyway would rewrite an entry of the
# expire_time index for every row: half of the pages each batch writes.
_SET = (
    "store_time = excluded.store_time, access_time = excluded.access_time,"
    " size = excluded.size, mode = excluded.mode, filename = excluded.filename,"
    " value = excluded.value"
)
# As Cache.set writes a value kept in the row: size 0, mode 1 (MODE_RAW), no file.
# Parameter 1 is the time; each row binds its key and its value.
_SMALL_ROW = "(?{},1,?1,NULL,?1,0,NULL,0,1,NULL,?{})"
_FILE_UPSERT = (
    f"INSERT INTO Cache({_COLUMNS}) VALUES (?,1,?,NULL,?,0,NULL,?,?,?,?)"
    f" ON CONFLICT(key, raw) DO UPDATE SET {_SET}"
)
# Only these pragmas are per connection; journal mode and auto-vacuum belong to the file.
_CONNECTION_PRAGMAS = ("cache_size", "mmap_size", "synchronous")
CHECKPOINT_DELAY = 0.1
"""Seconds from a commit to the checkpoint that copies it into the database file."""


class CacheTable:
    """Writes batches of rows of one diskcache directory, each batch atomically.

    Used from one thread only (the cache's writer): its SQLite connection is opened there,
    on first use, with the timeout and per-connection pragmas of the ``diskcache.Cache``
    it was made from.
    """

    def __init__(self, cache: diskcache.Cache) -> None:
        disk = cache.disk
        assert isinstance(disk, JsonDisk)
        self._disk = disk
        self._path = op.join(cache.directory, DB_NAME)
        self._timeout: float = cache.timeout
        self._pragmas = [
            (name, int(getattr(cache, f"sqlite_{name}"))) for name in _CONNECTION_PRAGMAS
        ]
        self._min_file_size: int = disk.min_file_size
        self._con: sqlite3.Connection | None = None
        self._checkpointer = WalCheckpointer(self._path, self._timeout)

    def write(self, rows: Sequence[RowOp], now: float) -> None:
        """Write every row, all in one transaction, or none of them (the error is raised).

        Value files of replaced or deleted rows are removed only after the commit: a
        crash before it leaves the old row and its file whole (and at worst an orphan
        file of the new value, never a row without its file).
        """
        con = self._connection()
        small: list[object] = [now]
        deletes: list[str] = []
        large: list[tuple[str, QueryKey | str, bytes]] = []
        for key, value in rows:
            db_key = key if isinstance(key, str) else encode_key(key)
            if value is None:
                deletes.append(db_key)
            elif len(value) < self._min_file_size:
                small += (db_key, value)
            else:
                large.append((db_key, key, value))
        # The usual batch is one statement, its own transaction. That statement leaves
        # alone any row that has a value file (the file must go once the new row is
        # committed, which takes the longer way); the count of rows written shows it.
        usual = not deletes and not large and len(small) // 2 <= self._max_rows(con)
        if not (
            usual and con.execute(_small_upsert(len(rows), True), small).rowcount == len(rows)
        ):
            self._write_in_transaction(con, small, deletes, large, now)
        self._checkpointer.written()

    def read(self, key: QueryKey | str) -> str | None:
        """The stored JSON text of ``key``'s row, None when there is none (raises when refused)."""
        db_key = key if isinstance(key, str) else encode_key(key)
        row = self._connection().execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (db_key,)
        ).fetchone()
        if row is None:
            return None
        text = self._disk.fetch(row[0], row[1], row[2], False)
        assert isinstance(text, str)
        return text

    def close(self) -> None:
        """Close the connection (from the thread that used it) and stop checkpointing.

        Idempotent. SQLite checkpoints what is left when the last connection closes.
        """
        con, self._con = self._con, None
        if con is not None:
            con.close()
        self._checkpointer.close()

    def _write_in_transaction(
        self,
        con: sqlite3.Connection,
        small: list[object],
        deletes: list[str],
        large: list[tuple[str, QueryKey | str, bytes]],
        now: float,
    ) -> None:
        disk = self._disk
        files: list[tuple[object, ...]] = []
        try:
            # Written before the transaction, as Cache.set does: the lock is held for
            # the statements only.
            for db_key, key, value in large:
                size, mode, filename, db_value = disk.store(value, False, key=key)
                files.append((db_key, now, now, size, mode, filename, db_value))
            con.execute("BEGIN IMMEDIATE")
            try:
                keys = [*deletes, *(str(f[0]) for f in files), *cast(list[str], small[1::2])]
                replaced = self._replaced_files(con, keys)
                step = self._max_rows(con)
                for start in range(0, len(deletes), step):
                    part = deletes[start : start + step]
                    con.execute(
                        f"DELETE FROM Cache WHERE raw = 1 AND key IN ({_marks(len(part))})", part
                    )
                for start in range(1, len(small), 2 * step):
                    pairs = small[start : start + 2 * step]
                    con.execute(_small_upsert(len(pairs) // 2, False), [now, *pairs])
                if files:
                    con.executemany(_FILE_UPSERT, files)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except BaseException:
            for file_row in files:
                disk.remove(file_row[5])
            raise
        for filename in replaced:
            disk.remove(filename)

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
            try:
                for name, value in self._pragmas:
                    con.execute(f"PRAGMA {name} = {value:d}")
                con.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    @staticmethod
    def _max_rows(con: sqlite3.Connection) -> int:
        """Rows per statement: two bound parameters each, and the time."""
        return max(1, (con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1) // 2)

    def _replaced_files(self, con: sqlite3.Connection, keys: list[str]) -> list[str]:
        """The value files of these keys' rows (only ever removed through JsonDisk.remove,
        which refuses a file outside the folder that a planted row may name)."""
        found: list[str] = []
        step = 2 * self._max_rows(con)
        for start in range(0, len(keys), step):
            part = keys[start : start + step]
            cursor = con.execute(
                "SELECT filename FROM Cache WHERE raw = 1 AND filename IS NOT NULL"
                f" AND key IN ({_marks(len(part))})",
                part,
            )
            found += (name for (name,) in cursor)
        return found


class WalCheckpointer:
    """Checkpoints a database's write-ahead log on a thread of its own, after writes.

    :meth:`written` asks for a checkpoint; the thread (started then, on first use) waits
    :data:`CHECKPOINT_DELAY` so that the commits of a burst share one, then runs a
    passive checkpoint: it copies what no reader still needs and never blocks a writer.
    An error (a locked or vanished file) is logged and the next request tries again.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._wanted = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.checkpoints = 0
        self.errors = 0

    def written(self) -> None:
        """Ask for a checkpoint soon (from any thread)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closing.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="querysync-cache-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread (a checkpoint under way finishes first). Idempotent."""
        with self._lock:
            self._closing.set()
            self._wanted.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        con: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                # Cleared before the delay, never after: clearing after it could swallow
                # the wake-up that close() sent meanwhile and leave this thread (and the
                # close() joining it) waiting for ever.
                self._wanted.clear()
                if self._closing.wait(CHECKPOINT_DELAY):
                    return
                try:
                    if con is None:
                        con = sqlite3.connect(self._path, timeout=self._timeout)
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    self.errors += 1
                    log.warning("cache checkpoint failed, will retry after the next write: %s", exc)
        finally:
            if con is not None:
                con.close()


def _marks(count: int) -> str:
    return ",".join("?" * count)


@lru_cache(maxsize=128)
def _small_upsert(rows: int, skip_file_rows: bool) -> str:
    """The upsert of ``rows`` values kept in the row; parameter 1 is the time, then key, value.

    With ``skip_file_rows`` an existing row that has a value file is left as it is.
    """
    values = ",".join(_SMALL_ROW.format(2 * i + 2, 2 * i + 3) for i in range(rows))
    where = " WHERE Cache.filename IS NULL" if skip_file_rows else ""
    return (
        f"INSERT INTO Cache({_COLUMNS}) VALUES {values}"
        f" ON CONFLICT(key, raw) DO UPDATE SET {_SET}{where}"
    )
