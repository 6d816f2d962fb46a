"""The bucket itself: fencing of two publishers, entries over the max payload, awkward keys.

Against a real nats-server; the publisher is fed by a real QueryCache on disk.
"""

from __future__ import annotations

import asyncio
import json
import string
from pathlib import Path

import pytest
from _nats_server import NatsServer
from _support import until
from hypothesis import given, settings
from hypothesis import strategies as st

from querysync import QueryKey
from querysync.sinks import CacheReader, LeaseLostError, QueryCache, ShareConfig, SharedCache
from querysync.sinks._shared_cache import read_bucket
from querysync.sinks._shared_codec import MAX_KEY_TOKEN, bucket_key, key_of_bucket_key
from querysync.sinks._shared_conn import Bucket, connect_bucket
from querysync.sinks._shared_lease import acquire_lease
from querysync.sinks._shared_publish import Publisher

AWKWARD: list[QueryKey] = [
    ("workflow", "a.b.c"),
    ("thread", "with/slashes/and spaces"),
    ("ünïcödé", "日本語", "emoji 🎉"),
    ("dots..", ".", ">", "*"),
    ("x" * 5000,),
    ("numbers", 1, 2.5, True, None),
    ("",),
    ("quote\"back\\slash", "tab\tnew\nline"),
]

_KEY_CHARS = set(string.ascii_letters + string.digits + "-/_=.")

scalars = st.one_of(
    st.text(max_size=300),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(scalars, min_size=1, max_size=6).map(tuple))
def test_every_query_key_maps_to_a_valid_bucket_key_and_back(key: QueryKey) -> None:
    name = bucket_key(key)
    assert set(name) <= _KEY_CHARS
    assert all(token for token in name.split("."))  # no empty subject token
    back = key_of_bucket_key(name)
    if back is None:  # too long to spell: hashed, the key travels in the value
        assert name.startswith("e.h.")
    else:
        assert back == key
        assert len(name) <= MAX_KEY_TOKEN + 4


def test_distinct_keys_get_distinct_bucket_keys() -> None:
    names = {bucket_key(k) for k in AWKWARD}
    assert len(names) == len(AWKWARD)
    assert bucket_key(("a", "b")) != bucket_key(("a.b",))


def config(nats: NatsServer, **more: object) -> ShareConfig:
    return ShareConfig(nats.url, bucket="t", lease=more.pop("lease", 1.0), **more)  # type: ignore[arg-type]


async def active(nats: NatsServer, cache: QueryCache, owner: str) -> tuple[Bucket, Publisher]:
    conn = await connect_bucket(config(nats))
    publisher = Publisher(conn, await acquire_lease(conn, owner), owner)
    publisher.attach(cache)
    publisher.start()
    return conn, publisher


