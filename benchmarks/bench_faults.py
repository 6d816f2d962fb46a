"""Fault-suite figures: frames fuzzed, restarts survived, kills survived, longest loop stall.

These are not timings against a baseline. They are what the fault tests
(``tests/test_faults_*.py``) did in this run: each test records its figures as pytest
properties, and this module runs the tests (as the suite does, with pytest) and reads the
properties back from a JUnit XML report. A figure's ``met?`` says whether the test that
produced it passed, that is whether every assertion around the figure held:

- frames fuzzed: bad frames (random bytes, truncated MessagePack, wrong shapes, huge
  strings, deep nesting, non-string ids, unknown events and types) sent among valid
  updates, in process and over a real WebSocket; none ended the stream, every valid
  update reached the cache and the cache agreed with the backend;
- restarts survived, reconnects and resyncs seen: the server killed and restarted mid-stream
  under a workload; every reconnect resynced and the final audit agreed;
- kills survived: SIGKILLs during heavy writes after which the cache opened with only
  whole entries and kept everything that had been flushed;
- longest loop stall: the longest lateness of a 10 ms ticker on the client's loop while
  fetches were slow and the disk locked (reported, not asserted; the assertion is that
  the connection never dropped and the loop ran while the disk was locked).

Run ``python -m benchmarks.bench_faults [--markdown]`` from the repository root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._figures import Figure, figure

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """What one test recorded, and whether it passed."""

    passed: bool
    properties: dict[str, float] = field(default_factory=dict)


def run_fault_tests(tests: Sequence[Path] | None = None) -> dict[str, Outcome]:
    """Run the fault tests under pytest; each test's outcome and properties, by test name."""
    paths = list(tests) if tests is not None else sorted(ROOT.glob("tests/test_faults_*.py"))
    with tempfile.TemporaryDirectory(prefix="querysync-faults-") as tmp:
        report = Path(tmp) / "faults.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            *map(str, paths),
            "-q",
            "-p",
            "no:cacheprovider",
            # Properties are written only in the legacy JUnit flavour.
            "-o",
            "junit_family=legacy",
            f"--junitxml={report}",
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if not report.exists():
            raise RuntimeError(f"the fault tests did not run:\n{done.stdout}\n{done.stderr}")
        if done.returncode != 0:
            print(done.stdout[-4000:], file=sys.stderr)
        return _read(report)


def _read(report: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = any(child.tag in ("failure", "error") for child in case)
        outcome = Outcome(passed=not failed)
        for prop in case.iter("property"):
            try:
                outcome.properties[prop.get("name", "")] = float(prop.get("value", "nan"))
            except ValueError:
                continue
        outcomes[case.get("name", "")] = outcome
    return outcomes


def _find(outcomes: dict[str, Outcome], name: str) -> tuple[float, bool]:
    """The value of property ``name`` and whether the test that recorded it passed."""
    for outcome in outcomes.values():
        if name in outcome.properties:
            return outcome.properties[name], outcome.passed
    return float("nan"), False


def run(small: bool = False) -> list[Figure]:
    """The fault figures of one run of the fault tests (``small`` changes nothing)."""
    outcomes = run_fault_tests()
    in_process, ok_in = _find(outcomes, "frames_fuzzed_in_process")
    over_ws, ok_ws = _find(outcomes, "frames_fuzzed_websocket")
    restarts, ok_restarts = _find(outcomes, "restarts_survived")
    reconnects, _ = _find(outcomes, "reconnects_seen")
    resyncs, _ = _find(outcomes, "resyncs_seen")
    kills, ok_kills = _find(outcomes, "kills_survived")
    checked, _ = _find(outcomes, "entries_checked_after_kills")
    stall, ok_stall = _find(outcomes, "longest_loop_stall_ms")
    ping_gap, _ = _find(outcomes, "longest_gap_between_pings_ms")
    return [
        figure(
            "faults: frames fuzzed (in process)",
            in_process,
            "frames",
            target="none ends the stream or loses an update",
            met=ok_in,
        ),
        figure(
            "faults: frames fuzzed (real WebSocket)",
            over_ws,
            "frames",
            target="none costs the connection or an update",
            met=ok_ws,
        ),
        figure(
            "faults: server restarts survived",
            restarts,
            "restarts",
            target="5 of 5, cache agrees after",
            met=ok_restarts and restarts >= 5,
        ),
        figure(
            "faults: reconnects / resyncs seen",
            resyncs,
            "resyncs",
            target=f"one per reconnect ({reconnects:.0f})",
            met=ok_restarts and resyncs == reconnects,
        ),
        figure(
            "faults: SIGKILLs survived",
            kills,
            "kills",
            target=f"10 of 10, {checked:.0f} entries checked whole",
            met=ok_kills and kills >= 10,
        ),
        figure(
            "faults: longest loop stall (slow fetch + locked disk)",
            stall,
            "ms",
            target=f"reported; no drop (longest ping gap {ping_gap:.0f} ms)",
            met=ok_stall,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the fault figures as a table; exit status 1 if a fault test failed."""
    from .run import format_markdown, format_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_faults")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--small", action="store_true", help="accepted; changes nothing")
    args = parser.parse_args(argv)
    figures = run(small=args.small)
    print(format_markdown(figures) if args.markdown else format_table(figures))
    return 0 if all(f["met"] for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
