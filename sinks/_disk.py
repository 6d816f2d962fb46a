"""The safe diskcache layer: a JSON-only Disk, a private directory, what a scan counts as bad rows.

Why refuse pickles: diskcache's default ``Disk`` pickles any key or value that is not
a plain scalar, and on read it unpickles whatever a row's ``mode`` column says is a
pickle, even through ``JSONDisk`` (CVE-2025-69872). Unpickling runs code, so anyone who
can write one row into ``cache.db`` could run code in every process that opens the
cache. :class:`JsonDisk` stores keys as JSON text and values as JSON bytes and raises
:class:`querysync.CacheSecurityError` for a pickled key or value instead of loading it.
"""

from __future__ import annotations

import logging
import os
import os.path as op
import sqlite3
import stat
import time
from dataclasses import dataclass
from typing import Any

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_PICKLE, MODE_RAW, MODE_TEXT, UNKNOWN

from querysync._exceptions import CacheCorruptError, CacheError, CacheSecurityError
from querysync._keys import QueryKey

from ._entry import decode_key, encode_key

__all__ = [
    "DB_NAME",
    "DISKCACHE_SETTINGS",
    "GEN_KEY",
    "META_KEY",
    "JsonDisk",
    "ScanProblems",
    "corrupt_error",
    "inside",
    "move_aside",
    "open_diskcache",
    "secure_directory",
]

log = logging.getLogger("querysync.sinks")

DB_NAME: str = DBNAME
META_KEY = "querysync:meta"
"""The one row that is not an entry: the buster and when the cache was last written.

Entry keys are JSON arrays (``["workflow","w1"]``), so no query key can collide with it.
"""
GEN_KEY = "querysync:generation"
"""The row holding the invalidation generation (``invalidate_all`` moves it on).

A row of its own, not a member of the meta row: every transaction rewrites the meta row,
and a process that opened before another one's ``invalidate_all`` would put the old
generation back; this row is only ever raised.
"""
_SPECIAL_KEYS = (META_KEY, GEN_KEY)

# Only these settings make a row's meaning independent of diskcache's defaults: no
# eviction (the in-memory view must never disagree with the file because diskcache
# culled rows behind its back) and no statistics (they turn every read into a write).
DISKCACHE_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "cull_limit": 0,
    "statistics": 0,
    "tag_index": 0,
}


