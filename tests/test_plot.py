"""querysync.plot: the timeline recorder, and figures drawn headless from what it recorded."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from reactivex.subject import Subject

from querysync import Invalidation, Resync
from querysync.operators import throttle_per_resource
from querysync.plot import (
    Mark,
    Timeline,
    key_label,
    marble_label,
    plot_marbles,
    plot_timeline,
    record_timeline,
    resource_label,
)
from querysync.sinks import CacheEvent, QueryCache
from querysync.testing import change, marbles

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

a1 = change("updated", "workflow", "a", etag="1")
a2 = change("updated", "workflow", "a", etag="2")
a3 = change("updated", "workflow", "a", etag="3")
b1 = change("updated", "workflow", "b", etag="1")


def ticking(start: float = 1000.0, step: float = 0.5) -> Any:
    """A clock that moves ``step`` seconds at each reading."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QueryCache]:
    with QueryCache(tmp_path / "cache") as c:
        yield c


def _line(fig: Figure, gid: str) -> Line2D:
    (ax,) = fig.axes
    lines = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1, f"expected one line {gid!r}, found {len(lines)}"
    return lines[0]


def _xs(line: Line2D) -> list[float]:
    xs: list[float] = np.asarray(line.get_xdata(), dtype=float).tolist()
    return xs


def _ys(line: Line2D) -> list[float]:
    ys: list[float] = np.asarray(line.get_ydata(), dtype=float).tolist()
    return ys


def _has_gid(fig: Figure, gid: str) -> bool:
    (ax,) = fig.axes
    return any(a.get_gid() == gid for a in [*ax.get_lines(), *ax.collections])


def _collection(fig: Figure, gid: str) -> PathCollection:
    (ax,) = fig.axes
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1
    collection = found[0]
    assert isinstance(collection, PathCollection)
    return collection


def _offsets(collection: PathCollection) -> list[float]:
    """The x of every marble in a row."""
    xs: list[float] = np.asarray(collection.get_offsets(), dtype=float)[:, 0].tolist()
    return xs


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# -- labels ---------------------------------------------------------------------------


def test_labels() -> None:
    assert resource_label("workflow", "w1") == "workflow/w1"
    assert resource_label("secret", "") == "secret"
    assert key_label(("workflow", "w1")) == "workflow/w1"
    assert key_label(("messages", 3, None)) == "messages/3/None"
    assert key_label(()) == "*"
    assert marble_label(a2) == "a2"
    assert marble_label(Invalidation(b1, (("workflows",),))) == "b1"
    assert marble_label(Resync()) == "R"
    assert marble_label(change("deleted", "job", "j-long-id")) == "j-long"
    assert marble_label(42) == "42"


# -- recording ------------------------------------------------------------------------


def test_timeline_notes_what_each_kind_of_item_is() -> None:
    timeline = Timeline(clock=ticking())
    stream: Subject[Any] = Subject()
    timeline.observe(stream)
    stream.on_next(a1)
    stream.on_next(
        {"type": "resource_change", "event": "created", "resource_type": "job",
         "resource": {"id": "j1", "etag": "e"}}
    )
    stream.on_next({"type": "ping"})
    stream.on_next(Invalidation(b1, (("workflow", "b"),)))
    stream.on_next(Resync())
    stream.on_next(CacheEvent("fetched", ("workflow", "b"), 5.0))
    assert timeline.marks == [
        Mark(1000.0, "workflow/a", "update"),
        Mark(1000.5, "job/j1", "update"),
        Mark(1001.0, "workflow/b", "invalidation"),
        Mark(1001.5, "*", "resync"),
        Mark(5.0, "workflow/b", "fetched"),
    ]
    assert timeline.counts["ignored"] == 1
    assert timeline.counts["update"] == 2


def test_kind_renames_changes_but_not_resyncs() -> None:
    timeline = Timeline(clock=ticking())
    stream: Subject[Any] = Subject()
    timeline.observe(stream, kind="passed")
    stream.on_next(a1)
    stream.on_next(Resync())
    assert [m.kind for m in timeline.marks] == ["passed", "resync"]


