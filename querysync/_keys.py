"""Query keys and the registry that maps a resource change to the keys it invalidates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._model import ResourceChangeUpdate

__all__ = [
    "NODETOOL_INTERNAL_TYPES",
    "KeyRegistry",
    "QueryKey",
    "SpecificKeys",
    "default_registry",
    "key_matches",
    "nodetool_registry",
]

JSONScalar = str | int | float | bool | None
QueryKey = tuple[JSONScalar, ...]
"""A query key: a tuple of JSON scalars, such as ``("workflows",)`` or ``("job", "j1")``."""

SpecificKeys = Callable[[ResourceChangeUpdate], Iterable[QueryKey]]

NODETOOL_INTERNAL_TYPES: frozenset[str] = frozenset(
    {
        "runevent",
        "runnodestate",
        "runlease",
        "runinboxmessage",
        "prediction",
        "oauthcredential",
        "triggerinput",
    }
)
"""Resource types the live NodeTool server emits for its own bookkeeping; no query shows them."""


def key_matches(prefix: QueryKey, key: QueryKey, *, exact: bool = False) -> bool:
    """True when ``key`` starts with ``prefix`` element by element (or equals it, if exact).

    ``("workflow", "w1")`` matches ``("workflow", "w1", "versions")`` but not
    ``("workflow", "w10")``: matching compares whole elements, never string prefixes.
    """
    if exact:
        return key == prefix
    return key[: len(prefix)] == prefix


def _as_key(key: str | Iterable[JSONScalar]) -> QueryKey:
    # A bare string is the common case ("workflows"); tuple("workflows") would
    # silently split it into letters, so it is wrapped instead.
    if isinstance(key, str):
        return (key,)
    out = tuple(key)
    if not out:
        raise ConfigurationError("a query key needs at least one element")
    for part in out:
        if part is not None and not isinstance(part, str | int | float | bool):
            raise TypeError(f"query key elements must be JSON scalars, not {type(part).__name__}")
    return out


@dataclass(frozen=True, slots=True)
class _Rule:
    general: tuple[QueryKey, ...]
    specific: SpecificKeys | None


class KeyRegistry:
    """Maps a resource type to the query keys an update of that type invalidates."""

    __slots__ = ("_ignored", "_rules")

    def __init__(self) -> None:
        self._rules: dict[str, _Rule] = {}
        self._ignored: set[str] = set()

    def register(
        self,
        resource_type: str,
        general: Iterable[str | Iterable[JSONScalar]],
        specific: SpecificKeys | None = None,
    ) -> None:
        """Set the rule for ``resource_type``, replacing any earlier one.

        ``general`` keys are invalidated by every update of the type; a bare string
        ``"my_resources"`` means ``("my_resources",)``. ``specific`` computes the keys
        that name one resource; it is only called when the update's id is not empty.
        """
        if not resource_type:
            raise ConfigurationError("resource_type must not be empty")
        if isinstance(general, str):
            general = [general]
        self._rules[resource_type] = _Rule(tuple(_as_key(k) for k in general), specific)
        self._ignored.discard(resource_type)

    def __repr__(self) -> str:
        types = ", ".join(sorted(self._rules))
        ignored = len(self._ignored)
        return f"<KeyRegistry rules for {len(self._rules)} types ({types}); {ignored} ignored>"

    def ignore(self, *resource_types: str) -> None:
        """Declare types that map to no key on purpose, so they are not reported as unknown."""
        for rt in resource_types:
            self._rules.pop(rt, None)
            self._ignored.add(rt)

    def knows(self, resource_type: str) -> bool:
        """True when the type has a rule or is ignored on purpose."""
        return resource_type in self._rules or resource_type in self._ignored

    def general_keys(self, resource_type: str) -> tuple[QueryKey, ...]:
        """The keys every update of ``resource_type`` invalidates (empty if unknown)."""
        rule = self._rules.get(resource_type)
        return rule.general if rule is not None else ()

    def is_ignored(self, resource_type: str) -> bool:
        """True when the type maps to nothing on purpose."""
        return resource_type in self._ignored

    @property
    def resource_types(self) -> frozenset[str]:
        """The types that have a rule (ignored ones excluded)."""
        return frozenset(self._rules)

    def keys_for(self, update: ResourceChangeUpdate) -> list[QueryKey]:
        """The general keys of the update's type, then its specific keys.

        An unknown or ignored type gives an empty list; an empty id gives general keys only.
        Duplicates are dropped, first occurrence kept. Whatever the ``specific`` rule
        raises propagates (``expand_keys`` catches it and keeps the general keys).
        """
        general, specific = self.split(update)
        return [*general, *specific]

    def split(
        self, update: ResourceChangeUpdate
    ) -> tuple[tuple[QueryKey, ...], tuple[QueryKey, ...]]:
        """``(general, specific)``: the type's fixed keys and the ones its rule computed."""
        rule = self._rules.get(update.resource_type)
        if rule is None:
            return (), ()
        if rule.specific is None or not update.resource.id:
            return rule.general, ()
        seen = set(rule.general)
        specific: list[QueryKey] = []
        produced = rule.specific(update)
        # A rule that returns one key instead of a list of keys would otherwise be read
        # as several one-element keys: ("job", "j1") -> ("job",), ("j1",).
        if isinstance(produced, tuple) and produced and not isinstance(produced[0], tuple | list):
            produced = [produced]
        for key in produced:
            k = _as_key(key)
            if k not in seen:
                seen.add(k)
                specific.append(k)
        return rule.general, tuple(specific)

    def copy(self) -> KeyRegistry:
        """An independent registry with the same rules."""
        new = KeyRegistry()
        new._rules = dict(self._rules)
        new._ignored = set(self._ignored)
        return new