class JsonDisk(diskcache.Disk):  # type: ignore[misc]
    """A ``diskcache.Disk`` that reads and writes JSON only and refuses to unpickle.

    Keys: a query key tuple becomes its JSON array text (never a pickled tuple);
    :data:`META_KEY` is stored as itself. Values: the caller hands in JSON bytes,
    kept in the row (``MODE_RAW``) or, from 32 KiB, in a file (``MODE_BINARY``);
    :meth:`fetch` returns the JSON text, for :func:`decode_record` to parse and check.
    """

    def put(self, key: Any) -> tuple[str, bool]:
        if isinstance(key, tuple):
            return encode_key(key), True
        if key in _SPECIAL_KEYS:
            return key, True
        raise TypeError(f"JsonDisk stores query key tuples only, not {type(key).__name__}")

    def get(self, key: Any, raw: Any) -> QueryKey | str:
        if not raw:
            raise CacheSecurityError("a row's key is pickled; refusing to unpickle it")
        if not isinstance(key, str):
            raise CacheCorruptError(f"a row's key is {type(key).__name__}, not JSON text")
        if key in _SPECIAL_KEYS:
            return str(key)
        return decode_key(key)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        if read or not isinstance(value, bytes):
            raise TypeError("JsonDisk stores encoded JSON bytes only")
        return super().store(value, False, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise CacheSecurityError("a row's value is pickled; refusing to unpickle it")
        if read:
            raise TypeError("JsonDisk does not hand out file handles")
        if mode == MODE_RAW:
            if not isinstance(value, bytes | str):
                raise CacheCorruptError(f"a row's value is {type(value).__name__}, not JSON")
            raw: bytes | str = value
        elif mode in (MODE_BINARY, MODE_TEXT):
            # A planted row could point anywhere; only files diskcache itself names
            # (relative, inside the directory, through no symlink) are read.
            if inside(self._directory, filename) is None:
                raise CacheSecurityError(f"a row's value file {filename!r} is outside the cache")
            raw = super().fetch(mode, filename, value, False)
        else:
            raise CacheCorruptError(f"a row has unknown value mode {mode!r}")
        if isinstance(raw, str):
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CacheCorruptError(f"a row's value is not UTF-8 text: {exc}") from exc


    def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> tuple[str, str]:
        """diskcache's name for a new value file, its ``xx/yy/`` folders made private first.

        Raises CacheSecurityError when one of those folders is a symlink: writing
        through it would put a value (and later a removal) anywhere on the disk.
        """
        name, full_path = super().filename(key, value)
        folder = self._directory
        for part in op.dirname(name).split(os.sep):
            folder = op.join(folder, part)
            try:
                os.mkdir(folder, 0o700)
                os.chmod(folder, 0o700)  # mkdir applies the umask
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise CacheSecurityError(
                    f"{folder!r} in the cache is not a plain folder (a symlink?)"
                )
        return name, full_path

    def remove(self, file_path: Any) -> None:
        """Remove a value file, only ever one inside the cache folder (else logged, counted).

        diskcache's own removal joins whatever a row's ``filename`` says to the folder and
        then removes the emptied parents; a planted row could name any file.
        """
        if inside(self._directory, file_path) is None:
            self.unsafe_files = getattr(self, "unsafe_files", 0) + 1
            log.error("refused to remove %r: a row names a file outside the cache", file_path)
            return
        super().remove(file_path)


def inside(directory: str, filename: object) -> str | None:
    """The full path of value file ``filename`` when it lies inside ``directory``, else None.

    Inside means: a relative path with no ``..`` naming a file under ``directory``
    through no symlink (the file itself may be missing).
    """
    if not isinstance(filename, str) or not filename or op.isabs(filename):
        return None
    parts = filename.replace("\\", "/").split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in filename:
        return None
    path = directory
    for part in parts:
        path = op.join(path, part)
        try:
            if op.islink(path):
                return None
        except OSError:
            return None
    return path


def secure_directory(directory: str, *, create: bool = True) -> None:
    """Create ``directory`` with mode 0700, or check that an existing one is private.

    Raises CacheSecurityError when the directory (or its database file) is group- or
    world-writable, or (on POSIX) owned by another user: whoever can write there can
    plant rows, and rows decide what this process loads. Its parents are checked too:
    a group- or world-writable parent without the sticky bit lets others rename the
    cache folder away and put their own in its place. Missing folders (parents
    included) are created 0700 whatever the umask; ``create=False`` creates nothing.
    The database files must not be symlinks.
    """
    directory = op.abspath(directory)
    try:
        if create and not op.exists(directory):
            _make_private_folders(directory)
        st = os.stat(directory)
    except OSError as exc:
        raise CacheError(f"cannot create the cache directory {directory!r}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"cache directory {directory!r} is not a directory")
    _check_private(directory, st)
    _check_parents(directory)
    for suffix in ("", "-wal", "-shm"):
        path = op.join(directory, DB_NAME + suffix)
        if op.lexists(path):
            if op.islink(path):
                raise CacheSecurityError(f"{path!r} is a symlink; refusing to follow it")
            _check_private(path, os.stat(path))


def _make_private_folders(directory: str) -> None:
    # os.makedirs applies its mode to the last folder only (the others get 0777 minus
    # the umask, so 0777 under umask 0): each missing folder is made here instead.
    missing: list[str] = []
    path = directory
    while not op.exists(path):
        missing.append(path)
        parent = op.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


def _check_parents(directory: str) -> None:
    parent = op.dirname(directory)
    while True:
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise CacheError(f"cannot check the cache's parent folder {parent!r}: {exc}") from exc
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise CacheSecurityError(
                f"the cache's parent folder {parent!r} is group- or world-writable without "
                f"the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}); others could replace "
                "the cache folder. Use a private parent (chmod 755 or 700)."
            )
        up = op.dirname(parent)
        if up == parent:
            return
        parent = up


def _check_private(path: str, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheSecurityError(
            f"{path!r} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); "
            "others could plant rows in the cache. Use a private directory (chmod 700)."
        )
    getuid = getattr(os, "getuid", None)
    if getuid is not None and st.st_uid != getuid():
        raise CacheSecurityError(f"{path!r} belongs to another user (uid {st.st_uid})")


def open_diskcache(directory: str, timeout: float) -> diskcache.Cache:
    """A ``diskcache.Cache`` with :class:`JsonDisk`; CacheCorruptError if the file is unreadable."""
    try:
        return diskcache.Cache(directory, timeout=timeout, disk=JsonDisk, **DISKCACHE_SETTINGS)
    except sqlite3.OperationalError as exc:
        raise CacheError(f"cannot open the cache in {directory!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise corrupt_error(directory, exc) from exc


def corrupt_error(directory: str, exc: BaseException) -> CacheCorruptError:
    """The error that says the database file is broken and what to do about it."""
    return CacheCorruptError(
        f"{op.join(directory, DB_NAME)!r} is not a readable cache database ({exc}); "
        "move the directory aside, or open it with QueryCache(..., recover=True) "
        "to keep the broken files as *.corrupt-<time> and start empty"
    )


def move_aside(directory: str) -> list[str]:
    """Rename the database and its WAL files to ``*.corrupt-<epoch>``; the new names."""
    stamp = int(time.time())
    moved = []
    for suffix in ("", "-wal", "-shm"):
        path = op.join(directory, DB_NAME + suffix)
        if op.exists(path):
            target = f"{path}.corrupt-{stamp}"
            os.replace(path, target)
            moved.append(target)
    return moved


@dataclass(slots=True)
class ScanProblems:
    """Rows a scan skipped: refused as unsafe (pickles) or unreadable (corrupt)."""

    unsafe: int = 0
    corrupt: int = 0
