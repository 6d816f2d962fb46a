"""Opening a cache directory: check it, open the database, read entries, apply buster/max_age."""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import diskcache

from querysync._exceptions import CacheCorruptError, CacheError
from querysync._keys import QueryKey

from ._disk import (
    META_KEY,
    JsonDisk,
    ScanProblems,
    corrupt_error,
    move_aside,
    open_diskcache,
    scan_rows,
    secure_directory,
)
from ._entry import Record, decode_record, parse_json
from ._store import FORMAT

__all__ = ["Loaded", "bulk_allocation", "load"]

log = logging.getLogger("querysync.sinks")


@dataclass
class Loaded:
    """An open diskcache and what it held."""

    cache: diskcache.Cache
    records: dict[QueryKey, Record] = field(default_factory=dict)
    problems: ScanProblems = field(default_factory=ScanProblems)
    discarded: int = 0
    needs_meta: bool = False


def load(
    directory: str, *, buster: str, max_age: float | None, timeout: float, recover: bool
) -> Loaded:
    """Open ``directory`` and read it; see :class:`querysync.sinks.QueryCache` for the rules."""
    secure_directory(directory)
    try:
        return _load(directory, buster=buster, max_age=max_age, timeout=timeout)
    except CacheCorruptError:
        if not recover:
            raise
        moved = move_aside(directory)
        log.warning("cache database unreadable; moved aside as %s, starting empty", moved)
        return _load(directory, buster=buster, max_age=max_age, timeout=timeout)


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while a block allocates many acyclic objects.

    Loading creates about ten objects per entry and none of them form cycles; with the
    collector on, a 100,000-entry load spends most of its time in collections that free
    nothing (measured: about 3x slower). It is switched back on right after.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _load(directory: str, *, buster: str, max_age: float | None, timeout: float) -> Loaded:
    cache = open_diskcache(directory, timeout)
    try:
        loaded = Loaded(cache)
        meta: object = None
        disk = cache.disk
        assert isinstance(disk, JsonDisk)
        for row in scan_rows(directory, disk, timeout, loaded.problems):
            if row.key == META_KEY:
                try:
                    meta = parse_json(row.text)
                except ValueError:
                    log.error("the cache's meta row is not JSON; treating it as missing")
                continue
            assert isinstance(row.key, tuple)
            try:
                loaded.records[row.key] = decode_record(row.key, row.text)
            except CacheCorruptError as exc:
                loaded.problems.corrupt += 1
                log.error("cache row skipped: %s", exc)
        reason = _discard_reason(meta, bool(loaded.records), buster, max_age)
        if reason is not None:
            log.info("discarding the cache in %s: %s", directory, reason)
            loaded.discarded = len(loaded.records)
            loaded.records = {}
            cache.clear(retry=True)
        loaded.needs_meta = meta is None or reason is not None
        return loaded
    except sqlite3.OperationalError as exc:
        cache.close()
        raise CacheError(f"cannot read the cache in {directory!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        cache.close()
        raise corrupt_error(directory, exc) from exc
    except BaseException:
        cache.close()
        raise


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
