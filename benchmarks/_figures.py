"""The shape of one benchmark figure, and the arithmetic every benchmark shares."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Figure", "figure", "percentile"]

Figure = dict[str, object]
"""One row of the table: name, value, unit, baseline, ratio, target, met."""


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    target: str | None = None,
    met: bool | None = None,
) -> Figure:
    """A table row; ``ratio`` is ``value / baseline`` when there is a non-zero baseline.

    The ratio always divides querysync's figure by the baseline's, whichever direction is
    better; ``target`` says which (``"ratio >= 0.8"``, ``"< 20 MB"``).
    """
    ratio = value / baseline if baseline else None
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "baseline": None if baseline is None else float(baseline),
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