def test_bad_items_and_stream_errors_never_reach_the_publisher() -> None:
    timeline = Timeline(clock=ticking())
    stream: Subject[Any] = Subject()
    others: list[Any] = []
    timeline.observe(stream)
    errors: list[Exception] = []
    stream.subscribe(others.append, errors.append)
    stream.on_next({"type": "resource_change", "resource_type": "job", "resource": "j1"})
    stream.on_next({"type": "resource_change", "resource_type": 7, "resource": {"id": "x"}})
    stream.on_next(object())
    stream.on_next(a1)
    stream.on_error(RuntimeError("feed lost"))
    assert len(others) == 4
    assert len(errors) == 1
    assert timeline.counts["ignored"] == 3
    assert timeline.counts["stream_errors"] == 1
    assert [m.resource for m in timeline.marks] == ["workflow/a"]


def test_dispose_stops_recording_and_keeps_the_marks() -> None:
    stream: Subject[Any] = Subject()
    with record_timeline(stream, clock=ticking()) as timeline:
        stream.on_next(a1)
    stream.on_next(a2)
    assert len(timeline) == 1


def test_limit_keeps_the_newest_and_counts_the_dropped() -> None:
    timeline = Timeline(clock=ticking(), limit=2)
    for n in range(5):
        timeline.note(f"r{n}", "update")
    assert [m.resource for m in timeline.marks] == ["r3", "r4"]
    assert timeline.counts["dropped"] == 3
    with pytest.raises(ValueError, match="limit"):
        Timeline(limit=0)


def test_record_timeline_from_streams_and_a_real_cache(cache: QueryCache) -> None:
    updates: Subject[Any] = Subject()
    passed: Subject[Any] = Subject()
    timeline = record_timeline(updates, passed=passed, cache=cache)
    updates.on_next(a1)
    passed.on_next(Invalidation(a1, (("workflow", "a"),)))
    cache.set(("workflow", "a"), {"id": "a", "etag": "1"})
    cache.invalidate(("workflow", "a"), refetch="none")
    cache.remove(("workflow", "a"))
    assert [(m.resource, m.kind) for m in timeline.marks] == [
        ("workflow/a", "update"),
        ("workflow/a", "invalidation"),
        ("workflow/a", "set"),
        ("workflow/a", "invalidated"),
        ("workflow/a", "removed"),
    ]
    times = [m.at for m in timeline.marks]
    assert times == sorted(times)
    assert timeline.resources() == ["workflow/a"]
    html = timeline._repr_html_()
    assert "workflow/a" in html
    assert "<table" in html
    timeline.dispose()
    cache.set(("workflow", "b"), {})
    assert len(timeline) == 5


def test_resources_are_ordered_by_count() -> None:
    timeline = Timeline(clock=ticking())
    for name in ["x", "y", "y", "z", "y", "x"]:
        timeline.note(name, "update")
    timeline.note("z", "fetched")
    timeline.note("z", "fetched")
    # y and z both have three marks; y came first.
    assert timeline.resources() == ["y", "z", "x"]
    assert timeline.resources("update") == ["y", "x", "z"]
    assert timeline.resources("fetched") == ["z"]


# -- plot_timeline --------------------------------------------------------------------


def _burst_timeline() -> Timeline:
    timeline = Timeline(clock=ticking(start=0.0, step=0.0))
    for at in (10.0, 10.01, 10.02, 10.03, 10.04):
        timeline.note("workflow/a", "update", at)
    timeline.note("workflow/a", "invalidation", 10.0)
    timeline.note("workflow/a", "fetched", 10.05)
    timeline.note("workflow/a", "invalidation", 10.25)
    timeline.note("workflow/a", "skipped_fresh", 10.25)
    for at in (10.5, 10.6, 10.7):
        timeline.note("job/b", "update", at)
    timeline.note("job/b", "invalidation", 10.5)
    timeline.note("job/b", "fetch_started", 10.5)  # not a default kind: not drawn
    timeline.note("jobs", "fetched", 10.6)  # no update: not a default row
    timeline.note("*", "resync", 11.0)
    return timeline


def test_plot_timeline_draws_one_marker_per_mark() -> None:
    fig = plot_timeline(_burst_timeline())
    updates = _line(fig, "timeline:update")
    assert len(_xs(updates)) == 8
    assert len(_xs(_line(fig, "timeline:invalidation"))) == 3
    assert len(_xs(_line(fig, "timeline:fetched"))) == 1
    assert len(_xs(_line(fig, "timeline:skipped_fresh"))) == 1
    assert not _has_gid(fig, "timeline:fetch_started")
    # Seconds since the first mark drawn.
    assert min(_xs(updates)) == pytest.approx(0.0)
    assert max(_xs(updates)) == pytest.approx(0.7)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["workflow/a (5 in)", "job/b (3 in)"]
    (resync,) = [line for line in ax.get_lines() if line.get_gid() == "timeline:resync"]
    assert _xs(resync)[0] == pytest.approx(1.0)
    # The first row's updates sit on row 0, the second's on row 1.
    rows = sorted({round(float(y)) for y in _ys(updates)})
    assert rows == [0, 1]


