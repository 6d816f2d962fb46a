"""Public classes report the module they are imported from, not the private one they live in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["claim"]


def claim(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``module`` on the classes among ``names`` defined in its privates.

    ``repr()``, ``help()`` and tracebacks then show ``querysync.sinks.QueryCache``
    instead of ``querysync.sinks._cache.QueryCache``; pickling still finds each class,
    since ``module`` exports it under the same name.
    """
    for name in names:
        value = namespace.get(name)
        if (
            isinstance(value, type)
            and value.__name__ == name
            and value.__module__.startswith(f"{module}._")
        ):
            value.__module__ = module
