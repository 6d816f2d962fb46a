"""Fetched: a fetcher's answer as decoded data plus the JSON text it was decoded from.

A fetcher that has the text (a REST body) returns both, so that the cache stores the
text as it came and takes the decoded object as its own: the body is decoded once and
never encoded again. A fetcher that returns plain data is encoded (and copied) by the
cache, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["Fetched", "decode_body", "encode_fetched"]


@dataclass(frozen=True, slots=True)
class Fetched:
    """``data`` and ``text``, its JSON text (``json.loads(text) == data``).

    The cache keeps ``data`` without copying it: the fetcher must not keep or change it.
    """

    data: Any
    text: str


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# json.loads accepts NaN and Infinity, which no other JSON reader does and which the
# cache refuses to store; the body's text is stored as it came, so they are refused here.
_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)


def decode_body(body: bytes) -> Fetched:
    """The data of a UTF-8 JSON body and its text; ValueError when it is not JSON."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        text = text[1:]  # what json.loads(bytes) skips too
    return Fetched(_STRICT.decode(text), text)


_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_fetched(data: Any) -> Fetched:
    """``data`` built by the fetcher itself (a list merged from pages), encoded once."""
    return Fetched(data, _COMPACT.encode(data))
