"""Query keys, the key registry and Invalidation's split into general and specific keys.

Expected keys come from the table of /work/shared/SEED.md ("Supported Resource Types")
and from /work/shared/nodetool-protocol.md, not from the registry's code.
"""

from __future__ import annotations

from typing import Any

import pytest

from querysync import (
    NODETOOL_INTERNAL_TYPES,
    Invalidation,
    KeyRegistry,
    QueryKey,
    ResourceChangeUpdate,
    default_registry,
    key_matches,
    nodetool_registry,
)
from querysync.testing import change

# The seed table, row by row: resource type -> (invalidated query keys, additional
# queries with {id}). "workflow-{id}" in the seed is the key ["workflow", id].
SEED_TABLE: dict[str, tuple[list[str], list[str]]] = {
    "workflow": (["workflows", "templates"], ["workflow", "workflow_versions"]),
    "job": (["jobs"], ["job"]),
    "asset": (["assets"], []),
    "thread": (["threads"], ["thread", "messages"]),
    "collection": (["collections"], []),
    "workspace": (["workspaces"], []),
    "secret": (["secrets"], []),
    "model": (["models"], []),
}

# What the live server sends that the seed does not map (nodetool-protocol.md).
LIVE_INTERNAL_TYPES = {
    "runevent",
    "runnodestate",
    "runlease",
    "runinboxmessage",
    "prediction",
    "oauthcredential",
    "triggerinput",
}


@pytest.mark.parametrize("resource_type", sorted(SEED_TABLE))
def test_default_registry_follows_the_seed_table(resource_type: str) -> None:
    general, specific = SEED_TABLE[resource_type]
    expected: list[QueryKey] = [(name,) for name in general]
    expected += [(name, "id-42") for name in specific]
    update = change("updated", resource_type, "id-42", etag="e")
    assert default_registry().keys_for(update) == expected


@pytest.mark.parametrize("resource_type", sorted(SEED_TABLE))
def test_empty_id_gives_general_keys_only(resource_type: str) -> None:
    general, _ = SEED_TABLE[resource_type]
    update = change("deleted", resource_type, "")
    assert default_registry().keys_for(update) == [(name,) for name in general]


def test_default_registry_knows_exactly_the_seed_types() -> None:
    assert default_registry().resource_types == frozenset(SEED_TABLE)


@pytest.mark.parametrize("event", ["created", "updated", "deleted"])
def test_keys_do_not_depend_on_the_event(event: Any) -> None:
    assert default_registry().keys_for(change(event, "job", "j1")) == [("jobs",), ("job", "j1")]


@pytest.mark.parametrize("resource_type", ["unknown", "Workflow", "workflows", "runevent"])
def test_unknown_type_gives_no_keys(resource_type: str) -> None:
    assert default_registry().keys_for(change("updated", resource_type, "x")) == []


def test_register_accepts_bare_strings_and_tuples() -> None:
    reg = KeyRegistry()
    reg.register("my_resource", ["my_resources", ("my_resources", "recent"), ("page", 1, True)])
    assert reg.keys_for(change("updated", "my_resource", "r1")) == [
        ("my_resources",),
        ("my_resources", "recent"),
        ("page", 1, True),
    ]


def test_register_with_one_bare_string_is_one_key_not_its_letters() -> None:
    reg = KeyRegistry()
    reg.register("my_resource", "my_resources")
    assert reg.keys_for(change("updated", "my_resource", "r1")) == [("my_resources",)]


def test_register_again_replaces_the_rule() -> None:
    reg = default_registry()
    reg.register("workflow", ["only_this"])
    assert reg.keys_for(change("updated", "workflow", "w1")) == [("only_this",)]
    # A fresh default registry is not affected.
    assert default_registry().keys_for(change("updated", "workflow", "w1"))[0] == ("workflows",)


def test_register_adds_a_new_type_like_the_seed_recipe() -> None:
    # SEED.md "Adding New Resource Types": my_resource -> ["my_resources"], plus
    # ["my_resource", id] when the update carries an id.
    reg = default_registry()
    reg.register("my_resource", ["my_resources"], lambda u: [("my_resource", u.resource.id)])
    assert reg.keys_for(change("created", "my_resource", "m1")) == [
        ("my_resources",),
        ("my_resource", "m1"),
    ]
    assert reg.keys_for(change("created", "my_resource")) == [("my_resources",)]


