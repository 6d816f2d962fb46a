"""HTML views of a cache, its recent events and counters, for Jupyter and anywhere HTML goes.

    >>> from querysync.display import CacheTable, CountsTable, recent_events
    >>> CacheTable(cache)                 # in a notebook: a table of key, state, etag, age
    >>> events = recent_events(cache)     # records from now on; shows the latest events
    >>> CountsTable(running.counts)       # a callable: each display shows current counts

Each view has ``_repr_html_`` (what Jupyter shows) and each table has a function that
returns the same HTML as a string (:func:`cache_html`, :func:`events_html`,
:func:`counts_html`), for reports or a web page. Every text that comes from data (keys,
etags, errors, counter names) is escaped: a key may hold any string, ``<script>``
included.
"""

from __future__ import annotations

import heapq
import html
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from reactivex import abc

from ._exceptions import CacheClosedError, ConfigurationError
from ._keys import QueryKey

if TYPE_CHECKING:
    from .sinks import CacheEvent, CacheReader, QueryCache

__all__ = [
    "CacheTable",
    "CountsTable",
    "Html",
    "RecentEvents",
    "cache_html",
    "counts_html",
    "events_html",
    "format_age",
    "format_key",
    "html_table",
    "recent_events",
    "summarize",
]

_ETAG_SHOWN = 10
_DIM = "opacity:0.45"


class Html(str):
    """Text that is already HTML: :func:`html_table` puts it in a cell unescaped."""

    __slots__ = ()


