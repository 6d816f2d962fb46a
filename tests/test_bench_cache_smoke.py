"""The cache benchmark runs and reports positive figures (speed itself is not asserted)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

# benchmarks/ is not an installed package (and the checkout is not on sys.path, since
# its querysync/ folder would shadow the installed package): load the module by path.
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cache.py"


def test_bench_cache_small_run_reports_positive_figures() -> None:
    spec = importlib.util.spec_from_file_location("bench_cache", _PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.run(small=True)
    assert [str(f["name"]).split(" ")[0] for f in figures] == [
        "invalidate_one_resource",
        "cold_start",
        "applied_invalidations_per_s",
        "open:",
        "index",
        "RSS",
        "RSS",
        "memory",
        "invalidate_all",
        "longest",
        "longest",
        "restart",
        "restart",
        "longest",
        "longest",
    ]
    for fig in figures:
        assert set(fig) == {"name", "value", "unit", "baseline", "ratio", "target", "met"}
        for field in ("value", "baseline", "ratio"):
            number = fig[field]
            assert isinstance(number, float)
            assert math.isfinite(number)
            # Memory past the tier's budget can be none at all; everything else is positive.
            assert number > 0 or (field != "baseline" and str(fig["name"]).startswith("RSS"))
        if fig["met"] is not None:
            assert fig["target"] is not None
        assert fig["target"] is None or isinstance(fig["target"], str)