def test_specific_is_called_only_when_the_id_is_not_empty() -> None:
    calls: list[ResourceChangeUpdate] = []

    def specific(update: ResourceChangeUpdate) -> list[QueryKey]:
        calls.append(update)
        return [("thing", update.resource.id)]

    reg = KeyRegistry()
    reg.register("thing", ["things"], specific)
    reg.keys_for(change("updated", "thing", ""))
    reg.keys_for(change("deleted", "thing", ""))
    assert calls == []
    with_id = change("updated", "thing", "t1")
    assert reg.keys_for(with_id) == [("things",), ("thing", "t1")]
    assert calls == [with_id]


def test_specific_may_return_any_iterable_of_keys() -> None:
    reg = KeyRegistry()
    reg.register("thing", ["things"], lambda u: (k for k in [("thing", u.resource.id)]))
    assert reg.keys_for(change("updated", "thing", "t1")) == [("things",), ("thing", "t1")]


def test_register_rejects_an_empty_type() -> None:
    with pytest.raises(ValueError, match="resource_type"):
        KeyRegistry().register("", ["x"])


def test_register_rejects_keys_that_are_not_json_scalars() -> None:
    with pytest.raises(TypeError):
        KeyRegistry().register("t", [("a", object())])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        KeyRegistry().register("t", [()])


def test_copy_is_independent() -> None:
    reg = default_registry()
    other = reg.copy()
    other.register("job", ["changed"])
    assert reg.keys_for(change("updated", "job", "j"))[0] == ("jobs",)
    assert other.keys_for(change("updated", "job", "j")) == [("changed",)]


# nodetool_registry: the keys the live server's changes reach (nodetool-protocol.md and
# issues 9.2/11.3): templates are the packages' examples; versions and messages are
# reached by their own frames and removed with their parent; frames name no parent.
RID = "i"
EVERY_EVENT: dict[str, list[QueryKey]] = {
    "job": [("jobs",), ("job", RID)],
    "asset": [("assets",), ("asset", RID)],
    "workspace": [("workspaces",), ("workspace", RID)],
    "secret": [("secrets",)],
    "collection": [("collections",)],
    "model": [("models",)],
    "message": [("message", RID)],
    # No workflow_id in the frame: the registry names no list (Sync finds it).
    "workflowversion": [],
}
LIVE_KEYS: dict[tuple[str, str], list[QueryKey]] = {
    ("workflow", "created"): [("workflows",), ("workflow", RID)],
    ("workflow", "updated"): [("workflows",), ("workflow", RID)],
    ("workflow", "deleted"): [("workflows",), ("workflow", RID), ("workflow_versions", RID)],
    ("thread", "created"): [("threads",), ("thread", RID)],
    ("thread", "updated"): [("threads",), ("thread", RID)],
    ("thread", "deleted"): [("threads",), ("thread", RID), ("messages", RID)],
    **{
        (rtype, event): keys
        for event in ("created", "updated", "deleted")
        for rtype, keys in EVERY_EVENT.items()
    },
}


@pytest.mark.parametrize(("rtype", "event"), sorted(LIVE_KEYS))
def test_nodetool_registry_follows_the_live_server(rtype: str, event: str) -> None:
    keys = nodetool_registry().keys_for(change(event, rtype, RID, etag="e"))  # type: ignore[arg-type]
    assert keys == LIVE_KEYS[(rtype, event)]


def test_nodetool_registry_leaves_the_seed_table_to_default_registry() -> None:
    update = change("updated", "workflow", RID)
    assert ("templates",) in default_registry().keys_for(update)
    assert ("workflow_versions", RID) in default_registry().keys_for(update)
    assert ("templates",) not in nodetool_registry().keys_for(update)
    assert ("workflow_versions", RID) not in nodetool_registry().keys_for(update)


def test_nodetool_message_with_thread_id_reaches_that_list_only() -> None:
    update = change("created", "message", "m1", etag="e", thread_id="t9")
    assert nodetool_registry().keys_for(update) == [("message", "m1"), ("messages", "t9")]


@pytest.mark.parametrize("thread_id", ["", 5, None, ["t9"]])
def test_nodetool_message_with_unusable_thread_id_reaches_no_list(thread_id: object) -> None:
    keys = nodetool_registry().keys_for(change("created", "message", "m1", thread_id=thread_id))
    assert keys == [("message", "m1")]


def test_nodetool_message_without_id_reaches_nothing() -> None:
    assert nodetool_registry().keys_for(change("deleted", "message", "")) == []


def test_nodetool_version_with_workflow_id_reaches_that_list_only() -> None:
    named = change("updated", "workflowversion", "v1", workflow_id="w9")
    assert nodetool_registry().keys_for(named) == [("workflow_versions", "w9")]


def test_nodetool_deleted_message_refetches_its_thread_list_but_removes_itself() -> None:
    update = change("deleted", "message", "m1", thread_id="t1")
    reg = nodetool_registry()
    general, specific = reg.split(update)
    inv = Invalidation(update, (*general, *specific))
    assert inv.specific_keys == (("message", "m1"),)
    assert inv.general_keys == (("messages", "t1"),)


