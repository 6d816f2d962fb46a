"""Pictures of what querysync does: a timeline of updates and refetches, and marble diagrams.

    >>> from querysync.plot import plot_marbles, plot_timeline, record_timeline
    >>> timeline = record_timeline(running.source, passed=running.pipeline.observable,
    ...                            cache=running.cache)                  # doctest: +SKIP
    >>> plot_timeline(timeline)                                          # doctest: +SKIP

Recording (:class:`Timeline`) needs nothing beyond querysync; drawing needs matplotlib,
the ``plot`` extra (``pip install 'querysync[plot]'``), imported only when a picture is
drawn. Figures are built without pyplot: nothing is kept in pyplot's global list of
figures and no GUI backend is touched, so they work headless (no display, Agg). In
Jupyter a returned figure shows as the cell's result (as a PNG, through the inline
backend's printer when ``%matplotlib inline`` has set it up, else through the figure's
own ``_repr_png_``).
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reactivex import Observable, abc
from reactivex.notification import OnCompleted, OnError, OnNext

from ._exceptions import ConfigurationError
from ._keys import QueryKey
from ._model import ResourceChangeUpdate
from ._signals import Invalidation, Resync

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from reactivex.testing.recorded import Recorded

    from .sinks import QueryCache

__all__ = [
    "DEFAULT_KINDS",
    "Mark",
    "Timeline",
    "key_label",
    "marble_label",
    "plot_marbles",
    "plot_timeline",
    "record_timeline",
    "resource_label",
]

log = logging.getLogger("querysync.plot")

DEFAULT_KINDS: tuple[str, ...] = ("update", "invalidation", "fetched", "skipped_fresh", "removed")
"""The kinds :func:`plot_timeline` draws by default, top to bottom within a row."""

# kind -> (legend text, marker, colour, marker size). Other kinds get a generic style.
_STYLE: dict[str, tuple[str, str, str, float]] = {
    "update": ("update received", "|", "#7f7f7f", 9.0),
    "invalidation": ("passed the throttle", "o", "#1f77b4", 6.0),
    "fetched": ("refetched", "v", "#d62728", 7.0),
    "fetch_started": ("fetch started", "1", "#ff7f0e", 8.0),
    "skipped_fresh": ("already fresh, not refetched", "x", "#2ca02c", 7.0),
    "invalidated": ("entry marked stale", ".", "#9467bd", 6.0),
    "removed": ("removed", "X", "#000000", 7.0),
    "fetch_failed": ("fetch failed", "*", "#e377c2", 9.0),
}
_OTHER_MARKERS = ("s", "D", "^", "P", "h")


def _require_figure() -> type[Figure]:
    try:
        from matplotlib.figure import Figure as Base
    except ImportError as exc:
        raise ImportError(
            "querysync.plot needs matplotlib to draw: pip install 'querysync[plot]'"
        ) from exc
    return _showable(Base)


@functools.cache
def _showable(base: type[Figure]) -> type[Figure]:
    class Figure(base):  # type: ignore[valid-type,misc]
        """A matplotlib Figure that Jupyter shows as a PNG even without ``%matplotlib inline``.

        When the inline backend is set up, IPython's printer registered for Figure wins
        over ``_repr_png_``, so its settings apply; this is only the fallback.
        """

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", bbox_inches="tight")
            return buffer.getvalue()

    return Figure


# -- labels ---------------------------------------------------------------------------


def resource_label(resource_type: str, resource_id: str) -> str:
    """``"workflow/w1"``: the row name of one resource, the same as its detail key's."""
    return f"{resource_type}/{resource_id}" if resource_id else resource_type


def key_label(key: QueryKey) -> str:
    """``"workflow/w1"`` for the key ``("workflow", "w1")``; ``"*"`` for the empty key."""
    return "/".join(str(part) for part in key) if key else "*"


def marble_label(value: object) -> str:
    """A short name for a marble: id and etag of an update (``"a1"``), ``"R"`` for a resync."""
    if isinstance(value, Invalidation):
        value = value.update
    if isinstance(value, ResourceChangeUpdate):
        return f"{value.resource.id}{value.resource.etag or ''}"[:6]
    if isinstance(value, Resync):
        return "R"
    return str(value)[:6]


