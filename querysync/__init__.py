"""querysync: TanStack-Query-style invalidation, refetch and persistence for Python.

A NodeTool backend announces every created, updated or deleted resource on one
WebSocket; querysync turns that feed into reactive stages
(``querysync.streams`` -> ``querysync.operators`` -> ``querysync.sinks``) that keep a
disk-backed query cache true to the backend.
"""

from __future__ import annotations

import os as _os

# From a source checkout's root (``python -m querysync``, ``python -m benchmarks``) this
# folder shadows the installed package, and the stage folders that the install maps into
# it (streams/, operators/, sinks/) sit beside it instead of inside it: look there too.
_here = _os.path.dirname(__file__)
_checkout = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "operators")) and _os.path.isfile(
    _os.path.join(_checkout, "operators", "__init__.py")
):
    __path__.append(_checkout)

from ._audit import Agreement, Disagreement, audit
from ._exceptions import (
    AuthenticationError,
    CacheClosedError,
    CacheCorruptError,
    CacheError,
    CacheSecurityError,
    ConfigurationError,
    FetchError,
    LeaseLostError,
    QuerySyncError,
    ResourceGone,
    ShareConnectionError,
    ShareError,
    SourceError,
    TokenSourceError,
)
from ._fetched import Fetched
from ._keys import (
    NODETOOL_INTERNAL_TYPES,
    KeyRegistry,
    QueryKey,
    default_registry,
    key_matches,
    nodetool_registry,
)
from ._model import ChangeEvent, Resource, ResourceChangeUpdate
from ._nodetool import LIST_KEYS, NodeToolApi, endpoint_for
from ._pipeline import Pipeline, build_pipeline
from ._signals import Invalidation, Rejected, Resync
from ._sync import StartingSync, Sync, sync
from ._token import TokenSource
from ._types import JSON, CacheStats, PipelineStats, SourceStats, SyncStats

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "LIST_KEYS",
    "NODETOOL_INTERNAL_TYPES",
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

from ._public import claim as _claim

_claim(__name__, globals(), __all__)
