"""Each benchmark runs at tiny sizes and reports figures of the right shape (never timings)."""

from __future__ import annotations

import importlib
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

# benchmarks/ is not installed. The checkout's root goes at the END of sys.path: first it
# would let the source folder querysync/ shadow the installed package. The benchmarks'
# spawned helper processes inherit this sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

KEYS = {"name", "value", "unit", "baseline", "ratio", "target", "met"}
# The cache benchmark belongs to the cache's own smoke test.
NAMES = ("throttle", "throughput", "latency", "coalescing", "refetch")


def _module(name: str) -> Any:
    # Imported by name, not with an import statement: benchmarks/ is found only through
    # the sys.path entry above, which a type checker does not see.
    return importlib.import_module(f"benchmarks.{name}")


def _run(name: str) -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = _module(f"bench_{name}").run(small=True)
    return figures


def _check(fig: dict[str, Any]) -> None:
    assert set(fig) == KEYS, fig
    assert isinstance(fig["name"], str)
    assert fig["name"]
    assert isinstance(fig["unit"], str)
    assert isinstance(fig["value"], float)
    assert math.isfinite(fig["value"])
    assert fig["value"] >= 0
    if fig["baseline"] is not None:
        assert isinstance(fig["baseline"], float)
        assert math.isfinite(fig["baseline"])
        assert fig["baseline"] >= 0
    if fig["ratio"] is not None:
        assert fig["baseline"]
        assert math.isclose(fig["ratio"], fig["value"] / fig["baseline"])
    assert fig["target"] is None or isinstance(fig["target"], str)
    assert fig["met"] is None or isinstance(fig["met"], bool)
    assert (fig["met"] is None) == (fig["target"] is None)


_TARGET = re.compile(r"^(ratio )?(<|<=|>|>=) .*?([0-9][0-9,]*(?:\.[0-9]+)?)(?: [^0-9]*)?$")


def _target_holds(fig: dict[str, Any]) -> bool | None:
    """Whether the figure meets a target of the form "< 20 MB", "ratio >= 0.8", "<= x = 5"."""
    match = _TARGET.match(fig["target"] or "")
    if match is None:
        return None
    subject = fig["ratio"] if match.group(1) else fig["value"]
    bound = float(match.group(3).replace(",", ""))
    compare = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}
    return bool(compare[match.group(2)](float(subject), bound))


@pytest.mark.parametrize("name", NAMES)
def test_small_run_reports_well_formed_figures(name: str) -> None:
    figures = _run(name)
    assert figures
    for fig in figures:
        _check(fig)
        if fig["unit"] in ("msg/s", "msg/cpu-s", "ms"):
            # A rate or a latency of zero would mean nothing was measured.
            assert fig["value"] > 0, fig
            assert fig["baseline"] is None or fig["baseline"] > 0, fig
        # "met?" must say what the numbers say (a unit slip once called 15 ms "< 5 ms").
        holds = _target_holds(fig)
        if holds is not None and "met" in fig:
            assert fig["met"] is holds or (holds and fig["met"] is False), fig
    names = [f["name"] for f in figures]
    assert len(set(names)) == len(names)
    assert all(n.startswith(name) for n in names)


def test_table_lists_every_figure_and_the_header() -> None:
    figure = _module("_figures").figure
    run = _module("run")
    COLUMNS, format_table = run.COLUMNS, run.format_table
    figures = [
        figure("alpha", 1234.5, "msg/s", baseline=1000.0, target="ratio >= 0.8", met=True),
        figure("beta", 0.004, "ms"),
    ]
    lines = format_table(figures).splitlines()
    assert lines[0].split() == [c.split()[0] for c in COLUMNS]
    assert lines[2].startswith("alpha")
    assert "1.23" in lines[2]
    assert lines[2].rstrip().endswith("yes")
    assert lines[3].startswith("beta")
    assert len(lines) == 4


def test_markdown_table_has_one_row_per_figure() -> None:
    figure = _module("_figures").figure
    run = _module("run")
    COLUMNS, format_markdown = run.COLUMNS, run.format_markdown
    figures = [figure("a | b", 2.0, "s", baseline=4.0), figure("c", 3.0, "s")]
    lines = format_markdown(figures).splitlines()
    assert len(lines) == 4
    assert all(line.count(" | ") == len(COLUMNS) - 1 for line in lines[2:])
    assert lines[2].startswith("| a \\| b | 2 | s | 4 | 0.5 |")


def test_unknown_benchmark_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    main = _module("run").main
    with pytest.raises(SystemExit) as exc:
        main(["--small", "nonsense"])
    assert exc.value.code == 2
    assert "nonsense" in capsys.readouterr().err


def test_throughput_diagnostics_name_every_stage() -> None:
    throughput = _module("bench_throughput")
    breakdown, profile = throughput.breakdown, throughput.profile
    lines = breakdown("json", count=300, tries=1).splitlines()
    costs = {}
    for line in lines[1:-1]:
        label, _, rest = line.strip().rpartition("  ")
        if rest.startswith(("(+", "(-")):
            label, _, rest = label.strip().rpartition("  ")
        costs[label.strip()] = float(rest)
    assert list(costs) == [
        "aiohttp receive loop alone",
        "hand-written loop",
        "websocket(silence_timeout=None)",
        "+ resource_changes",
        "+ throttle_per_resource(0.25)",
        "+ expand_keys",
        "+ apply(QueryCache)",
        "the pipeline as sync() builds it",
    ]
    assert all(cost > 0 for cost in costs.values())
    report = profile("msgpack", count=300, top=5)
    assert report.startswith("300 messages")
    assert "function calls" in report
    assert "querysync" in report