async def test_awkward_keys_round_trip_through_the_bucket(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with QueryCache(tmp_path / "c") as cache:
        conn, publisher = await active(nats_server, cache, "a")
        try:
            for n, key in enumerate(AWKWARD):
                cache.set(key, {"n": n, "key": list(key)}, etag=f"e{n}")
            async with SharedCache(config(nats_server)) as reader:
                await until(lambda: len(reader) == len(AWKWARD))
                assert sorted(reader.keys(), key=repr) == sorted(AWKWARD, key=repr)
                for n, key in enumerate(AWKWARD):
                    entry = reader.get(key)
                    assert entry is not None
                    assert entry.data == {"n": n, "key": list(key)}
                    assert entry.etag == f"e{n}"
                assert reader.keys(("numbers", 1)) == [("numbers", 1, 2.5, True, None)]
                html = reader._repr_html_()
                assert f"{len(AWKWARD)} entries, 0 stale" in html
                assert "a.b.c" in html
                cache.remove(("dots..",))
                await until(lambda: ("dots..", ".", ">", "*") not in reader)
                assert len(reader) == len(AWKWARD) - 1
        finally:
            await publisher.stop()
            await conn.close()


async def test_an_entry_over_the_max_payload_reaches_readers_whole_and_shrinks_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with QueryCache(tmp_path / "c") as cache:
        conn, publisher = await active(nats_server, cache, "a")
        try:
            big = {"blob": "x" * (conn.max_payload * 2 + 12345), "etag": "big"}
            assert len(json.dumps(big)) > conn.max_payload * 2
            async with SharedCache(config(nats_server)) as reader:
                seen: list[object] = []
                reader.watch(("asset", "big")).subscribe(seen.append)
                cache.set(("asset", "big"), big)
                await until(lambda: ("asset", "big") in reader)
                entry = reader.get(("asset", "big"))
                assert entry is not None
                assert entry.data == big
                assert seen == [big]
                # Smaller again: one message, and the chunks of the big one are purged.
                cache.set(("asset", "big"), {"blob": "small"})
                await until(lambda: seen[-1] == {"blob": "small"})
                assert reader.stats()["rejected"] == 0
            chunks = [k for k in await conn.kv.keys() if k.startswith("c.")]
            assert chunks == []
        finally:
            await publisher.stop()
            await conn.close()


async def test_a_paused_publisher_whose_lease_was_taken_cannot_write_a_single_entry(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Fencing by construction: the old publisher is alive and tries; the server refuses it."""
    async with QueryCache(tmp_path / "a") as old_cache, QueryCache(tmp_path / "b") as new_cache:
        old_conn = await connect_bucket(config(nats_server))
        old = Publisher(old_conn, await acquire_lease(old_conn, "old"), "old")
        old.attach(old_cache)
        # Not started: like a process frozen (GC pause, SIGSTOP) past its lease.
        new_conn, new = await active(nats_server, new_cache, "new")
        lost = asyncio.Event()
        old.on_lost = lost.set
        try:
            new_cache.set(("workflow", "w"), {"by": "new"})
            await until(lambda: new.counts["published"] == 1)
            old_cache.set(("workflow", "w"), {"by": "old"})
            old_cache.set(("workflow", "only-old"), {"by": "old"})
            old.start()  # wakes up and writes: every message carries its stale fence
            async with asyncio.timeout(10):
                await lost.wait()
            assert old.lost
            held = await read_bucket(config(nats_server))
            assert held[("workflow", "w")].data == {"by": "new"}
            assert ("workflow", "only-old") not in held
            assert old.counts["published"] == 0
            # The new publisher goes on undisturbed.
            new_cache.set(("workflow", "w2"), {"by": "new"})
            await until(lambda: new.counts["published"] == 2)
        finally:
            await old.stop()
            await new.stop()
            await old_conn.close()
            await new_conn.close()


async def test_a_standby_waits_while_the_lease_is_renewed_and_takes_it_when_given_up(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with QueryCache(tmp_path / "a") as cache:
        conn, publisher = await active(nats_server, cache, "first")
        standby = await connect_bucket(config(nats_server))
        try:
            waiting = asyncio.ensure_future(acquire_lease(standby, "second"))
            await asyncio.sleep(2.5)  # two and a half leases, renewed all along
            assert not waiting.done()
            await publisher.stop()  # gives the lease up: the standby need not wait it out
            async with asyncio.timeout(1.0 + 5):
                await waiting
        finally:
            waiting.cancel()
            await conn.close()
            await standby.close()


def test_querycache_and_sharedcache_are_both_cache_readers(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        assert isinstance(cache, CacheReader)
    assert isinstance(SharedCache("nats://127.0.0.1:1"), CacheReader)


def test_a_bad_share_url_is_a_configuration_error() -> None:
    from querysync import ConfigurationError

    with pytest.raises(ConfigurationError):
        ShareConfig.of("http://127.0.0.1:4222")
    assert ShareConfig.of("nats://127.0.0.1:4222/mine").bucket == "mine"
    assert ShareConfig.of("nats://127.0.0.1:4222/mine", "other").bucket == "other"
    assert LeaseLostError.__mro__[1].__name__ == "ShareError"
