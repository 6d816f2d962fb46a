"""How query keys and cache entries are written into a NATS JetStream key-value bucket.

Bucket keys. NATS KV keys allow only ``[-/_=.a-zA-Z0-9]``, and dots separate subject
tokens. A query key's JSON text (:func:`querysync.sinks._entry.encode_key`) is written as
``e.k.<base64url without padding>``: reversible for any key (unicode, dots, slashes,
spaces), since base64url uses only ``[-_a-zA-Z0-9]``. A key whose encoding would pass
:data:`MAX_KEY_TOKEN` characters is written as ``e.h.<sha256 of the JSON text>``; its
query key is then read from the value, which always carries it. Every entry lives under
``e.``, so one watcher on ``e.>`` sees entries and nothing else (the lease is ``lease``,
chunks are under ``c.``).

Values. An entry is one compact JSON document ``{"key", "etag", "stale", "updated_at",
"error", "data"}``. A document larger than a message may carry (the server's
``max_payload``, 1 MB by default, less room for headers) is split: its bytes go in
order into chunk messages ``c.<hash>.<i>`` written first, then the entry's own message
is a manifest ``{"key", "chunks": [stream sequence, ...], "bytes": n}`` naming the
exact stream sequence of each chunk. A reader fetches chunks by sequence: a chunk
overwritten by a later write of the same key is gone, and that later write's manifest
is then still to come, so a reader never assembles parts of two versions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from querysync._keys import QueryKey

from ._entry import CacheEntry, as_query_key, decode_key, encode_data, encode_key

__all__ = [
    "CHUNK_PREFIX",
    "ENTRY_FILTER",
    "ENTRY_PREFIX",
    "LEASE_KEY",
    "MAX_KEY_TOKEN",
    "Manifest",
    "bucket_key",
    "chunk_key",
    "decode_document",
    "encode_entry",
    "key_of_bucket_key",
    "manifest_document",
]

ENTRY_PREFIX = "e."
ENTRY_FILTER = "e.>"
CHUNK_PREFIX = "c."
LEASE_KEY = "lease"
MAX_KEY_TOKEN = 200
"""Longest base64url token kept as the bucket key itself (characters); longer ones are hashed."""


def bucket_key(key: QueryKey) -> str:
    """The bucket key of a query key (see the module docstring)."""
    text = encode_key(key).encode()
    token = base64.urlsafe_b64encode(text).rstrip(b"=").decode("ascii")
    if len(token) <= MAX_KEY_TOKEN:
        return f"e.k.{token}"
    return f"e.h.{hashlib.sha256(text).hexdigest()}"


def key_of_bucket_key(name: str) -> QueryKey | None:
    """The query key a bucket key spells, or None for a hashed one (read it from the value).

    Raises ValueError for a name that is no entry key of this format.
    """
    if name.startswith("e.h."):
        return None
    if not name.startswith("e.k."):
        raise ValueError(f"{name!r} is not an entry key")
    token = name[4:]
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{name!r} is not base64url of a key: {exc}") from exc
    return decode_key(text)


def chunk_key(name: str, index: int) -> str:
    """The bucket key of chunk ``index`` of the entry stored under ``name``."""
    return f"c.{hashlib.sha256(name.encode()).hexdigest()[:32]}.{index}"


def encode_entry(entry: CacheEntry) -> bytes:
    """The entry as the JSON document a bucket value holds."""
    doc = {
        "key": list(entry.key),
        "etag": entry.etag,
        "stale": entry.stale,
        "updated_at": entry.updated_at,
        "error": entry.error,
        "data": entry.data,
    }
    return encode_data(doc).encode()


def manifest_document(key: QueryKey, chunks: list[int], size: int) -> bytes:
    """The value naming the chunks (by stream sequence) that hold an entry of ``size`` bytes."""
    return encode_data({"key": list(key), "chunks": chunks, "bytes": size}).encode()


@dataclass(frozen=True, slots=True)
class Manifest:
    """An entry stored in chunks: the sequences to read, in order, and the total size."""

    key: QueryKey
    chunks: tuple[int, ...]
    size: int


def decode_document(value: bytes) -> CacheEntry | Manifest:
    """The entry (or chunk manifest) a bucket value holds; ValueError when it holds neither."""
    try:
        doc: Any = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), list):
        raise ValueError("not an entry document")
    try:
        key = as_query_key(doc["key"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad key: {exc}") from exc
    chunks = doc.get("chunks")
    if chunks is not None:
        size = doc.get("bytes")
        if (
            not isinstance(chunks, list)
            or not all(type(c) is int and c > 0 for c in chunks)
            or type(size) is not int
        ):
            raise ValueError("bad chunk manifest")
        return Manifest(key, tuple(chunks), size)
    etag, stale, error = doc.get("etag"), doc.get("stale"), doc.get("error")
    at = doc.get("updated_at")
    if (
        not (etag is None or isinstance(etag, str))
        or not isinstance(stale, bool)
        or isinstance(at, bool)
        or not isinstance(at, int | float)
        or not (error is None or isinstance(error, str))
        or "data" not in doc
    ):
        raise ValueError("entry fields of the wrong type")
    return CacheEntry(key, doc["data"], etag, stale, float(at), error)
