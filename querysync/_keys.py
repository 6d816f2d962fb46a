"""Query keys and the registry that maps a resource change to the keys it invalidates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._model import ResourceChangeUpdate

__all__ = [
    "NODETOOL_INTERNAL_TYPES",
    "PARENTS",
    "REFETCH_TABLE",
    "KeyRegistry",
    "Parent",
    "QueryKey",
    "RefetchRow",
    "SpecificKeys",
    "default_registry",
    "key_matches",
    "mirrored_by_table",
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


_ALL_EVENTS: frozenset[str] = frozenset({"created", "updated", "deleted"})


@dataclass(frozen=True, slots=True)
class RefetchRow:
    """One row of the refetch table: a resource type, one key its changes reach, and why.

    ``key`` is a template: ``"{id}"`` stands for the resource's id, ``"{thread_id}"`` or
    ``"{workflow_id}"`` for its parent's (from the frame, else resolved: see
    :data:`PARENTS`). ``events`` are the events that reach the key (empty: none, a row
    that only says why the key is left alone). A key naming ``{id}`` is removed on
    ``deleted``; every other reached key is invalidated, and refetched as the mode says.
    ``mirrored``: mirror mode also fetches the key once when a change of the resource
    finds it missing (and, after a resync, for every listed resource); from then on
    only ``events`` refetch it.
    """

    resource_type: str
    key: tuple[str, ...]
    events: frozenset[str]
    why: str
    mirrored: bool = False


def _row(
    resource_type: str, key: tuple[str, ...], events: str, why: str, *, mirrored: bool = False
) -> RefetchRow:
    chosen = _ALL_EVENTS if events == "all" else frozenset(events.split())
    return RefetchRow(resource_type, key, chosen, why, mirrored)


REFETCH_TABLE: tuple[RefetchRow, ...] = (
    _row("workflow", ("workflows",), "all", "the list shows every workflow"),
    _row(
        "workflow", ("workflow", "{id}"), "all", "its detail (removed when deleted)", mirrored=True
    ),
    _row(
        "workflow",
        ("workflow_versions", "{id}"),
        "deleted",
        "removed with the workflow. An update does not change the versions: a new "
        "version sends its own workflowversion frame. Mirror mode fetches the list once",
        mirrored=True,
    ),
    _row(
        "workflow",
        ("templates",),
        "",
        "the packages' example workflows: no write of a user's workflow changes them "
        "(the seed table, default_registry(), still marks them)",
    ),
    _row(
        "workflowversion",
        ("workflow_versions", "{workflow_id}"),
        "all",
        "its workflow's version list; the live frame has no workflow_id: found in the "
        "cached version lists, else every cached version list is reached",
    ),
    _row("job", ("jobs",), "all", "the list shows every job (jobs only send updated)"),
    _row("job", ("job", "{id}"), "all", "its detail", mirrored=True),
    _row("asset", ("assets",), "all", "the list shows the asset"),
    _row("asset", ("asset", "{id}"), "all", "its detail", mirrored=True),
    _row("thread", ("threads",), "all", "the list shows every thread"),
    _row("thread", ("thread", "{id}"), "all", "its detail", mirrored=True),
    _row(
        "thread",
        ("messages", "{id}"),
        "deleted",
        "removed with the thread (the server would answer 200 and an empty list); a "
        "thread's own change does not change its messages, which send their own frames. "
        "Mirror mode fetches the list once",
        mirrored=True,
    ),
    _row("message", ("message", "{id}"), "all", "its detail", mirrored=True),
    _row(
        "message",
        ("messages", "{thread_id}"),
        "all",
        "its thread's list and no other; the live frame has no thread_id: found in the "
        "cache (the message's detail, the message lists' items) or by GET /api/messages/{id}",
    ),
    _row("workspace", ("workspaces",), "all", "the list shows the workspace"),
    _row("workspace", ("workspace", "{id}"), "all", "its detail", mirrored=True),
    _row("secret", ("secrets",), "all", "the list shows the secret"),
    _row("collection", ("collections",), "all", "the list shows the collection"),
    _row("model", ("models",), "all", "the list shows the model"),
)
"""Which keys each live event type reaches, and why: what :func:`nodetool_registry` reads."""


@dataclass(frozen=True, slots=True)
class Parent:
    """A resource type whose frames lack the id of the resource that holds it."""

    field: str
    # The key name of the parent's list of these resources ("messages").
    list_name: str
    # The key name of the resource's own detail, whose body holds ``field`` (or None).
    detail: str | None


# The frames of these types name no parent (shared/nodetool-protocol.md); each row's
# field is the placeholder its REFETCH_TABLE row uses ("{thread_id}").
PARENTS: dict[str, Parent] = {
    "message": Parent("thread_id", "messages", detail="message"),
    # No GET serves one version: only the cached version lists can tell its workflow.
    "workflowversion": Parent("workflow_id", "workflow_versions", detail=None),
}
"""Type -> how its parent is named: ``{"message": Parent("thread_id", "messages", "message")}``."""


def _named_parent(update: ResourceChangeUpdate, field: str) -> str | None:
    value = (update.resource.model_extra or {}).get(field)
    return value if isinstance(value, str) and value else None


def _table_rule(rows: tuple[RefetchRow, ...]) -> tuple[tuple[QueryKey, ...], SpecificKeys]:
    general = tuple(r.key for r in rows if r.events == _ALL_EVENTS and len(r.key) == 1)

    def specific(update: ResourceChangeUpdate) -> list[QueryKey]:
        keys: list[QueryKey] = []
        for row in rows:
            if len(row.key) == 1 or update.event not in row.events:
                continue
            slot = row.key[1]
            if slot == "{id}":
                keys.append((row.key[0], update.resource.id))
                continue
            # Only a frame that names the parent gives its key here: finding one the
            # frame lacks needs the cache (ParentResolver, which Sync runs).
            parent = _named_parent(update, slot[1:-1])
            if parent is not None:
                keys.append((row.key[0], parent))
        return keys

    specific.__qualname__ = f"refetch_table[{rows[0].resource_type!r}]"
    return general, specific


def mirrored_by_table(resource_type: str, resource_id: str) -> tuple[QueryKey, ...]:
    """The keys of one resource that mirror mode holds, from :data:`REFETCH_TABLE`."""
    if not resource_id:
        return ()
    return tuple(
        (row.key[0], resource_id)
        for row in REFETCH_TABLE
        if row.mirrored and row.resource_type == resource_type and row.key[1:] == ("{id}",)
    )


def nodetool_registry() -> KeyRegistry:
    """The keys the live NodeTool server's changes reach, from :data:`REFETCH_TABLE`.

    Unlike :func:`default_registry` (the seed table, unchanged), it follows what the
    live server does: templates are left alone on a workflow change, a workflow's
    versions and a thread's messages are reached by their own frames (and removed with
    their parent), and the server's internal types are ignored quietly
    (:data:`NODETOOL_INTERNAL_TYPES`). A frame that lacks its parent's id (the live
    message and workflowversion frames) reaches no parent list here: :func:`querysync.sync`
    finds the parent (see :data:`PARENTS`) and reaches that one list.
    """
    reg = KeyRegistry()
    for resource_type in dict.fromkeys(r.resource_type for r in REFETCH_TABLE):
        rows = tuple(r for r in REFETCH_TABLE if r.resource_type == resource_type)
        general, specific = _table_rule(rows)
        reg.register(resource_type, general, specific)
    reg.ignore(*NODETOOL_INTERNAL_TYPES)
    return reg