def html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    caption: str | None = None,
    row_styles: Sequence[str] | None = None,
) -> str:
    """An HTML ``<table>``; every cell and the caption are escaped unless they are :class:`Html`.

    ``row_styles`` holds one inline style per row (``""`` for none).
    """
    out = ['<table class="querysync">']
    if caption:
        out.append(f'<caption style="text-align:left">{_cell(caption)}</caption>')
    out.append("<thead><tr>" + "".join(f"<th>{_cell(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        style = row_styles[i] if row_styles is not None and i < len(row_styles) else ""
        attr = f' style="{html.escape(style)}"' if style else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _cell(text: str) -> str:
    return text if isinstance(text, Html) else html.escape(str(text))


def format_key(key: QueryKey) -> str:
    """A query key as JSON array text: ``["workflow","w1"]`` (types stay visible)."""
    return json.dumps(list(key), ensure_ascii=False)


def format_age(seconds: float) -> str:
    """``"0.4 s"``, ``"12 s"``, ``"3.5 min"``, ``"2.0 h"``, ``"1.5 d"``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def summarize(data: object, width: int = 40) -> str:
    """A glance at JSON data: ``"12 items"``, ``"{id, name, etag, …}"``, or the value cut short."""
    if isinstance(data, list):
        return f"{len(data)} item" + ("" if len(data) == 1 else "s")
    if isinstance(data, dict):
        names = list(data)
        shown = ", ".join(str(n) for n in names[:4])
        return "{" + shown + (", \u2026" if len(names) > 4 else "") + "}"
    text = json.dumps(data, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _key_cell(key: QueryKey) -> Html:
    return Html(f"<code>{html.escape(format_key(key))}</code>")


def _etag(etag: str | None) -> Html:
    if etag is None:
        return Html("")
    shown = etag if len(etag) <= _ETAG_SHOWN else etag[:_ETAG_SHOWN] + "\u2026"
    return Html(f'<code title="{html.escape(etag)}">{html.escape(shown)}</code>')


# -- the cache ------------------------------------------------------------------------


def cache_html(cache: CacheReader, *, limit: int = 50, now: float | None = None) -> str:
    """An HTML table of the cache's entries: key, state, etag, age, data, last fetch error.

    Entries are sorted by key; at most ``limit`` rows are shown (default 50) and the
    caption says how many there are and how many are stale. ``now`` (epoch seconds,
    default the current time) is what ages are measured from. A closed cache is a
    one-line note instead of an error.
    """
    try:
        keys = cache.keys()
        stale = cache.stats()["stale"]
    except CacheClosedError:
        return f"<p>{html.escape(repr(cache))}</p>"
    now = time.time() if now is None else now
    # nsmallest, not sorted: a cache may hold 100 000 keys and the table shows 50.
    entries = [
        entry
        for key in heapq.nsmallest(limit, keys, key=format_key)
        if (entry := cache.get(key)) is not None
    ]
    caption = f"{len(keys)} entries, {stale} stale"
    if len(keys) > limit:
        caption += f"; the first {limit} by key"
    rows: list[list[str]] = []
    for entry in entries:
        age = format_age(now - entry.updated_at) if entry.updated_at else ""
        state = Html('<b style="color:#b35900">stale</b>') if entry.stale else "fresh"
        rows.append([
            _key_cell(entry.key), state, _etag(entry.etag), age, summarize(entry.data),
            entry.error or "",
        ])
    return html_table(["key", "state", "etag", "age", "data", "error"], rows, caption=caption)


class CacheTable:
    """A view of a :class:`querysync.sinks.QueryCache` that Jupyter shows as a table.

    It reads the cache each time it is displayed; ``limit`` rows at most (default 50).
    """

    def __init__(self, cache: QueryCache, *, limit: int = 50) -> None:
        self.cache = cache
        self.limit = limit

    def __repr__(self) -> str:
        return f"<CacheTable of {self.cache!r}>"

    def _repr_html_(self) -> str:
        return cache_html(self.cache, limit=self.limit)


# -- its events -----------------------------------------------------------------------


def _cause(event: CacheEvent) -> str:
    update = event.update
    if update is None:
        return ""
    return f"{update.event} {update.resource_type}/{update.resource.id}"


def events_html(
    events: Iterable[CacheEvent], *, now: float | None = None, caption: str | None = None
) -> str:
    """An HTML table of cache events, newest first: when, kind, key, cause, error.

    "when" is how long before ``now`` (epoch seconds, default the current time) the
    event happened; "cause" is the resource change behind it, when there was one.
    """
    now = time.time() if now is None else now
    rows = [
        [f"{format_age(now - e.at)} ago", e.kind, _key_cell(e.key), _cause(e), e.error or ""]
        for e in sorted(events, key=lambda e: e.at, reverse=True)
    ]
    return html_table(["when", "kind", "key", "cause", "error"], rows, caption=caption)


class RecentEvents:
    """The latest ``limit`` events of a cache, recorded from its creation on; shown as a table.

    Build it with :func:`recent_events`. ``seen`` counts every event recorded, kept or
    not. Stop recording with :meth:`dispose` (or ``with``); the kept events stay.
    """

    def __init__(self, cache: QueryCache, *, limit: int = 20) -> None:
        if limit < 1:
            raise ConfigurationError("limit must be at least 1")
        self._events: deque[CacheEvent] = deque(maxlen=limit)
        self.seen = 0
        self._subscription: abc.DisposableBase | None = cache.events().subscribe(self._add)

    def _add(self, event: CacheEvent) -> None:
        self._events.append(event)
        self.seen += 1

    @property
    def events(self) -> list[CacheEvent]:
        """The kept events, oldest first."""
        return list(self._events)

    def dispose(self) -> None:
        """Stop recording."""
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None

    def __enter__(self) -> RecentEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"<RecentEvents {len(self._events)} kept of {self.seen} seen>"

    def _repr_html_(self) -> str:
        caption = f"the latest {len(self._events)} of {self.seen} cache events"
        return events_html(self._events, caption=caption)


def recent_events(cache: QueryCache, *, limit: int = 20) -> RecentEvents:
    """A :class:`RecentEvents` recording ``cache``'s events from now on, keeping ``limit``."""
    return RecentEvents(cache, limit=limit)


# -- counters -------------------------------------------------------------------------


def counts_html(
    counts: Mapping[str, object], *, title: str | None = None, ungrouped: str = "counts"
) -> str:
    """An HTML table of counters, grouped side by side by the prefix before their first dot.

    ``{"source.frames": 3, "rejected": 0, "cache.fetched": 2}`` gives the groups
    ``source``, ``ungrouped`` (default ``"counts"``) and ``cache``, in order of first
    appearance, each a two-column table. Zero counters are dimmed, not hidden: "no
    rejections" is worth seeing.
    """
    groups: dict[str, list[tuple[str, object]]] = {}
    for name, value in counts.items():
        group, dot, rest = name.partition(".")
        if dot:
            groups.setdefault(group, []).append((rest, value))
        else:
            groups.setdefault(ungrouped, []).append((name, value))
    cells = []
    for group, items in groups.items():
        table = html_table(
            [group, ""],
            [[name, f"{value:,}"] for name, value in items],
            row_styles=["" if value else _DIM for _, value in items],
        )
        cells.append(f'<td style="vertical-align:top">{table}</td>')
    caption = f'<caption style="text-align:left">{html.escape(title)}</caption>' if title else ""
    return f'<table class="querysync-counts">{caption}<tr>{"".join(cells)}</tr></table>'


class CountsTable:
    """Counters that Jupyter shows as a table (see :func:`counts_html`).

    ``counts`` is a mapping, or a callable returning one (``running.counts``,
    ``cache.stats``): then each display shows the counts of that moment.
    """

    def __init__(
        self,
        counts: Mapping[str, object] | Callable[[], Mapping[str, object]],
        *,
        title: str | None = None,
        ungrouped: str = "counts",
    ) -> None:
        self.counts = counts
        self.title = title
        self.ungrouped = ungrouped

    def _current(self) -> Mapping[str, object]:
        return self.counts() if callable(self.counts) else self.counts

    def __repr__(self) -> str:
        return f"<CountsTable {dict(self._current())}>"

    def _repr_html_(self) -> str:
        return counts_html(self._current(), title=self.title, ungrouped=self.ungrouped)
