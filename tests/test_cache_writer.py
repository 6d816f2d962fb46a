"""The cache writer: on_commit, rows as diskcache writes them, atomic batches, checkpoints."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diskcache
import pytest
from hypothesis import given
from hypothesis import strategies as st

from querysync import QueryKey
from querysync.sinks import QueryCache
from querysync.sinks._disk import DISKCACHE_SETTINGS, META_KEY, JsonDisk
from querysync.sinks._entry import (
    CacheEntry,
    Record,
    decode_record,
    encode_key,
    encode_record,
)
from querysync.sinks._table import CacheTable, RowOp

LARGE = "x" * 40_000  # over diskcache's 32 KiB: the value goes to a file of its own
COLUMNS = "raw, expire_time, access_count, tag, size, mode, filename IS NULL, value"


def _db(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / "cache.db")


def _row(directory: Path, key: str) -> tuple[Any, ...] | None:
    con = _db(directory)
    try:
        found: tuple[Any, ...] | None = con.execute(
            f"SELECT {COLUMNS}, store_time = access_time, filename FROM Cache WHERE key = ?",
            (key,),
        ).fetchone()
        return found
    finally:
        con.close()


def _value_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.val")]


# -- on_commit ---------------------------------------------------------------------------


def test_on_commit_reports_each_key_after_its_row_is_committed(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    calls: list[tuple[str, list[QueryKey], dict[str, bool]]] = []

    def on_commit(keys: Sequence[QueryKey]) -> None:
        # What another connection sees right now: committed rows only.
        con = _db(directory)
        try:
            present = {k for (k,) in con.execute("SELECT key FROM Cache")}
        finally:
            con.close()
        seen = {encode_key(k): encode_key(k) in present for k in keys}
        calls.append((threading.current_thread().name, list(keys), seen))

    with QueryCache(directory, on_commit=on_commit) as cache:
        for i in range(3):
            cache.set(("w", str(i)), {"i": i})
        cache.flush()
        cache.invalidate(("w",))
        cache.remove(("w", "2"), exact=True)
        cache.flush()
        transactions = cache.stats()["transactions"]

    assert calls, "on_commit was never called"
    assert len(calls) == transactions
    assert {name for name, _, _ in calls} == {"querysync-cache-writer"}
    reported = Counter(k for _, keys, _ in calls for k in keys)
    assert set(reported) == {("w", "0"), ("w", "1"), ("w", "2")}
    last: dict[str, bool] = {}
    for _, _, seen in calls:
        last.update(seen)
    assert last == {'["w","0"]': True, '["w","1"]': True, '["w","2"]': False}


def test_a_raising_on_commit_is_counted_and_the_rows_stay_written(tmp_path: Path) -> None:
    reported: Counter[QueryKey] = Counter()

    def on_commit(keys: Sequence[QueryKey]) -> None:
        reported.update(keys)
        raise RuntimeError("hook broke")

    with QueryCache(tmp_path / "c", on_commit=on_commit) as cache:
        for i in range(5):
            cache.set(("k", i), i)
        cache.flush()
        stats = cache.stats()
    assert stats["on_commit_errors"] >= 1
    assert (stats["written"], stats["write_errors"]) == (5, 0)
    assert reported == Counter({("k", i): 1 for i in range(5)}), "a failing hook is no retry"
    with QueryCache(tmp_path / "c") as cache:
        assert sorted(cache.keys(("k",))) == [("k", i) for i in range(5)]


# -- rows as diskcache writes them ----------------------------------------------------------


@pytest.mark.parametrize("data", [{"small": 1}, {"large": LARGE}], ids=["in-row", "file"])
def test_rows_are_the_ones_diskcache_writes_for_the_same_value(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    key = ("workflow", "w1")
    text = encode_key(key)
    states: list[tuple[tuple[Any, ...], bytes]] = []
    with QueryCache(ours) as cache:
        cache.set(key, data)
        for _ in range(2):
            cache.flush()
            row = _row(ours, text)
            assert row is not None
            states.append((row, (ours / row[-1]).read_bytes() if row[-1] else bytes(row[7])))
            cache.invalidate(key)  # the same key again: an update of the row
    for mine, value in states:
        with diskcache.Cache(str(theirs), disk=JsonDisk, **DISKCACHE_SETTINGS) as raw:
            raw.set(key, value)
        reference = _row(theirs, text)
        assert reference is not None
        assert mine[:7] == reference[:7]  # raw, expire, access count, tag, size, mode, file?
        assert mine[8] == reference[8] == 1  # store_time equals access_time
        if mine[-1] is None:
            assert mine[7] == reference[7]
        else:
            assert (theirs / reference[-1]).read_bytes() == value
    assert [json.loads(value)["stale"] for _, value in states] == [False, True]


def test_diskcache_reads_the_rows_and_its_counts_and_files_stay_right(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        for i in range(20):
            cache.set(("s", i), {"i": i})
        for i in range(3):
            cache.set(("l", i), {"i": i, "pad": LARGE})
        cache.flush()
        cache.invalidate(("s",))
        cache.remove(("s", 0), exact=True)
        cache.remove(("l", 0), exact=True)  # a row with a value file
        cache.set(("l", 1), {"i": 1})  # a value file replaced by an in-row value
        cache.flush()
        expected = {k: cache.get(k) for k in cache}
    assert len(expected) == 21
    assert len(_value_files(directory)) == 1, "the removed and the replaced value files are gone"

    with diskcache.Cache(str(directory), disk=JsonDisk, **DISKCACHE_SETTINGS) as raw:
        assert raw.check() == []  # Settings count and size, files present, no stray files
        assert len(raw) == len(expected) + 1  # and the meta row
        assert set(raw) == set(expected) | {META_KEY}
        for key, entry in expected.items():
            assert entry is not None
            text = raw.get(key)
            assert isinstance(text, str)
            assert decode_record(key, text).entry == entry


def test_a_value_file_replaced_by_a_small_value_is_removed_after_the_commit(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("doc",), {"pad": LARGE})
        cache.flush()
        assert len(_value_files(directory)) == 1
        cache.set(("doc",), {"pad": "short"})  # alone in its batch: no deletes, no files
        cache.flush()
        assert _value_files(directory) == []
        row = _row(directory, '["doc"]')
        assert row is not None
        assert (row[5], row[6], json.loads(row[7])["data"]) == (1, 1, {"pad": "short"})
    with diskcache.Cache(str(directory), disk=JsonDisk, **DISKCACHE_SETTINGS) as raw:
        assert raw.check() == []


@pytest.mark.parametrize("reaction", ["set", "remove"])
def test_a_subscriber_acting_on_an_invalidation_is_what_reaches_the_disk(
    tmp_path: Path, reaction: str
) -> None:
    from querysync import Invalidation
    from querysync.testing import change

    directory = tmp_path / "c"
    key = ("workflow", "w1")
    with QueryCache(directory) as cache:
        cache.set(key, {"v": "old"})
        cache.set(("workflows",), [])

        def on_event(event: Any) -> None:
            if event.kind == "invalidated" and event.key == key:
                if reaction == "set":
                    cache.set(key, {"v": "new"})
                else:
                    cache.remove(key, exact=True)

        subscription = cache.events().subscribe(on_event)
        update = change("updated", "workflow", "w1", etag="e2")
        cache.apply_invalidation(Invalidation(update, (("workflows",), key), (key,)))
        subscription.dispose()
        in_memory = cache.get(key)
    with QueryCache(directory) as reopened:
        assert reopened.get(key) == in_memory
        stale = reopened.get(("workflows",))
        assert stale is not None
        assert stale.stale
    if reaction == "set":
        assert in_memory is not None
        assert (in_memory.data, in_memory.stale) == ({"v": "new"}, False)
    else:
        assert in_memory is None


# -- atomic batches ---------------------------------------------------------------------------


def _table(tmp_path: Path) -> tuple[diskcache.Cache, Path]:
    directory = tmp_path / "t"
    return diskcache.Cache(str(directory), disk=JsonDisk, **DISKCACHE_SETTINGS), directory


def _keys_in(directory: Path) -> set[str]:
    con = _db(directory)
    try:
        return {k for (k,) in con.execute("SELECT key FROM Cache")}
    finally:
        con.close()


@pytest.mark.parametrize("parameter_limit", [None, 7], ids=["one-statement", "split"])
def test_a_batch_is_written_whole_or_not_at_all(
    tmp_path: Path, parameter_limit: int | None
) -> None:
    raw, directory = _table(tmp_path)
    table = CacheTable(raw)
    try:
        if parameter_limit is not None:
            # An SQLite built with a low limit on bound parameters: three rows per statement.
            table._connection().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, parameter_limit)
        first: list[RowOp] = [(("k", i), b'{"v":1}') for i in range(40)]
        table.write(first, time.time())
        assert _keys_in(directory) == {encode_key(k) for k, _ in first if isinstance(k, tuple)}

        # A trigger that refuses one row halfway through the next batch, as a full disk
        # or a constraint would: none of the batch may land.
        con = _db(directory)
        con.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON Cache WHEN NEW.key = '[\"boom\"]'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        con.commit()
        second: list[RowOp] = [(("n", i), b'{"v":2}') for i in range(20)]
        second += [(("k", i), None) for i in range(10)]
        second.append((("boom",), b"{}"))
        second += [(("m", i), b'{"v":3}') for i in range(20)]
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            table.write(second, time.time())
        assert _keys_in(directory) == {encode_key(k) for k, _ in first if isinstance(k, tuple)}

        con.execute("DROP TRIGGER refuse")
        con.commit()
        con.close()
        table.write(second, time.time())
        assert len(_keys_in(directory)) == 40 - 10 + 20 + 1 + 20
    finally:
        table.close()
        raw.close()


def test_a_failed_batch_leaves_no_value_file_behind(tmp_path: Path) -> None:
    raw, directory = _table(tmp_path)
    table = CacheTable(raw)
    try:
        con = _db(directory)
        con.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON Cache BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        con.commit()
        con.close()
        with pytest.raises(sqlite3.IntegrityError):
            table.write([(("big",), json.dumps({"pad": LARGE}).encode())], time.time())
        assert _value_files(directory) == []
    finally:
        table.close()
        raw.close()


# -- checkpoints ------------------------------------------------------------------------------


def test_commits_reach_the_database_file_itself_while_the_cache_stays_open(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        for i in range(200):
            cache.set(("k", i), {"i": i})
        cache.flush()
        # The writer's connection does not checkpoint; the checkpoint thread copies the
        # write-ahead log into cache.db shortly after. Read cache.db alone to see it.
        deadline = time.monotonic() + 20
        found = 0
        while time.monotonic() < deadline:
            copy = tmp_path / f"copy-{time.monotonic_ns()}"
            copy.mkdir()
            shutil.copy(directory / "cache.db", copy / "cache.db")
            found = len([k for k in _keys_in(copy) if k.startswith('["k",')])
            if found == 200:
                break
            time.sleep(0.05)
        assert found == 200


# -- encoding ---------------------------------------------------------------------------------

_SCALAR = (
    st.text()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)


@given(st.lists(_SCALAR, max_size=5))
def test_key_text_is_exactly_what_json_dumps_writes(parts: list[Any]) -> None:
    # Rows are found again by this text: it must not differ from earlier versions' by a byte.
    key = tuple(parts)
    assert encode_key(key) == json.dumps(parts, separators=(",", ":"), allow_nan=False)


@given(
    etag=st.none() | st.text(),
    stale=st.booleans(),
    updated_at=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    error=st.none() | st.text(),
    data=st.recursive(
        _SCALAR, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8
    ),
)
def test_a_record_reads_back_as_written(
    etag: str | None, stale: bool, updated_at: float, error: str | None, data: Any
) -> None:
    key: QueryKey = ("k", "1")
    entry = CacheEntry(key, data, etag, stale, updated_at, error)
    text = encode_record(Record(entry, None)).decode()
    assert json.loads(text) == {
        "etag": etag,
        "stale": stale,
        "updated_at": updated_at,
        "error": error,
        "gen": 0,
        "data": data,
    }
    assert decode_record(key, text).entry == CacheEntry(
        key, data, etag, stale, float(updated_at), error
    )
