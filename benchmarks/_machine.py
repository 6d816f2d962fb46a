"""A description of the machine a run was measured on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from ._process import load_average

__all__ = ["describe_machine"]

_PACKAGES = (
    "querysync",
    "reactivex",
    "aiohttp",
    "pydantic",
    "pydantic-core",
    "msgpack",
    "diskcache",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine() -> list[str]:
    """Lines naming the CPU, cores, memory, OS, Python, package versions and the load now."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.1f} GiB RAM"
    except (ValueError, OSError):
        memory = "RAM unknown"
    one, five, fifteen = load_average()
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    return [
        f"CPU: {_cpu_model()}, {cores} cores ({usable} usable), {memory}",
        f"OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"Python: {platform.python_implementation()} {sys.version.split()[0]}",
        f"Packages: {versions}",
        f"Load average (1/5/15 min): {one:.2f} / {five:.2f} / {fifteen:.2f}",
    ]
