"""The querysync exception tree.

    QuerySyncError
    ├── ConfigurationError        a call that cannot work as written (no scheduler, bad window);
    │                             also a ValueError, as a bad argument is in Python
    ├── CacheError
    │   ├── CacheCorruptError     the SQLite file cannot be read as a cache
    │   ├── CacheSecurityError    the directory is writable by others, or a row asks to unpickle
    │   └── CacheClosedError      the cache was used after close()
    ├── FetchError                a fetcher failed (wraps the cause; the entry keeps its data)
    │   └── ResourceGone          the server answered 404: the resource no longer exists
    ├── SourceError               a stream source gave up
    │   └── AuthenticationError   the server closed with 1008: retrying is pointless
    ├── TokenSourceError          a token source failed (one attempt fails, not the stream)
    └── ShareError                a shared cache (NATS JetStream bucket) cannot be used
        ├── ShareConnectionError  the NATS server refused or was unreachable at first connection
        └── LeaseLostError        another publisher took this one's lease: it stopped publishing

Errors from aiohttp, pydantic and sqlite are translated at the boundary with
``raise ... from exc``; they never leak raw from a public call. Each class reports
``querysync`` as its module (``querysync.ConfigurationError`` in a traceback), where
it is imported from (set by ``querysync/__init__.py``).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CacheClosedError",
    "CacheCorruptError",
    "CacheError",
    "CacheSecurityError",
    "ConfigurationError",
    "FetchError",
    "LeaseLostError",
    "QuerySyncError",
    "ResourceGone",
    "ShareConnectionError",
    "ShareError",
    "SourceError",
    "TokenSourceError",
]


class QuerySyncError(Exception):
    """Base of every error querysync raises on purpose."""


class ConfigurationError(QuerySyncError, ValueError):
    """A call that cannot work as written: a bad argument, or a missing prerequisite.

    It is a ``ValueError`` too, so code that catches the built-in for bad arguments
    catches it.
    """


class CacheError(QuerySyncError):
    """Something is wrong with the query cache or its directory."""


class CacheCorruptError(CacheError):
    """The cache's SQLite file cannot be read (truncated, overwritten, not a database)."""


class CacheSecurityError(CacheError):
    """The cache directory or one of its rows is not trustworthy."""


class CacheClosedError(CacheError):
    """The cache was used after ``close()``."""


class FetchError(QuerySyncError):
    """A fetcher failed; ``__cause__`` holds what it raised."""


class ResourceGone(FetchError):
    """The server answered 404: the resource no longer exists."""


class SourceError(QuerySyncError):
    """A stream source gave up (connection refused for good, closed with a final code)."""


class AuthenticationError(SourceError):
    """The server rejected the credentials (close code 1008)."""


class TokenSourceError(QuerySyncError):
    """A token source raised, timed out or gave no token; the attempt that asked fails."""


class ShareError(QuerySyncError):
    """A shared cache (NATS JetStream) could not be used."""


class ShareConnectionError(ShareError):
    """The NATS server refused or could not be reached at the first connection."""


class LeaseLostError(ShareError):
    """This publisher's lease was taken by another one: it stopped publishing."""
