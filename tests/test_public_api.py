"""The public names of querysync and querysync.operators change only on purpose.

When a name is added or removed on purpose, update the literal lists below.
"""

from __future__ import annotations

import importlib

import pytest

import querysync

QUERYSYNC_ALL = [
    "JSON",
    "Agreement",
    "AuthenticationError",
    "CacheClosedError",
    "CacheCorruptError",
    "CacheError",
    "CacheSecurityError",
    "CacheStats",
    "ChangeEvent",
    "ConfigurationError",
    "Disagreement",
    "FetchError",
    "Fetched",
    "Invalidation",
    "KeyRegistry",
    "LeaseLostError",
    "LIST_KEYS",
    "NODETOOL_INTERNAL_TYPES",
    "NodeToolApi",
    "Pipeline",
    "PipelineStats",
    "QueryKey",
    "QuerySyncError",
    "Rejected",
    "Resource",
    "ResourceChangeUpdate",
    "ResourceGone",
    "Resync",
    "ShareConnectionError",
    "ShareError",
    "SourceError",
    "SourceStats",
    "StartingSync",
    "Sync",
    "SyncStats",
    "TokenSource",
    "TokenSourceError",
    "__version__",
    "audit",
    "build_pipeline",
    "default_registry",
    "endpoint_for",
    "key_matches",
    "nodetool_registry",
    "sync",
]

OPERATORS_ALL = [
    "Frame",
    "RejectHandler",
    "Stage",
    "decode",
    "expand_keys",
    "resource_changes",
    "routed_to",
    "throttle_per_resource",
]

TESTING_ALL = ["MarbleContext", "change", "free_port", "marbles", "nats_server_binary"]

SINKS_ALL = [
    "CacheEntry",
    "CacheEvent",
    "CacheEventKind",
    "CacheReader",
    "Fetch",
    "JsonlRecorder",
    "QueryCache",
    "QueryStatus",
    "RefetchType",
    "ShareConfig",
    "SharedCache",
    "apply",
    "to_jsonl",
]

MODULES = {
    "querysync": QUERYSYNC_ALL,
    "querysync.operators": OPERATORS_ALL,
    "querysync.sinks": SINKS_ALL,
    "querysync.testing": TESTING_ALL,
}


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_all_is_exactly_the_expected_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "duplicate names in __all__"
    assert sorted(exported) == sorted(MODULES[module_name])


@pytest.mark.parametrize(
    ("module_name", "name"),
    [(m, n) for m, names in sorted(MODULES.items()) for n in names],
)
def test_every_exported_name_is_importable(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import {name}", namespace)
    assert namespace[name] is getattr(module, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from querysync.operators import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(OPERATORS_ALL)


def test_exception_tree() -> None:
    # As drawn in querysync/_exceptions.py.
    assert issubclass(querysync.QuerySyncError, Exception)
    for name in ("ConfigurationError", "CacheError", "FetchError", "SourceError"):
        assert issubclass(getattr(querysync, name), querysync.QuerySyncError)
    for name in ("CacheCorruptError", "CacheSecurityError", "CacheClosedError"):
        assert issubclass(getattr(querysync, name), querysync.CacheError)
    assert issubclass(querysync.ResourceGone, querysync.FetchError)
    assert issubclass(querysync.AuthenticationError, querysync.SourceError)


def test_version_is_a_string() -> None:
    assert isinstance(querysync.__version__, str)
    assert querysync.__version__.count(".") >= 1


def test_operators_carry_counts() -> None:
    from collections import Counter

    from querysync.operators import (
        decode,
        expand_keys,
        resource_changes,
        routed_to,
        throttle_per_resource,
    )

    for stage in (
        decode(),
        resource_changes(),
        routed_to("k"),
        throttle_per_resource(1),
        expand_keys(),
    ):
        assert callable(stage)
        assert isinstance(stage.counts, Counter)
