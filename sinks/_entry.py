"""CacheEntry, and how entries and query keys are written as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, cast

from querysync._exceptions import CacheCorruptError, ConfigurationError
from querysync._keys import QueryKey
from querysync._types import JSON

__all__ = [
    "CacheEntry",
    "Head",
    "Record",
    "as_query_key",
    "decode_head",
    "decode_key",
    "decode_record",
    "encode_data",
    "encode_key",
    "encode_record",
    "etag_of",
    "parse_json",
]

_SCALARS = (str, int, float, bool)
# What json.dumps(..., separators=(",", ":"), allow_nan=False) uses, built once rather
# than per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# What json.dumps writes for a string (ensure_ascii). Typed as taking any object: it
# raises TypeError for anything but a string, which encode_key relies on.
_escape = cast(Callable[[object], str], encode_basestring_ascii)
_DECODER = json.JSONDecoder()
_DATA_MEMBER = ',"data":'


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached query result as this process sees it.

    ``data`` is JSON (treat it as read-only: it may be shared with other readers),
    ``etag`` the resource state it was fetched at (if known), ``stale`` whether it
    was invalidated since, ``updated_at`` when the data was last stored (epoch
    seconds) and ``error`` the message of the last failed fetch, ``None`` after a
    successful one.
    """

    key: QueryKey
    data: JSON
    etag: str | None = None
    stale: bool = False
    updated_at: float = 0.0
    error: str | None = None


Head = tuple[QueryKey, str | None, bool, float, str | None]
"""An entry minus its data: ``(key, etag, stale, updated_at, error)``."""

_UNDECODED: Any = object()


class Record:
    """An entry plus its data as JSON text, so marking it stale never re-encodes on the loop.

    ``data_json`` is ``None`` for entries loaded from disk until they are first
    re-written; it is then computed from ``entry.data`` (which came from JSON).
    ``gen`` is the cache's invalidation generation when the entry was stored: once
    ``invalidate_all`` has moved the generation past it, the entry reads as stale
    without its row being rewritten (0 for rows written before generations existed).

    A record made by :meth:`of_text` holds the text only and decodes the data the
    first time ``entry`` is read: the memory tier keeps entries as text, which the
    garbage collector never walks, and marking one stale does not decode it.
    """

    __slots__ = ("_data", "_entry", "_head", "data_json", "gen")

    def __init__(self, entry: CacheEntry, data_json: str | None, gen: int = 0) -> None:
        self._entry: CacheEntry | None = entry
        self._head: Head = (entry.key, entry.etag, entry.stale, entry.updated_at, entry.error)
        self._data: Any = entry.data
        self.data_json = data_json
        self.gen = gen

    @classmethod
    def of_text(cls, head: Head, data_json: str, gen: int) -> Record:
        """The record of ``head`` whose data is ``data_json``, decoded when first read."""
        record = cls.__new__(cls)
        record._entry = None
        record._head = head
        record._data = _UNDECODED
        record.data_json = data_json
        record.gen = gen
        return record

    @property
    def entry(self) -> CacheEntry:
        """The entry (its data decoded now if this record was made from text)."""
        entry = self._entry
        if entry is None:
            data = self._data
            if data is _UNDECODED:
                assert self.data_json is not None
                data = self._data = parse_json(self.data_json)
            key, etag, stale, updated_at, error = self._head
            entry = self._entry = CacheEntry(key, data, etag, stale, updated_at, error)
        return entry

    @property
    def head(self) -> Head:
        """``(key, etag, stale, updated_at, error)``, without decoding the data."""
        return self._head

    @property
    def stale(self) -> bool:
        """Whether the entry is marked stale (read without decoding the data)."""
        return self._head[2]

    @property
    def etag(self) -> str | None:
        """The entry's etag (read without decoding the data)."""
        return self._head[1]

    def _derived(self, stale: bool, error: str | None) -> Record:
        key, etag, _, updated_at, _ = self._head
        head = (key, etag, stale, updated_at, error)
        if self._data is _UNDECODED:
            assert self.data_json is not None
            return Record.of_text(head, self.data_json, self.gen)
        entry = CacheEntry(key, self._data, etag, stale, updated_at, error)
        return Record(entry, self.data_json, self.gen)

    def with_stale(self) -> Record:
        """The same entry marked stale (dataclasses.replace is slow for a hot path)."""
        return self._derived(True, self._head[4])

    def with_error(self, error: str) -> Record:
        """The same entry marked stale with the message of a failed fetch."""
        return self._derived(True, error)

    def seen_at(self, generation: int) -> Record:
        """This record as it reads when the cache's generation is ``generation``."""
        if self.gen < generation and not self._head[2]:
            return self.with_stale()
        return self

    def json(self) -> str:
        """The data as JSON text, computed once."""
        if self.data_json is None:
            self.data_json = encode_data(self._data)
        return self.data_json


