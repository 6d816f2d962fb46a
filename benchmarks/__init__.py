"""Benchmarks: querysync against a hand-written baseline, measured in the same run.

``python -m benchmarks`` (from the repository root) runs them all and prints one table;
``python -m benchmarks.bench_throughput`` (and so on) runs one. Each module has
``run(*, small: bool = False) -> list[dict[str, object]]``.
"""

from __future__ import annotations

import os
import sys

# ``python -m benchmarks`` puts the repository root first on sys.path, where the source
# folder querysync/ would shadow the installed package (whose operators, streams and
# sinks live in other folders and are only joined by the install). Moving the root to
# the end keeps ``benchmarks`` importable and makes ``querysync`` the installed one.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_entries = [p for p in sys.path if os.path.abspath(p or os.curdir) == _root]
if _entries and "querysync" not in sys.modules:
    for _entry in _entries:
        sys.path.remove(_entry)
    sys.path.append(_root)