# -- recording ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """One thing that happened to one resource or query key.

    ``at`` is the timeline's clock (epoch seconds by default), ``resource`` a row name
    (:func:`resource_label` or :func:`key_label`; ``"*"`` for everything, as a resync)
    and ``kind`` what happened: ``"update"`` (a change came in), ``"invalidation"`` (it
    passed the throttle), ``"resync"``, or a :data:`querysync.sinks.CacheEventKind`.
    """

    at: float
    resource: str
    kind: str


class Timeline:
    """The marks noted from streams of updates and a cache's events, oldest first.

    ``clock`` gives the time of marks from streams (default ``time.time``, the clock
    of :class:`querysync.sinks.CacheEvent`, so both line up); cache events keep their
    own ``at``. At most ``limit`` marks are kept (default 100 000); older ones are
    dropped and counted in ``counts["dropped"]``. ``counts`` also tallies marks per
    kind, ``ignored`` items (other messages) and ``stream_errors``.
    Stop recording with :meth:`dispose` (or ``with``).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, limit: int = 100_000) -> None:
        if limit < 1:
            raise ConfigurationError("limit must be at least 1")
        self._clock = clock
        self._marks: deque[Mark] = deque(maxlen=limit)
        self._subscriptions: list[abc.DisposableBase] = []
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._marks)

    def __repr__(self) -> str:
        return f"<Timeline marks={len(self._marks)} {dict(self.counts)}>"

    @property
    def marks(self) -> list[Mark]:
        """A copy of the marks, oldest first."""
        return list(self._marks)

    def note(self, resource: str, kind: str, at: float | None = None) -> None:
        """Add one mark, at ``at`` or now."""
        if len(self._marks) == self._marks.maxlen:
            self.counts["dropped"] += 1
        self._marks.append(Mark(self._clock() if at is None else at, resource, kind))
        self.counts[kind] += 1

    def observe(self, stream: Observable[Any], *, kind: str | None = None) -> abc.DisposableBase:
        """Note each item of ``stream`` from now on; the subscription (also kept for dispose).

        Understood items: a :class:`querysync.ResourceChangeUpdate` or a decoded
        ``resource_change`` message dict (kind ``"update"``), a
        :class:`querysync.Invalidation` (``"invalidation"``), a :class:`querysync.Resync`
        (``"resync"``, row ``"*"``) and a :class:`querysync.sinks.CacheEvent` (its own
        kind and time). ``kind`` renames the marks of changes and invalidations. Other
        items are counted as ``ignored``; the stream's end or error ends only this
        subscription.
        """

        def on_next(item: Any) -> None:
            # A subscriber that raises would reach the publisher (a source, the cache):
            # a recorder must never cost the pipeline anything.
            try:
                self._note_item(item, kind)
            except Exception:
                self.counts["ignored"] += 1
                log.debug("timeline: could not note %r", item, exc_info=True)

        def on_error(error: Exception) -> None:
            self.counts["stream_errors"] += 1
            log.info("timeline: a recorded stream ended with %s", error)

        subscription = stream.subscribe(on_next, on_error)
        self._subscriptions.append(subscription)
        return subscription

    def observe_cache(self, cache: QueryCache) -> abc.DisposableBase:
        """Note every event of ``cache`` from now on (see :meth:`observe`)."""
        return self.observe(cache.events())

    def dispose(self) -> None:
        """Stop every subscription; the marks stay."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.dispose()

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def resources(self, kind: str | None = None) -> list[str]:
        """Row names, most marks (of ``kind``, if given) first, ties in order of appearance."""
        counts: Counter[str] = Counter(
            m.resource for m in self._marks if kind is None or m.kind == kind
        )
        return [name for name, _ in counts.most_common()]

    def _note_item(self, item: Any, kind: str | None) -> None:
        # Imported here: querysync.sinks imports the operators, which a plain
        # ``import querysync.plot`` need not pay for.
        from .sinks import CacheEvent

        if isinstance(item, CacheEvent):
            self.note(key_label(item.key), item.kind, item.at)
        elif isinstance(item, ResourceChangeUpdate):
            self.note(resource_label(*item.resource_key), kind or "update")
        elif isinstance(item, Invalidation):
            self.note(resource_label(*item.update.resource_key), kind or "invalidation")
        elif isinstance(item, Resync):
            self.note("*", "resync")
        elif isinstance(item, Mapping) and item.get("type") == "resource_change":
            rtype, resource = item.get("resource_type"), item.get("resource")
            rid = resource.get("id", "") if isinstance(resource, Mapping) else None
            if isinstance(rtype, str) and rtype and isinstance(rid, str):
                self.note(resource_label(rtype, rid), kind or "update")
            else:
                self.counts["ignored"] += 1
        else:
            self.counts["ignored"] += 1

    def _repr_html_(self) -> str:
        from .display import html_table

        kinds = [k for k in DEFAULT_KINDS if self.counts[k]]
        per: dict[str, Counter[str]] = {}
        for mark in self._marks:
            if mark.kind in kinds:
                per.setdefault(mark.resource, Counter())[mark.kind] += 1
        names = sorted(per, key=lambda name: -sum(per[name].values()))[:20]
        rows = [[name, *(str(per[name][k]) for k in kinds)] for name in names]
        caption = f"timeline: {len(self._marks)} marks, {len(per)} rows"
        return html_table(["row", *(_STYLE[k][0] for k in kinds)], rows, caption=caption)


def record_timeline(
    updates: Observable[Any] | None = None,
    *,
    passed: Observable[Any] | None = None,
    cache: QueryCache | None = None,
    clock: Callable[[], float] = time.time,
    limit: int = 100_000,
) -> Timeline:
    """A :class:`Timeline` recording from now on what comes in and what goes out.

    ``updates``: what comes in (a source's messages or updates; marks ``"update"``).
    ``passed``: what the throttle let through (a pipeline's invalidations or the
    throttle's updates; marks ``"invalidation"``). ``cache``: its events (``fetched``,
    ``skipped_fresh``, ``removed``...). For a running :func:`querysync.sync`:
    ``record_timeline(s.source, passed=s.pipeline.observable, cache=s.cache)``.
    """
    timeline = Timeline(clock=clock, limit=limit)
    if updates is not None:
        timeline.observe(updates)
    if passed is not None:
        timeline.observe(passed, kind="invalidation")
    if cache is not None:
        timeline.observe_cache(cache)
    return timeline


# -- drawing --------------------------------------------------------------------------


def _style(kind: str, index: int) -> tuple[str, str, str | None, float]:
    if kind in _STYLE:
        return _STYLE[kind]
    return kind, _OTHER_MARKERS[index % len(_OTHER_MARKERS)], None, 6.0


def plot_timeline(
    timeline: Timeline | Iterable[Mark],
    *,
    resources: Sequence[str] | None = None,
    top: int = 6,
    kinds: Sequence[str] = DEFAULT_KINDS,
    title: str | None = "updates in, refetches out",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A matplotlib Figure: one row per resource, one marker per mark, time across.

    Within a row each kind has its own height and marker, so a burst of updates (grey
    ticks) sits above the one leading and one trailing update that passed the throttle
    (blue) and the refetches they caused (red). ``resources`` picks the rows (names as
    :func:`resource_label`, e.g. ``"workflow/w1"``, or :func:`key_label` for other keys
    such as ``"workflows"``); by default the ``top`` rows with the most updates (or
    the most marks, when no update was recorded). Resyncs are dashed vertical lines.
    Time is in seconds since the first mark drawn. Each kind is one ``Line2D`` whose
    ``gid`` is ``"timeline:<kind>"``.
    """
    figure_cls = _require_figure()
    marks = timeline.marks if isinstance(timeline, Timeline) else list(timeline)
    names = _busiest(marks, top) if resources is None else list(resources)
    rows = {name: i for i, name in enumerate(names)}
    shown = [m for m in marks if m.resource in rows and m.kind in kinds]
    resyncs = [m for m in marks if m.kind == "resync"]
    height = figsize or (9.0, 1.2 + 0.5 * max(len(names), 1))
    fig = figure_cls(figsize=height, layout="constrained")
    ax = fig.add_subplot()
    if title:
        ax.set_title(title)
    if not shown:
        ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return fig
    t0 = min(m.at for m in (*shown, *resyncs))
    spread = 0.6 / max(len(kinds) - 1, 1)
    for index, kind in enumerate(kinds):
        mine = [m for m in shown if m.kind == kind]
        if not mine:
            continue
        text, marker, colour, size = _style(kind, index)
        # Kinds listed first sit highest in the row: the cause above its effects.
        offset = 0.3 - index * spread
        ax.plot(
            [m.at - t0 for m in mine],
            [rows[m.resource] - offset for m in mine],
            linestyle="none",
            marker=marker,
            color=colour,
            markersize=size,
            label=f"{text} ({len(mine)})",
            gid=f"timeline:{kind}",
        )
    for mark in resyncs:
        ax.axvline(
            mark.at - t0, color="#8c564b", linestyle="--", linewidth=1, gid="timeline:resync"
        )
    received: Counter[str] = Counter(m.resource for m in shown if m.kind == "update")
    ax.set_yticks(
        range(len(names)),
        [f"{name} ({received[name]} in)" if received[name] else name for name in names],
    )
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return fig


def _busiest(marks: list[Mark], top: int) -> list[str]:
    updates: Counter[str] = Counter(m.resource for m in marks if m.kind == "update")
    counted = updates or Counter(m.resource for m in marks if m.resource != "*")
    return [name for name, _ in counted.most_common(top)]


def plot_marbles(
    inputs: Sequence[Recorded[Any]],
    outputs: Sequence[Recorded[Any]] | None = None,
    *,
    names: Sequence[str] = ("input", "output"),
    label: Callable[[Any], str] = marble_label,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A matplotlib Figure: a marble diagram of recorded messages, input above output.

    ``inputs`` and ``outputs`` are lists of ``reactivex.testing.Recorded`` (what
    :meth:`querysync.testing.MarbleContext.start` returns; ``m.exp("-a-b-|", ...)``
    gives the records of an input marble string). Each value is a circle named by
    ``label`` (default :func:`marble_label`: ``"a1"`` for resource ``a`` at etag
    ``1``), coloured by resource, so coalescing shows as circles that vanish on the way
    down; a completion is a vertical bar, an error a red cross. Time is virtual
    (subscription at 200). Artists carry ``gid`` ``"marbles:<name>"`` (the circles),
    ``"completed:<name>"`` and ``"error:<name>"``.
    """
    figure_cls = _require_figure()
    streams = [list(inputs)] + ([list(outputs)] if outputs is not None else [])
    if len(names) < len(streams):
        raise ConfigurationError(f"names needs {len(streams)} entries, got {len(names)}")
    fig = figure_cls(figsize=figsize or (9.0, 0.8 + 1.0 * len(streams)), layout="constrained")
    ax = fig.add_subplot()
    if title:
        ax.set_title(title)
    times = [r.time for stream in streams for r in stream]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    pad = max((end - start) * 0.05, 1.0)
    colours = _Colours()
    # As big as fits one marble per time unit: neighbours one unit apart just touch.
    width_pt = fig.get_figwidth() * 72 * 0.75
    diameter = max(8.0, min(22.0, 0.9 * width_pt / (end - start + 2 * pad)))
    for row, (name, stream) in enumerate(zip(names, streams, strict=False)):
        span = (start - pad, end + pad)
        _draw_marble_row(ax, row, name, stream, span, label, colours, diameter**2)
    ax.set_yticks(range(len(streams)), list(names[: len(streams)]))
    ax.set_ylim(len(streams) - 0.5, -0.5)
    ax.set_xlim(start - pad, end + pad)
    ax.set_xlabel("virtual time")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


class _Colours:
    """One colour per group (a resource), the same in every row."""

    def __init__(self) -> None:
        from matplotlib import colormaps

        self._map = colormaps["tab10"]
        self._seen: dict[object, int] = {}

    def __call__(self, group: object) -> tuple[float, float, float, float]:
        index = self._seen.setdefault(group, len(self._seen))
        colour: tuple[float, float, float, float] = self._map(index % 10)
        return colour


def _group(value: object) -> object:
    if isinstance(value, Invalidation):
        value = value.update
    if isinstance(value, ResourceChangeUpdate):
        return value.resource_key
    return marble_label(value)


def _draw_marble_row(
    ax: Axes,
    row: int,
    name: str,
    stream: list[Recorded[Any]],
    span: tuple[float, float],
    label: Callable[[Any], str],
    colours: _Colours,
    area: float,
) -> None:
    ax.plot(span, (row, row), color="#555555", linewidth=1, zorder=1)
    values = [(r.time, r.value.value) for r in stream if isinstance(r.value, OnNext)]
    xs = [t for t, _ in values]
    ax.scatter(
        xs,
        [row] * len(xs),
        s=area,
        c=[colours(_group(v)) for _, v in values] if values else None,
        edgecolors="#333333",
        zorder=2,
        gid=f"marbles:{name}",
    )
    for t, value in values:
        ax.annotate(
            label(value), (t, row), ha="center", va="center", fontsize=8, zorder=3,
            color="white", fontweight="bold",
        )
    ends = [r.time for r in stream if isinstance(r.value, OnCompleted)]
    if ends:
        ax.plot(ends, [row] * len(ends), linestyle="none", marker="|", markersize=24,
                markeredgewidth=2, color="#333333", gid=f"completed:{name}")
    errors = [r.time for r in stream if isinstance(r.value, OnError)]
    if errors:
        ax.plot(errors, [row] * len(errors), linestyle="none", marker="X", markersize=14,
                color="#d62728", gid=f"error:{name}")
