"""querysync.display: HTML tables of a real cache, its events and counters, escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from querysync.display import (
    CacheTable,
    CountsTable,
    Html,
    cache_html,
    counts_html,
    events_html,
    format_age,
    html_table,
    recent_events,
    summarize,
)
from querysync.sinks import CacheEvent, QueryCache
from querysync.testing import change

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QueryCache]:
    with QueryCache(tmp_path / "cache") as c:
        yield c


def _body_rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body)


def _cells(row: str) -> list[str]:
    return re.findall(r"<td>(.*?)</td>", row)


# -- building blocks ------------------------------------------------------------------


def test_html_table_escapes_everything_but_html() -> None:
    out = html_table(["a<b", "c"], [[EVIL, Html("<b>bold</b>")]], caption="x & y")
    assert "<script>" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    assert "<b>bold</b>" in out
    assert "<th>a&lt;b</th>" in out
    assert "x &amp; y" in out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-1.0, "0.0 s"), (0.42, "0.4 s"), (12.4, "12 s"), (90.0, "1.5 min"), (7200.0, "2.0 h"),
     (129600.0, "1.5 d")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_summarize() -> None:
    assert summarize([1, 2, 3]) == "3 items"
    assert summarize([{}]) == "1 item"
    assert summarize({"id": "w1", "name": "n"}) == "{id, name}"
    assert summarize({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}) == "{a, b, c, d, \u2026}"
    # A string shows as JSON, quotes included, so "12" and 12 differ.
    assert summarize("x" * 100, width=10) == '"' + "x" * 8 + "\u2026"
    assert summarize(12) == "12"
    assert summarize(None) == "null"


# -- the cache ------------------------------------------------------------------------


def test_cache_html_shows_key_state_etag_and_age(cache: QueryCache) -> None:
    fresh = cache.set(("workflow", "w1"), {"id": "w1", "etag": "0123456789abcdef"})
    cache.set(("workflows",), [{"id": "w1"}])
    cache.invalidate(("workflows",), refetch="none")
    html = cache_html(cache, now=fresh.updated_at + 90)
    assert "2 entries, 1 stale" in html
    rows = [_cells(r) for r in _body_rows(html)]
    assert len(rows) == 2
    by_key = {cells[0]: cells for cells in rows}
    w1 = by_key["<code>[&quot;workflow&quot;, &quot;w1&quot;]</code>"]
    assert w1[1] == "fresh"
    # The etag is cut short on screen and whole in the tooltip.
    assert 'title="0123456789abcdef"' in w1[2]
    assert "0123456789\u2026" in w1[2]
    assert w1[3] == "1.5 min"
    assert w1[4] == "{id, etag}"
    lists = by_key["<code>[&quot;workflows&quot;]</code>"]
    assert "stale" in lists[1]
    assert lists[2] == ""


def test_cache_html_escapes_keys_and_etags(cache: QueryCache) -> None:
    cache.set((EVIL, "a&b"), {"etag": '"><img src=x onerror=alert(1)>'})
    html = cache_html(cache)
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    assert "a&amp;b" in html
    assert "&quot;&gt;&lt;img" in html


def test_cache_html_limits_rows_and_says_so(cache: QueryCache) -> None:
    for n in range(5):
        cache.set(("job", f"j{n}"), {})
    html = cache_html(cache, limit=2)
    assert len(_body_rows(html)) == 2
    assert "5 entries, 0 stale; the first 2 by key" in html
    assert "j0" in html
    assert "j4" not in html


def test_cache_html_of_a_closed_cache_is_a_note(tmp_path: Path) -> None:
    cache = QueryCache(tmp_path / "closed")
    cache.close()
    html = cache_html(cache)
    assert html.startswith("<p>")
    assert "closed" in html


def test_cache_table_reads_the_cache_at_each_display(cache: QueryCache) -> None:
    view = CacheTable(cache, limit=10)
    assert "0 entries" in view._repr_html_()
    cache.set(("thread", "t1"), {})
    assert "1 entries" in view._repr_html_()
    assert "t1" in view._repr_html_()
    assert "CacheTable" in repr(view)


# -- its events -----------------------------------------------------------------------


def test_events_html_newest_first_with_cause_and_escaped_error() -> None:
    update = change("updated", "workflow", "w1", etag="e")
    events = [
        CacheEvent("invalidated", ("workflow", "w1"), 100.0, update=update),
        CacheEvent("fetch_failed", ("workflow", "w1"), 101.0, error=f"HTTP 500: {EVIL}"),
    ]
    html = events_html(events, now=103.0)
    rows = [_cells(r) for r in _body_rows(html)]
    assert [r[1] for r in rows] == ["fetch_failed", "invalidated"]
    assert rows[0][0] == "2.0 s ago"
    assert rows[1][3] == "updated workflow/w1"
    assert "<script>" not in html
    assert "HTTP 500: &lt;script&gt;" in rows[0][4]


def test_recent_events_keeps_the_latest_of_a_real_cache(cache: QueryCache) -> None:
    with recent_events(cache, limit=2) as events:
        for key in ("a", "b", "c"):
            cache.set((key,), {})
        assert events.seen == 3
        assert [e.key for e in events.events] == [("b",), ("c",)]
        html = events._repr_html_()
        assert "the latest 2 of 3 cache events" in html
        assert html.index("[&quot;c&quot;]") < html.index("[&quot;b&quot;]")
    cache.set(("d",), {})
    assert events.seen == 3
    with pytest.raises(ValueError, match="limit"):
        recent_events(cache, limit=0)


# -- counters -------------------------------------------------------------------------


def test_counts_html_groups_by_prefix_and_dims_zeros() -> None:
    html = counts_html(
        {"source.frames": 1234, "rejected": 0, "cache.fetched": 2, "source.drops": 0},
        title="now",
        ungrouped="pipeline",
    )
    headers = re.findall(r"<th>([^<]*)</th>", html)
    assert [h for h in headers if h] == ["source", "pipeline", "cache"]
    assert "<td>frames</td><td>1,234</td>" in html
    dimmed = re.findall(r'<tr style="opacity:0.45">(.*?)</tr>', html)
    assert [_cells(r)[0] for r in dimmed] == ["drops", "rejected"]
    assert ">now</caption>" in html


def test_counts_html_escapes_names() -> None:
    html = counts_html({EVIL: 1})
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_counts_table_calls_a_callable_at_each_display() -> None:
    counts = {"frames": 1}
    view = CountsTable(lambda: counts)
    assert "<td>frames</td><td>1</td>" in view._repr_html_()
    counts["frames"] = 2
    assert "<td>frames</td><td>2</td>" in view._repr_html_()
    assert "frames" in repr(view)


def test_counts_table_of_a_real_cache(cache: QueryCache) -> None:
    cache.set(("a",), {})
    html = CountsTable(cache.stats, title="cache")._repr_html_()
    assert "<td>entries</td><td>1</td>" in html
    assert "<td>set</td><td>1</td>" in html


def test_a_query_cache_displays_itself_as_an_escaped_table(cache: QueryCache) -> None:
    cache.set(("workflow", "<b>w1</b>"), {"id": "w1"}, etag="e1")
    html = cache._repr_html_()
    assert "<table" in html
    assert "&lt;b&gt;w1&lt;/b&gt;" in html
    assert "<b>w1</b>" not in html
