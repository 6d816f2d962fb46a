"""Honest types and errors (issue 13 item 6): ConfigurationError is a ValueError raised for
every bad argument, public classes report their public module, reprs say what a thing is
and never a secret, and the stats TypedDicts name every key the methods return."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import querysync
from querysync import CacheStats, ConfigurationError, KeyRegistry, NodeToolApi, PipelineStats
from querysync.server import NodeToolServer, Workload
from querysync.sinks import QueryCache
from querysync.streams import Backoff


def test_configuration_error_is_a_value_error_and_a_querysync_error() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ConfigurationError, querysync.QuerySyncError)


def _server() -> object:
    return NodeToolServer(send_queue_size=0)


def _get(tmp: Path, key: Any) -> object:
    with QueryCache(tmp / "c") as cache:
        return cache.get(key)


BAD_ARGUMENTS: dict[str, Callable[[Path], object]] = {
    # Each of these raised a plain ValueError before.
    "cache-concurrency": lambda tmp: QueryCache(tmp / "c", concurrency=0),
    "cache-timeout": lambda tmp: QueryCache(tmp / "c", timeout=0),
    "cache-retries": lambda tmp: QueryCache(tmp / "c", retries=-1),
    "cache-batch": lambda tmp: QueryCache(tmp / "c", batch_size=0),
    "registry-empty-type": lambda tmp: KeyRegistry().register("", ["x"]),
    "registry-empty-key": lambda tmp: KeyRegistry().register("t", [()]),
    "cache-key-empty": lambda tmp: _get(tmp, ()),
    "cache-key-nan": lambda tmp: _get(tmp, ("x", float("nan"))),
    "backoff-attempt": lambda tmp: Backoff().delay(0),
    "server-queue": lambda tmp: _server(),
    "workload-pool": lambda tmp: Workload(NodeToolServer(), pool_size=0),
}


@pytest.mark.parametrize("call", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_a_bad_argument_raises_configuration_error(
    call: Callable[[Path], object], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError):
        call(tmp_path)


async def test_a_bad_workload_run_raises_configuration_error(server: NodeToolServer) -> None:
    with pytest.raises(ConfigurationError):
        await Workload(server).run(seconds=1, rate=0)


@pytest.mark.parametrize(
    "module", ["querysync", "querysync.sinks", "querysync.streams", "querysync.operators"]
)
def test_public_classes_report_their_public_module(module: str) -> None:
    namespace = importlib.import_module(module)
    classes = [v for n in namespace.__all__ if isinstance(v := getattr(namespace, n), type)]
    assert classes
    for cls in classes:
        assert cls.__module__ == module, cls


def test_a_traceback_names_the_public_exception() -> None:
    try:
        QueryCache("/nonexistent", concurrency=0)
    except ConfigurationError as exc:
        last = traceback.format_exception(exc)[-1]
    assert last.startswith("querysync.ConfigurationError: ")


def test_reprs_say_what_a_thing_is() -> None:
    registry = querysync.nodetool_registry()
    text = repr(registry)
    assert text.startswith("<KeyRegistry ")
    assert "workflow" in text
    assert f"{len(querysync.NODETOOL_INTERNAL_TYPES)} ignored" in text


async def test_reprs_never_show_a_token_or_a_password(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://user:pa55word@127.0.0.1:9", session, token="s3cret-t0ken")
        assert repr(api) == "<NodeToolApi 'http://127.0.0.1:9' with a token>"
        anonymous = NodeToolApi("http://127.0.0.1:9/", session)
        assert repr(anonymous) == "<NodeToolApi 'http://127.0.0.1:9' without a token>"
    running = await querysync.sync(
        "ws://user:pa55word@127.0.0.1:9/ws?api_key=q-t0ken",
        "http://127.0.0.1:9",
        tmp_path / "cache",
        token="s3cret-t0ken",
        # aiohttp sends URL userinfo as the Authorization header, so a Bearer token
        # beside it must go in the query.
        source_options={"max_attempts": 1, "token_in_query": True},
    )
    try:
        text = repr(running)
        assert text.startswith("<Sync 'ws://127.0.0.1:9/ws' -> ")
        assert str(tmp_path / "cache") in text
        assert "mirror" in text
    finally:
        await running.stop()
    assert "stopped" in repr(running)
    for secret in ("pa55word", "t0ken", "user"):
        assert secret not in text + repr(running) + repr(api)


def _declared(typed_dict: Any) -> set[str]:
    return set(typed_dict.__optional_keys__ | typed_dict.__required_keys__)


def test_the_stats_typed_dicts_declare_every_key(tmp_path: Path) -> None:
    # A new counter must be added to querysync/_types.py too; this is what says so.
    with QueryCache(tmp_path / "c") as cache:
        assert set(cache.stats()) == _declared(CacheStats)
    pipeline = querysync.build_pipeline(_empty(), window=0.25)
    assert set(pipeline.stats()) <= _declared(PipelineStats)
    assert set(pipeline.stats()) >= _declared(PipelineStats) - {"coalesced", "trailing"}


def _empty() -> Any:
    import reactivex

    return reactivex.empty()