def as_query_key(key: Iterable[Any], *, allow_empty: bool = False) -> QueryKey:
    """``key`` as a tuple of JSON scalars; raises TypeError or ValueError otherwise.

    A bare string means a one-element key, as in :class:`querysync.KeyRegistry`:
    ``tuple("workflows")`` would silently split it into letters.
    """
    if type(key) is tuple and key:
        for part in key:
            if type(part) is not str:
                break
        else:
            return key  # the usual key, checked in a third of the time of the loop below
    if isinstance(key, str):
        return (key,)
    if isinstance(key, bytes | bytearray):
        raise TypeError("query key elements must be JSON scalars, not bytes")
    out = tuple(key)
    if not out and not allow_empty:
        raise ConfigurationError("a query key needs at least one element")
    for part in out:
        if part is None:
            continue
        if not isinstance(part, _SCALARS):
            raise TypeError(f"query key elements must be JSON scalars, not {type(part).__name__}")
        if isinstance(part, float) and not math.isfinite(part):
            raise ConfigurationError(f"query key elements must be finite numbers, not {part!r}")
    return out


def encode_key(key: QueryKey) -> str:
    """The key as JSON array text: the form stored in the SQLite ``key`` column.

    The text is what ``json.dumps(list(key), separators=(",", ":"))`` writes, to the
    byte: a row is found again by this text, so it must never change. Keys of strings
    (nearly all of them) take a shortcut about five times faster than ``json.dumps``;
    the cache's writer encodes one key per row.
    """
    try:
        return f"[{','.join([_escape(part) for part in key])}]"
    except TypeError:  # a number, a boolean or null among the elements
        return _ENCODER.encode(list(key))


def decode_key(text: str) -> QueryKey:
    """The key a JSON array text names; CacheCorruptError when it is anything else."""
    try:
        value = parse_json(text)
        if not isinstance(value, list):
            raise ValueError("not a JSON array")
        return as_query_key(value)
    except (ValueError, TypeError) as exc:
        raise CacheCorruptError(f"row key {text[:80]!r} is not a query key: {exc}") from exc


def encode_data(data: Any) -> str:
    """``data`` as compact JSON; TypeError/ValueError when it is not JSON."""
    return _ENCODER.encode(data)


def etag_of(data: Any, etag: str | None) -> str | None:
    """The explicit etag, else the string ``data["etag"]`` of a mapping, else None."""
    if etag is not None:
        return etag
    if isinstance(data, Mapping):
        found = data.get("etag")
        if isinstance(found, str):
            return found
    return None


def encode_record(record: Record) -> bytes:
    """The JSON document stored as a row's value: ``{etag, stale, updated_at, error, data}``."""
    _, etag_value, stale_value, updated, error_value = record.head
    # Written by hand rather than with json.dumps (four times slower, once per row on
    # the writer thread), with json's own string escaping and number formatting. The
    # data is spliced in as already-encoded text: re-writing a stale flag must not
    # re-serialise a large document.
    etag = "null" if etag_value is None else _escape(etag_value)
    error = "null" if error_value is None else _escape(error_value)
    if type(updated) is float and updated - updated == 0.0:  # finite: json writes repr()
        at = repr(updated)
    else:
        at = json.dumps(updated)
    stale = "true" if stale_value else "false"
    return (
        f'{{"etag":{etag},"stale":{stale},"updated_at":{at},"error":{error},'
        f'"gen":{int(record.gen)},"data":{record.json()}}}'
    ).encode()


