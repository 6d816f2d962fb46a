"""Opening a cache directory: check it, open the database, read its meta row, apply buster/max_age.

Opening reads no entry: only the meta and generation rows and diskcache's row count.
Keys and stale flags are read later, once (:meth:`RowReader.heads`), and entry data only
when a key is read. So a cache opens in about the time diskcache itself takes.
"""

from __future__ import annotations

import gc
import logging
import os
import os.path as op
import sqlite3
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import diskcache

from querysync._exceptions import CacheCorruptError, CacheError

from ._disk import (
    DB_NAME,
    META_KEY,
    JsonDisk,
    ScanProblems,
    corrupt_error,
    move_aside,
    open_diskcache,
    secure_directory,
)
from ._rows import RowReader
from ._store import FORMAT

__all__ = ["Opened", "bulk_allocation", "open_cache"]

log = logging.getLogger("querysync.sinks")


@dataclass
class Opened:
    """An open cache file: the diskcache (None when read-only), a reader, what the meta row says."""

    cache: diskcache.Cache | None
    reader: RowReader
    problems: ScanProblems
    generation: int
    meta: dict[str, Any] | None
    discard_reason: str | None
    """Why buster/max_age discard (or, read-only, would discard) the stored entries."""
    discarded: int = 0
    needs_meta: bool = False
    entries: int = field(default=0)


def open_cache(
    directory: str,
    *,
    buster: str,
    max_age: float | None,
    timeout: float,
    recover: bool,
    read_only: bool = False,
) -> Opened:
    """Open ``directory``; see :class:`querysync.sinks.QueryCache` for the rules.

    ``read_only`` creates, discards and writes nothing (not even diskcache's settings):
    the file is opened read-only and a mismatched buster is only reported.
    """
    secure_directory(directory, create=not read_only)
    if read_only:
        if not op.isfile(op.join(directory, DB_NAME)):
            raise CacheError(f"no cache database in {directory!r} to open read-only")
        return _open(directory, None, buster=buster, max_age=max_age, timeout=timeout)
    try:
        return _open_writable(directory, buster=buster, max_age=max_age, timeout=timeout)
    except CacheCorruptError:
        if not recover:
            raise
        moved = move_aside(directory)
        log.warning("cache database unreadable; moved aside as %s, starting empty", moved)
        return _open_writable(directory, buster=buster, max_age=max_age, timeout=timeout)


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while a block allocates many acyclic objects.

    Reading the index creates several objects per entry and none of them form cycles;
    with the collector on, a 100,000-entry read spends most of its time in collections
    that free nothing (measured: about 3x slower). It is switched back on right after.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _open_writable(
    directory: str, *, buster: str, max_age: float | None, timeout: float
) -> Opened:
    _check_length(directory)
    cache = open_diskcache(directory, timeout)
    try:
        return _open(directory, cache, buster=buster, max_age=max_age, timeout=timeout)
    except BaseException:
        cache.close()
        raise


def _open(
    directory: str,
    cache: diskcache.Cache | None,
    *,
    buster: str,
    max_age: float | None,
    timeout: float,
) -> Opened:
    if cache is None:
        _check_length(directory)
        disk = JsonDisk(directory)  # reads only: no settings needed
    else:
        disk = cache.disk
        assert isinstance(disk, JsonDisk)
    problems = ScanProblems()
    try:
        reader = RowReader(directory, disk, timeout, problems, read_only=cache is None)
    except sqlite3.Error as exc:
        raise CacheError(f"cannot open the cache in {directory!r}: {exc}") from exc
    try:
        meta = reader.special(META_KEY)
        entries = reader.entry_count()
        reason = _discard_reason(meta, entries > 0, buster, max_age)
        opened = Opened(
            cache,
            reader,
            problems,
            reader.generation(),
            meta if isinstance(meta, dict) else None,
            reason,
            entries=entries,
        )
        if reason is not None and cache is not None:
            log.info("discarding the cache in %s: %s", directory, reason)
            _discard(directory, disk, timeout)
            opened.discarded, opened.entries, opened.generation = entries, 0, 0
        opened.needs_meta = cache is not None and (meta is None or reason is not None)
        return opened
    except sqlite3.OperationalError as exc:
        reader.close()
        raise CacheError(f"cannot read the cache in {directory!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        reader.close()
        raise corrupt_error(directory, exc) from exc
    except BaseException:
        reader.close()
        raise


def _check_length(directory: str) -> None:
    """CacheCorruptError when the file is shorter than its own header says (truncated).

    Opening reads no entry, so a file cut short would otherwise only show at some later
    read; the header's page count and page size give the length it must have.
    """
    path = op.join(directory, DB_NAME)
    wal = path + "-wal"
    if op.exists(wal) and op.getsize(wal) > 0:
        # Pages still in the write-ahead log: a checkpoint cut short may have written
        # page 1 (with the new length) before the pages that make the file that long.
        return
    try:
        with open(path, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CacheError(f"cannot read {path!r}: {exc}") from exc
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        if size:
            raise corrupt_error(directory, ValueError("not an SQLite database file"))
        return
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    pages, counter, valid_for = struct.unpack(">I", header[28:32]), header[24:28], header[92:96]
    # The page count is valid only when written by a version that keeps it (the two
    # change counters agree); then the file is at least that long.
    if counter == valid_for and pages[0] and size < pages[0] * page_size:
        raise corrupt_error(
            directory, ValueError(f"file of {size} bytes, its header says {pages[0] * page_size}")
        )


def _discard(directory: str, disk: JsonDisk, timeout: float) -> None:
    """Delete every row, then the value files the rows named that lie inside the folder.

    Not ``diskcache.Cache.clear``: it removes whatever file a row's ``filename`` names,
    and a planted row could name any file on the disk (``JsonDisk.remove`` refuses).
    The rows go first: a crash in between leaves orphan files, never rows without files.
    """
    con = sqlite3.connect(op.join(directory, DB_NAME), timeout=timeout, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            files = [
                name
                for (name,) in con.execute(
                    "SELECT filename FROM Cache WHERE filename IS NOT NULL"
                )
            ]
            con.execute("DELETE FROM Cache")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    for name in files:
        disk.remove(name)


def _discard_reason(
    meta: object, has_entries: bool, buster: str, max_age: float | None
) -> str | None:
    if not isinstance(meta, dict):
        # Entries without the meta row were not written by this layout (the meta row is
        # part of every write transaction), so nothing vouches for them.
        return "entries without a meta row" if has_entries else None
    if meta.get("format") != FORMAT:
        return f"written in row format {meta.get('format')!r}, this is {FORMAT}"
    if meta.get("buster") != buster:
        return f"buster {meta.get('buster')!r} differs from {buster!r}"
    written_at = meta.get("written_at")
    if not isinstance(written_at, int | float) or isinstance(written_at, bool):
        return "no valid written_at in the meta row"
    if max_age is not None and time.time() - written_at > max_age:
        return f"last written {time.time() - written_at:.0f} s ago, max_age is {max_age:g} s"
    return None