def _by_id(*names: str) -> SpecificKeys:
    def specific(update: ResourceChangeUpdate) -> list[QueryKey]:
        rid = update.resource.id
        return [(name, rid) for name in names]

    specific.__qualname__ = f"by_id{names!r}"
    return specific


def default_registry() -> KeyRegistry:
    """The table of the NodeTool web client's ``resourceChangeHandler`` (the seed document)."""
    reg = KeyRegistry()
    reg.register("workflow", ["workflows", "templates"], _by_id("workflow", "workflow_versions"))
    reg.register("job", ["jobs"], _by_id("job"))
    reg.register("asset", ["assets"])
    reg.register("thread", ["threads"], _by_id("thread", "messages"))
    reg.register("collection", ["collections"])
    reg.register("workspace", ["workspaces"])
    reg.register("secret", ["secrets"])
    reg.register("model", ["models"])
    return reg


def _message_keys(update: ResourceChangeUpdate) -> list[QueryKey]:
    keys: list[QueryKey] = [("message", update.resource.id)]
    thread_id = (update.resource.model_extra or {}).get("thread_id")
    if isinstance(thread_id, str) and thread_id:
        keys.append(("messages", thread_id))
    return keys


def _workflow_version_keys(update: ResourceChangeUpdate) -> list[QueryKey]:
    workflow_id = (update.resource.model_extra or {}).get("workflow_id")
    if isinstance(workflow_id, str) and workflow_id:
        return [("workflow_versions", workflow_id)]
    return []


def nodetool_registry() -> KeyRegistry:
    """The default table plus what the live NodeTool server sends.

    Adds ``message`` (all message lists, the thread's list when the resource carries a
    ``thread_id``, and the message itself), ``workflowversion`` (the version lists),
    detail keys for assets and workspaces, and ignores the server's internal types
    (:data:`NODETOOL_INTERNAL_TYPES`) quietly.
    """
    reg = default_registry()
    reg.register("asset", ["assets"], _by_id("asset"))
    reg.register("workspace", ["workspaces"], _by_id("workspace"))
    reg.register("message", ["messages"], _message_keys)
    # The live server sends only id and etag, so without a workflow_id every version
    # list is suspect; ("workflow_versions",) is a prefix of all of them.
    reg.register("workflowversion", ["workflow_versions"], _workflow_version_keys)
    reg.ignore(*NODETOOL_INTERNAL_TYPES)
    return reg
