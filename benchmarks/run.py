"""Run every benchmark and print one table: ``python -m benchmarks [--small] [NAME ...]``."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._figures import Figure
from ._machine import describe_machine
from ._process import load_average

__all__ = ["BENCHMARKS", "format_markdown", "format_table", "main", "run_all"]

BENCHMARKS: tuple[str, ...] = (
    "throttle",
    "throughput",
    "latency",
    "coalescing",
    "refetch",
    "cache",
    "shared",
)
"""Names of the benchmark modules (``benchmarks.bench_<name>``), in the order they run."""
ON_REQUEST: tuple[str, ...] = ("faults",)
"""Modules run only when named: ``faults`` runs the fault tests themselves (minutes)."""

COLUMNS = ("name", "value", "unit", "baseline", "ratio", "target", "met?")


def _load(name: str) -> Callable[..., list[Figure]] | None:
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
    except ModuleNotFoundError as exc:
        # Only a missing benchmark module is skipped; a missing dependency inside one is
        # a real failure and must say so.
        if exc.name == f"benchmarks.bench_{name}":
            return None
        raise
    run: Callable[..., list[Figure]] = module.run
    return run


def run_all(names: Sequence[str] = BENCHMARKS, *, small: bool = False) -> list[Figure]:
    """Every figure of the named benchmarks, run one after the other; absent ones skipped."""
    figures: list[Figure] = []
    for name in names:
        run = _load(name)
        if run is None:
            print(f"[{name}] not present, skipped", file=sys.stderr, flush=True)
            continue
        began = time.perf_counter()
        print(f"[{name}] running (load {load_average()[0]:.2f})...", file=sys.stderr, flush=True)
        figures.extend(run(small=small))
        took = time.perf_counter() - began
        print(f"[{name}] done in {took:.1f} s", file=sys.stderr, flush=True)
    return figures


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 0.01):
            return f"{v:.3g}"
        if abs(v) >= 1000 or v.is_integer():
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(value)


def _cells(figures: Sequence[Figure]) -> list[list[str]]:
    return [
        [
            str(f["name"]),
            _number(f["value"]),
            str(f.get("unit", "")),
            _number(f.get("baseline")),
            _number(f.get("ratio")),
            str(f["target"]) if f.get("target") is not None else "-",
            _number(f.get("met")),
        ]
        for f in figures
    ]


def format_table(figures: Sequence[Figure]) -> str:
    """The figures as a plain-text table with the columns of :data:`COLUMNS`."""
    rows = _cells(figures)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    numeric = {1, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def format_markdown(figures: Sequence[Figure]) -> str:
    """The figures as a Markdown table (for ``benchmarks/RESULTS.md``)."""
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _cells(figures))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks named in ``argv`` (all by default), print the table; exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: {', '.join(BENCHMARKS)}; also: {', '.join(ON_REQUEST)})",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS + ON_REQUEST]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    names = args.names or list(BENCHMARKS)
    machine = describe_machine()
    figures = run_all(names, small=args.small)
    print("\n".join(machine))
    print(f"Load average after the run: {'/'.join(f'{x:.2f}' for x in load_average())}")
    print("Ratios are querysync / baseline, both measured in this run.")
    print()
    print(format_markdown(figures) if args.markdown else format_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
