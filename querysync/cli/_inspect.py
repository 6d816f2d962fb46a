"""``querysync inspect DIR [KEY...]``: what a cache holds, how fresh it is, one entry's data."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from querysync._keys import QueryKey
from querysync.sinks import CacheEntry, QueryCache
from querysync.sinks._disk import DB_NAME

__all__ = ["parse_key", "run_inspect"]


def parse_key(words: list[str]) -> QueryKey:
    """A query key from the command line: one JSON array, or its elements as words.

    ``workflow 3f2a`` is ``("workflow", "3f2a")``; ``'["page", 2]'`` is ``("page", 2)``,
    for keys with elements that are not strings. Raises ValueError for a JSON array
    that is not a key.
    """
    if len(words) == 1 and words[0].lstrip().startswith("["):
        value = json.loads(words[0])
        scalars = (str, int, float, bool, type(None))
        if not isinstance(value, list) or not all(isinstance(v, scalars) for v in value):
            raise ValueError("a key given as JSON must be an array of strings, numbers or null")
        return tuple(value)
    return tuple(words)


def run_inspect(args: argparse.Namespace) -> int:
    """List entries (key, stale, etag, age) or print one entry's data; 1 when there is none."""
    try:
        key = parse_key(args.key)
        prefix = parse_key(args.prefix) if args.prefix is not None else ()
    except ValueError as exc:
        print(f"querysync inspect: not a query key: {exc}", file=sys.stderr)
        return 2
    if key and prefix:
        print("querysync inspect: give KEY or --prefix, not both", file=sys.stderr)
        return 2
    # Opening a QueryCache creates what is missing: a mistyped path must not become an
    # empty cache that is then reported as one.
    if not (Path(args.directory) / DB_NAME).is_file():
        print(f"querysync inspect: no querysync cache in {args.directory}", file=sys.stderr)
        return 1
    now = time.time()
    # Read-only: inspecting must never discard or rewrite anything (a cache written
    # with another buster used to be discarded by opening it here).
    buster = getattr(args, "buster", "")
    with QueryCache(args.directory, buster=buster, read_only=True) as cache:
        if key:
            found = cache.get(key)
            entries = [found] if found is not None else []
        else:
            entries = [e for e in (cache.get(k) for k in sorted(cache.keys(prefix), key=repr)) if e]
        stored = f"buster {cache.stored_buster!r}"
        if cache.written_at is not None:
            stored += f", written {now - cache.written_at:.0f} s ago"
        if cache.discard_reason is not None:
            print(
                f"querysync inspect: {stored}; a QueryCache opened with buster "
                f"{buster!r} would discard it ({cache.discard_reason})",
                file=sys.stderr,
            )
    if key:
        if not entries:
            print(f"querysync inspect: no entry for {json.dumps(list(key))}", file=sys.stderr)
            return 1
        indent = None if args.json else 2
        print(json.dumps(entries[0].data, indent=indent, ensure_ascii=False))
        return 0
    if args.json:
        for e in entries:
            print(json.dumps(_row(e, now)))
        return 0
    console = Console()
    title = f"{args.directory}: {len(entries)} entries"
    keys = [json.dumps(list(e.key), ensure_ascii=False) for e in entries]
    if max(map(len, keys), default=0) + _OTHER_COLUMNS <= console.width:
        console.print(_table(title, keys, entries, now))
    else:
        _print_stacked(console, title, keys, entries, now)
    return 0


# The width the table needs besides the key column: borders, "stale", "age (s)" and
# room for the etag and the error to fold in.
_OTHER_COLUMNS = 4 + 8 + 10 + 12 + 10


def _row(e: CacheEntry, now: float) -> dict[str, object]:
    return {
        "key": list(e.key),
        "stale": e.stale,
        "etag": e.etag,
        "age": round(now - e.updated_at, 3),
        "error": e.error,
    }


def _table(title: str, keys: list[str], entries: list[CacheEntry], now: float) -> Table:
    """The entries as a table whose keys are never cut: the etag and the error fold instead."""
    table = Table(title=title)
    table.add_column("key", no_wrap=True, min_width=max(map(len, keys), default=3))
    table.add_column("stale", no_wrap=True, min_width=5)
    table.add_column("etag", overflow="fold")
    table.add_column("age (s)", justify="right", no_wrap=True, min_width=7)
    table.add_column("error", overflow="fold")
    for text, e in zip(keys, entries, strict=True):
        table.add_row(
            text,
            "stale" if e.stale else "fresh",
            e.etag or "",
            f"{now - e.updated_at:.1f}",
            e.error or "",
        )
    return table


def _print_stacked(
    console: Console, title: str, keys: list[str], entries: list[CacheEntry], now: float
) -> None:
    """One block per entry, its key on a line of its own, for keys too long for a table."""
    console.print(title, markup=False, highlight=False)
    for text, e in zip(keys, entries, strict=True):
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        details = f"    {'stale' if e.stale else 'fresh'}, age {now - e.updated_at:.1f} s"
        if e.etag:
            details += f", etag {e.etag}"
        if e.error:
            details += f", error: {e.error}"
        console.print(details, markup=False, highlight=False, overflow="fold")
