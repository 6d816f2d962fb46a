"""RowReader: one row, or the keys and headers of all of them, read from a cache file on demand.

Why not diskcache's ``Cache.get``: that takes the connection of the thread that opened the
cache and (with diskcache's defaults) writes on read; and why not read everything at open:
a million entries took 18 s and 4.4 GB. Rows are decoded through the same
:class:`JsonDisk` the cache writes with, so a pickled or outside-pointing row is refused
here too; problems are counted in the :class:`ScanProblems` given.
"""

from __future__ import annotations

import logging
import os.path as op
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from diskcache.core import MODE_BINARY, MODE_RAW, MODE_TEXT

from querysync._exceptions import CacheCorruptError, CacheSecurityError
from querysync._keys import QueryKey

from ._disk import DB_NAME, GEN_KEY, META_KEY, JsonDisk, ScanProblems, inside
from ._entry import Record, decode_head, decode_key, decode_record, encode_key, parse_json

__all__ = ["HEAD_BYTES", "Head", "RowReader"]

log = logging.getLogger("querysync.sinks")

HEAD_BYTES = 256
"""Bytes of a row's value read to find its etag and stale flag (its data comes after)."""

_BATCH = 1000  # rows per fetch while reading the index

Head = tuple[QueryKey, str | None, bool, int]
"""A row's key, etag, stale flag and generation."""


class RowReader:
    """Reads rows of one cache file, from any thread (one connection, behind a lock).

    ``read_only`` opens the file so that SQLite itself refuses to write.
    """

    def __init__(
        self,
        directory: str,
        disk: JsonDisk,
        timeout: float,
        problems: ScanProblems,
        *,
        read_only: bool = False,
    ) -> None:
        path = op.join(directory, DB_NAME)
        uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
        self._con = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        # Point reads need a handful of pages and the index read streams the table once:
        # SQLite's default 2 MiB page cache would only hold pages nobody reads again.
        self._con.execute("PRAGMA cache_size = -256")
        self._lock = threading.Lock()
        self._disk = disk
        self._directory = directory
        self.problems = problems
        self.rows_read = 0
        """Rows whose value was read and decoded (a test counts them: opening reads none)."""
        self.heads_read = 0
        self._counted: set[int] = set()  # rows counted as problems: each counts once

    @property
    def disk(self) -> JsonDisk:
        """The Disk rows are decoded with."""
        return self._disk

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._con.close()

    def special(self, key: str) -> Any:
        """The parsed JSON of the meta or generation row, None when missing or unreadable."""
        with self._lock:
            row = self._con.execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)
            ).fetchone()
        if row is None:
            return None
        try:
            return parse_json(self._disk.fetch(row[0], row[1], row[2], False))
        except (CacheCorruptError, CacheSecurityError, OSError, ValueError) as exc:
            log.error("the cache's %s row is unreadable; treating it as missing: %s", key, exc)
            return None

    def generation(self) -> int:
        """The stored invalidation generation (0 when there is none)."""
        doc = self.special(GEN_KEY)
        gen = doc.get("generation") if isinstance(doc, dict) else None
        return gen if isinstance(gen, int) and not isinstance(gen, bool) and gen >= 0 else 0

    def entry_count(self) -> int:
        """How many rows hold entries, from diskcache's own count (no scan)."""
        with self._lock:
            (count,) = self._con.execute(
                "SELECT value FROM Settings WHERE key = 'count'"
            ).fetchone() or (0,)
            specials = self._con.execute(
                "SELECT count(*) FROM Cache WHERE raw = 1 AND key IN (?, ?)", (META_KEY, GEN_KEY)
            ).fetchone()[0]
        return max(0, int(count) - int(specials))

    def read(self, key: QueryKey) -> Record | None:
        """The record stored for ``key``; None when there is none or the row is refused."""
        with self._lock:
            row = self._con.execute(
                "SELECT rowid, raw, mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                (encode_key(key),),
            ).fetchone()
        if row is None:
            return None
        rowid, _, mode, filename, value = row
        self.rows_read += 1
        try:
            return decode_record(key, self._disk.fetch(mode, filename, value, False))
        except CacheSecurityError as exc:
            self._problem(rowid, unsafe=True)
            log.error("cache row %d refused: %s", rowid, exc)
        except (CacheCorruptError, OSError) as exc:
            self._problem(rowid, unsafe=False)
            log.error("cache row %d unreadable: %s", rowid, exc)
        return None

    def _problem(self, rowid: int, *, unsafe: bool) -> None:
        if rowid in self._counted:
            return
        self._counted.add(rowid)
        if unsafe:
            self.problems.unsafe += 1
        else:
            self.problems.corrupt += 1

    def heads(self) -> Iterator[Head]:
        """The key, etag, stale flag and generation of every readable entry row.

        Reads the first :data:`HEAD_BYTES` of each value (of a value file, its first
        bytes), never the data; a row whose header is longer is read whole.
        """
        with self._lock:
            cursor = self._con.execute(
                "SELECT rowid, key, raw, mode, filename,"
                f" CASE WHEN filename IS NULL THEN substr(value, 1, {HEAD_BYTES}) END"
                " FROM Cache"
            )
        disk = self._disk
        while True:
            # In batches: a list of every row's header at once was most of the memory
            # an index read took (and the lock is free for other reads in between).
            with self._lock:
                rows = cursor.fetchmany(_BATCH)
            if not rows:
                return
            yield from self._decode_heads(rows, disk)

    def _decode_heads(self, rows: list[Any], disk: JsonDisk) -> Iterator[Head]:
        for rowid, key_text, raw, mode, filename, head in rows:
            if key_text in (META_KEY, GEN_KEY):
                continue
            try:
                if not raw:
                    raise CacheSecurityError("a row's key is pickled; refusing to unpickle it")
                if not isinstance(key_text, str):
                    raise CacheCorruptError(f"a row's key is {type(key_text).__name__}")
                key = decode_key(key_text)
                if mode in (MODE_BINARY, MODE_TEXT):
                    head = self._file_head(filename)
                elif mode != MODE_RAW:
                    disk.fetch(mode, filename, head, False)  # raises: a pickle, an unknown mode
                if not isinstance(head, bytes | str):
                    raise CacheCorruptError(f"a row's value is {type(head).__name__}, not JSON")
                # The cut may fall inside a character; only the header before the data matters.
                text = head if isinstance(head, str) else head.decode("utf-8", "ignore")
                try:
                    found = decode_head(key, text)
                except CacheCorruptError:
                    found = decode_head(key, self._whole(key_text))
            except CacheSecurityError as exc:
                self._problem(rowid, unsafe=True)
                log.error("cache row %d refused and skipped: %s", rowid, exc)
            except (CacheCorruptError, OSError, UnicodeDecodeError) as exc:
                self._problem(rowid, unsafe=False)
                log.error("cache row %d unreadable and skipped: %s", rowid, exc)
            else:
                self.heads_read += 1
                yield (key, *found)

    def _file_head(self, filename: object) -> bytes:
        path = inside(self._directory, filename)
        if path is None:
            raise CacheSecurityError(f"a row's value file {filename!r} is outside the cache")
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)

    def _whole(self, key_text: str) -> str:
        with self._lock:
            row = self._con.execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (key_text,)
            ).fetchone()
        if row is None:
            raise CacheCorruptError("the row went away while it was read")
        text = self._disk.fetch(row[0], row[1], row[2], False)
        assert isinstance(text, str)
        return text
