"""The etag rule of the NodeTool backend: md5 of the resource's JSON dump with sorted keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["etag_of"]


def etag_of(resource: Mapping[str, Any]) -> str:
    """The etag of ``resource``: 32 lowercase hex digits.

    The rule, for anyone who wants to recompute it: drop the ``etag`` field, dump the
    rest with ``json.dumps(resource, sort_keys=True, default=str)`` (Python's default
    separators ``", "`` and ``": "``, ``ensure_ascii=True``), encode as UTF-8 and take
    the md5 hex digest. The etag field itself is left out so that a REST body, which
    carries its own etag, hashes to that same etag.
    """
    body = {key: value for key, value in resource.items() if key != "etag"}
    dump = json.dumps(body, sort_keys=True, default=str)
    return hashlib.md5(dump.encode("utf-8"), usedforsecurity=False).hexdigest()