def test_plot_timeline_rows_can_be_chosen() -> None:
    timeline = _burst_timeline()
    fig = plot_timeline(timeline, resources=["jobs", "job/b"], kinds=("fetched", "update"))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["jobs", "job/b (3 in)"]
    assert len(_xs(_line(fig, "timeline:fetched"))) == 1
    assert len(_xs(_line(fig, "timeline:update"))) == 3
    top = plot_timeline(timeline.marks, top=1)
    assert [t.get_text() for t in top.axes[0].get_yticklabels()] == ["workflow/a (5 in)"]


def test_plot_timeline_of_nothing_says_so() -> None:
    fig = plot_timeline(Timeline())
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["nothing recorded"]
    assert not ax.get_lines()


def test_figures_render_headless_and_show_in_jupyter() -> None:
    fig = plot_timeline(_burst_timeline())
    assert _png(fig).startswith(PNG_SIGNATURE)
    # What IPython calls when no inline backend registered a printer for Figure.
    assert fig._repr_png_().startswith(PNG_SIGNATURE)  # type: ignore[attr-defined]


# -- plot_marbles ---------------------------------------------------------------------


def test_plot_marbles_draws_every_value_and_the_end() -> None:
    with marbles() as m:
        result = m.start(m.hot("-a-b-c-x-----|", a=a1, b=a2, c=a3, x=b1).pipe(
            throttle_per_resource(5)
        ))
        inputs = m.exp("-a-b-c-x-----|", a=a1, b=a2, c=a3, x=b1)
    fig = plot_marbles(inputs, result, names=("in", "out"))
    assert _offsets(_collection(fig, "marbles:in")) == [201.0, 203.0, 205.0, 207.0]
    # a1 at once, a3 when a's window closes at 206 (a2 dropped for it), b1 at once.
    assert _offsets(_collection(fig, "marbles:out")) == [201.0, 206.0, 207.0]
    assert _xs(_line(fig, "completed:in")) == [213.0]
    assert _xs(_line(fig, "completed:out")) == [213.0]
    (ax,) = fig.axes
    names = sorted(t.get_text() for t in ax.texts)
    assert names == sorted(["a1", "a2", "a3", "b1", "a1", "a3", "b1"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["in", "out"]
    assert _png(fig).startswith(PNG_SIGNATURE)


def test_plot_marbles_colours_by_resource() -> None:
    with marbles() as m:
        inputs = m.exp("-a-x-b-|", a=a1, x=b1, b=a2)
    fig = plot_marbles(inputs)
    faces = np.asarray(_collection(fig, "marbles:input").get_facecolor(), dtype=float)
    colours = [to_hex(tuple(rgba)) for rgba in faces.tolist()]
    assert colours[0] == colours[2]
    assert colours[0] != colours[1]


def test_plot_marbles_marks_an_error() -> None:
    with marbles() as m:
        inputs = m.exp("-a-#", a=a1)
    fig = plot_marbles(inputs)
    assert _xs(_line(fig, "error:input")) == [203.0]
    assert not _has_gid(fig, "completed:input")
    assert len(fig.axes[0].get_yticklabels()) == 1


def test_plot_marbles_needs_a_name_per_stream() -> None:
    with pytest.raises(ValueError, match="names"):
        plot_marbles([], [], names=("only one",))


def test_without_matplotlib_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if matplotlib were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"querysync\[plot\]"):
        plot_marbles([])
    with pytest.raises(ImportError, match=r"querysync\[plot\]"):
        plot_timeline(Timeline())
    # Recording needs no matplotlib.
    timeline = Timeline()
    timeline.note("workflow/a", "update")
    assert len(timeline) == 1


def test_plot_marbles_of_nothing_is_an_empty_line() -> None:
    fig = plot_marbles([])
    (ax,) = fig.axes
    assert isinstance(ax, Axes)
    assert _offsets(_collection(fig, "marbles:input")) == []
    assert not ax.texts
    assert _png(fig).startswith(PNG_SIGNATURE)
