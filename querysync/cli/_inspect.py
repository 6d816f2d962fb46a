"""``querysync inspect DIR``: what a cache holds, how fresh it is."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from querysync.sinks import QueryCache
from querysync.sinks._disk import DB_NAME

__all__ = ["run_inspect"]


def run_inspect(args: argparse.Namespace) -> int:
    """Print every entry (key, stale, etag, age); 0 on success, 1 when there is no cache."""
    # Opening a QueryCache creates what is missing: a mistyped path must not become an
    # empty cache that is then reported as one.
    if not (Path(args.directory) / DB_NAME).is_file():
        print(f"querysync inspect: no querysync cache in {args.directory}", file=sys.stderr)
        return 1
    now = time.time()
    # Read-only: inspecting must never discard or rewrite anything (a cache written
    # with another buster used to be discarded by opening it here).
    with QueryCache(args.directory, buster=getattr(args, "buster", ""), read_only=True) as cache:
        entries = [e for e in (cache.get(k) for k in sorted(cache.keys(), key=repr)) if e]
        stored = f"buster {cache.stored_buster!r}"
        if cache.written_at is not None:
            stored += f", written {now - cache.written_at:.0f} s ago"
        if cache.discard_reason is not None:
            print(
                f"querysync inspect: {stored}; a QueryCache opened with buster "
                f"{getattr(args, 'buster', '')!r} would discard it ({cache.discard_reason})",
                file=sys.stderr,
            )
    if args.json:
        for e in entries:
            print(
                json.dumps(
                    {
                        "key": list(e.key),
                        "stale": e.stale,
                        "etag": e.etag,
                        "age": round(now - e.updated_at, 3),
                        "error": e.error,
                    }
                )
            )
        return 0
    table = Table(title=f"{args.directory}: {len(entries)} entries ({stored})")
    for column in ("key", "stale", "etag", "age (s)", "error"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            json.dumps(list(e.key)),
            "stale" if e.stale else "fresh",
            e.etag or "",
            f"{now - e.updated_at:.1f}",
            e.error or "",
        )
    Console().print(table)
    return 0
