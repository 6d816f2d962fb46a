"""querysync: TanStack-Query-style invalidation, refetch and persistence for Python.

A NodeTool backend announces every created, updated or deleted resource on one
WebSocket; querysync turns that feed into reactive stages
(``querysync.streams`` -> ``querysync.operators`` -> ``querysync.sinks``) that keep a
disk-backed query cache true to the backend.
"""

from __future__ import annotations

from ._exceptions import (
    AuthenticationError,
    CacheClosedError,
    CacheCorruptError,
    CacheError,
    CacheSecurityError,
    ConfigurationError,
    FetchError,
    QuerySyncError,
    ResourceGone,
    SourceError,
)
from ._keys import (
    NODETOOL_INTERNAL_TYPES,
    KeyRegistry,
    QueryKey,
    default_registry,
    key_matches,
    nodetool_registry,
)
from ._model import ChangeEvent, Resource, ResourceChangeUpdate
from ._signals import Invalidation, Rejected, Resync

__version__ = "0.1.0"

__all__ = [
    "NODETOOL_INTERNAL_TYPES",
    "AuthenticationError",
    "CacheClosedError",
    "CacheCorruptError",
    "CacheError",
    "CacheSecurityError",
    "ChangeEvent",
    "ConfigurationError",
    "FetchError",
    "Invalidation",
    "KeyRegistry",
    "QueryKey",
    "QuerySyncError",
    "Rejected",
    "Resource",
    "ResourceChangeUpdate",
    "ResourceGone",
    "Resync",
    "SourceError",
    "__version__",
    "default_registry",
    "key_matches",
    "nodetool_registry",
]
