"""Benchmarks: querysync against a hand-written baseline, measured in the same run.

``python -m benchmarks`` (from the repository root) runs them all and prints one table;
``python -m benchmarks.bench_throughput`` (and so on) runs one. Each module has
``run(*, small: bool = False) -> list[dict[str, object]]``.
"""

from __future__ import annotations