def decode_record(key: QueryKey, text: str) -> Record:
    """The record a stored document describes; CacheCorruptError when it is not one."""
    try:
        doc, data, data_json = _split(text)
    except ValueError as exc:
        raise CacheCorruptError(f"row {key!r} does not hold JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CacheCorruptError(f"row {key!r} does not hold an entry document")
    etag = doc.get("etag")
    stale = doc.get("stale")
    updated_at = doc.get("updated_at")
    error = doc.get("error")
    if (
        not (etag is None or isinstance(etag, str))
        or not isinstance(stale, bool)
        or isinstance(updated_at, bool)
        or not isinstance(updated_at, int | float)
        or not (error is None or isinstance(error, str))
    ):
        raise CacheCorruptError(f"row {key!r} has fields of the wrong type")
    gen = doc.get("gen", 0)
    if not isinstance(gen, int) or isinstance(gen, bool):
        raise CacheCorruptError(f"row {key!r} has a generation of the wrong type")
    entry = CacheEntry(key, data, etag, stale, float(updated_at), error)
    return Record(entry, data_json, gen)


def decode_head(key: QueryKey, text: str) -> tuple[str | None, bool, int]:
    """A stored document's ``(etag, stale, gen)``, reading its data as little as possible.

    ``text`` may be the document's first bytes only (as long as they reach the
    ``"data"`` member); the data itself is never parsed. CacheCorruptError when the
    fields cannot be read from it.
    """
    cut = text.find(_DATA_MEMBER)
    try:
        head = parse_json(text[:cut] + "}") if cut > 0 else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or "data" in head:
        # The data came first, or a planted document: read it whole.
        try:
            head = _split(text)[0]
        except ValueError as exc:
            raise CacheCorruptError(f"row {key!r} does not hold JSON: {exc}") from exc
    if not isinstance(head, dict):
        raise CacheCorruptError(f"row {key!r} does not hold an entry document")
    etag, stale, gen = head.get("etag"), head.get("stale"), head.get("gen", 0)
    if (
        not (etag is None or isinstance(etag, str))
        or not isinstance(stale, bool)
        or not isinstance(gen, int)
        or isinstance(gen, bool)
    ):
        raise CacheCorruptError(f"row {key!r} has fields of the wrong type")
    return etag, stale, gen


def parse_json(text: str) -> Any:
    """``json.loads`` of text, minus its per-call overhead (a cold start makes 300,000 calls)."""
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return _DECODER.decode(text)  # leading whitespace, or the error message to raise
    if end != len(text):
        return _DECODER.decode(text)  # trailing whitespace, or trailing garbage to refuse
    return value


def _split(text: str) -> tuple[object, Any, str | None]:
    """The document minus its data, the data, and the data's own text when it can be kept."""
    # encode_record writes "data" last after a header of scalars. If the text before the
    # first ',"data":' closes as an object, that member is at the top level and the rest
    # is exactly the data's text: keeping it saves re-encoding when the entry is re-written.
    cut = text.find(_DATA_MEMBER)
    if cut > 0 and text.endswith("}"):
        try:
            head = parse_json(text[:cut] + "}")
            data_json = text[cut + len(_DATA_MEMBER) : -1]
            data = parse_json(data_json)
        except ValueError:
            pass
        else:
            if isinstance(head, dict) and "data" not in head:
                return head, data, data_json
    doc = parse_json(text)
    if not isinstance(doc, dict) or "data" not in doc:
        raise ValueError("not an object with a data member")
    return doc, doc["data"], None