@pytest.mark.parametrize("resource_type", sorted(LIVE_INTERNAL_TYPES))
def test_nodetool_internal_types_map_to_nothing_on_purpose(resource_type: str) -> None:
    reg = nodetool_registry()
    assert reg.keys_for(change("updated", resource_type, "x")) == []
    assert reg.knows(resource_type)
    assert reg.is_ignored(resource_type)
    assert resource_type not in reg.resource_types
    # The default registry does not know them: for it they are unknown.
    assert not default_registry().knows(resource_type)


def test_internal_types_constant_lists_the_live_servers_types() -> None:
    assert frozenset(LIVE_INTERNAL_TYPES) == NODETOOL_INTERNAL_TYPES


def test_register_after_ignore_makes_the_type_known_again() -> None:
    reg = nodetool_registry()
    reg.register("runevent", ["runs"])
    assert not reg.is_ignored("runevent")
    assert reg.keys_for(change("updated", "runevent", "r")) == [("runs",)]
    reg.ignore("runevent")
    assert reg.is_ignored("runevent")
    assert reg.keys_for(change("updated", "runevent", "r")) == []


def test_nodetool_registry_types() -> None:
    expected = set(SEED_TABLE) | {"message", "workflowversion"}
    assert nodetool_registry().resource_types == frozenset(expected)


# key_matches


@pytest.mark.parametrize(
    ("prefix", "key", "matches"),
    [
        (("workflows",), ("workflows",), True),
        (("workflows",), ("workflows", "page", 2), True),
        (("workflow", "w1"), ("workflow", "w1"), True),
        (("workflow", "w1"), ("workflow", "w1", "versions"), True),
        (("workflow", "w1"), ("workflow", "w10"), False),
        (("workflow", "w10"), ("workflow", "w1"), False),
        (("workflow",), ("workflows",), False),
        (("workflow", "w1"), ("workflow",), False),
        (("job", "j1"), ("workflow", "j1"), False),
    ],
)
def test_key_matches_by_whole_elements(prefix: QueryKey, key: QueryKey, matches: bool) -> None:
    assert key_matches(prefix, key) is matches


@pytest.mark.parametrize(
    ("prefix", "key", "matches"),
    [
        (("workflows",), ("workflows",), True),
        (("workflows",), ("workflows", "page", 2), False),
        (("workflow", "w1"), ("workflow", "w10"), False),
        (("workflow", "w1"), ("workflow", "w1"), True),
    ],
)
def test_key_matches_exact(prefix: QueryKey, key: QueryKey, matches: bool) -> None:
    assert key_matches(prefix, key, exact=True) is matches


# Invalidation.specific_keys / general_keys


def test_invalidation_splits_workflow_keys() -> None:
    update = change("updated", "workflow", "w1")
    inv = Invalidation(update, tuple(default_registry().keys_for(update)))
    assert inv.general_keys == (("workflows",), ("templates",))
    assert inv.specific_keys == (("workflow", "w1"), ("workflow_versions", "w1"))


def test_invalidation_of_thread_names_its_messages_as_specific() -> None:
    update = change("deleted", "thread", "t1")
    inv = Invalidation(update, tuple(default_registry().keys_for(update)))
    assert inv.general_keys == (("threads",),)
    assert inv.specific_keys == (("thread", "t1"), ("messages", "t1"))


def test_invalidation_without_id_has_no_specific_keys() -> None:
    update = change("updated", "asset", "")
    inv = Invalidation(update, (("assets",),))
    assert inv.specific_keys == ()
    assert inv.general_keys == (("assets",),)


def test_invalidation_specific_keys_compare_whole_elements() -> None:
    update = change("updated", "workflow", "w1")
    inv = Invalidation(update, (("workflows",), ("workflow", "w10"), ("workflow", "w1")))
    assert inv.specific_keys == (("workflow", "w1"),)
    assert inv.general_keys == (("workflows",), ("workflow", "w10"))


def test_invalidation_is_immutable() -> None:
    inv = Invalidation(change("updated", "job", "j"), (("jobs",),))
    with pytest.raises(AttributeError):
        inv.keys = ()  # type: ignore[misc]


def test_a_rule_returning_one_key_is_one_key_not_its_elements() -> None:
    reg = KeyRegistry()
    reg.register("job", ["jobs"], lambda u: ("job", u.resource.id))  # type: ignore[arg-type,return-value]
    assert reg.keys_for(change("updated", "job", "j1")) == [("jobs",), ("job", "j1")]
