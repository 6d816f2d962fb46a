"""The message model: ResourceChangeUpdate and Resource, as the seed document describes them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from querysync import Resource, ResourceChangeUpdate


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "resource_change",
        "event": "updated",
        "resource_type": "workflow",
        "resource": {"id": "workflow-123", "etag": "abc123"},
    }
    base.update(overrides)
    return base


def test_seed_example_messages_validate() -> None:
    # The three example messages of the seed document, verbatim.
    wf = ResourceChangeUpdate.model_validate(
        {
            "type": "resource_change",
            "event": "updated",
            "resource_type": "workflow",
            "resource": {
                "id": "workflow-123",
                "etag": "abc123",
                "name": "My Workflow",
                "status": "active",
            },
        }
    )
    assert (wf.event, wf.resource_type, wf.resource.id, wf.resource.etag) == (
        "updated",
        "workflow",
        "workflow-123",
        "abc123",
    )
    job = ResourceChangeUpdate.model_validate(
        {
            "type": "resource_change",
            "event": "created",
            "resource_type": "job",
            "resource": {"id": "job-456", "etag": "def456", "status": "running"},
        }
    )
    assert job.event == "created"
    asset = ResourceChangeUpdate.model_validate(
        {
            "type": "resource_change",
            "event": "deleted",
            "resource_type": "asset",
            "resource": {"id": "asset-789"},
        }
    )
    assert asset.event == "deleted"
    assert asset.resource.etag is None


def test_additional_resource_properties_are_kept() -> None:
    update = ResourceChangeUpdate.model_validate(
        message(resource={"id": "w1", "etag": "e", "name": "My Workflow", "nested": {"a": [1, 2]}})
    )
    assert update.resource.model_extra == {"name": "My Workflow", "nested": {"a": [1, 2]}}
    assert getattr(update.resource, "name") == "My Workflow"  # noqa: B009
    dumped = update.model_dump()
    assert dumped["resource"]["name"] == "My Workflow"
    assert dumped["resource"]["nested"] == {"a": [1, 2]}


def test_extras_take_part_in_equality() -> None:
    a = ResourceChangeUpdate.model_validate(message(resource={"id": "w1", "name": "a"}))
    b = ResourceChangeUpdate.model_validate(message(resource={"id": "w1", "name": "b"}))
    assert a != b
    assert a == ResourceChangeUpdate.model_validate(message(resource={"id": "w1", "name": "a"}))


def test_missing_id_reads_as_empty_string() -> None:
    update = ResourceChangeUpdate.model_validate(message(resource={"etag": "e"}))
    assert update.resource.id == ""
    assert Resource().id == ""


def test_etag_is_optional() -> None:
    update = ResourceChangeUpdate.model_validate(message(resource={"id": "w1"}))
    assert update.resource.etag is None
    assert Resource(id="x", etag="e").etag == "e"


def test_update_is_immutable() -> None:
    update = ResourceChangeUpdate.model_validate(message(resource={"id": "w1", "name": "n"}))
    with pytest.raises(ValidationError):
        update.event = "deleted"
    with pytest.raises(ValidationError):
        update.resource_type = "job"
    with pytest.raises(ValidationError):
        update.resource.id = "w2"
    with pytest.raises(ValidationError):
        update.resource.etag = "other"
    with pytest.raises(ValidationError):
        setattr(update.resource, "name", "other")  # noqa: B010
    assert update.resource.id == "w1"
    assert getattr(update.resource, "name") == "n"  # noqa: B009


def test_update_is_hashable_and_usable_as_dict_key() -> None:
    a = ResourceChangeUpdate.model_validate(message())
    b = ResourceChangeUpdate.model_validate(message())
    assert {a: 1}[b] == 1


@pytest.mark.parametrize("event", ["created", "updated", "deleted"])
def test_each_event_of_the_seed_is_accepted(event: str) -> None:
    assert ResourceChangeUpdate.model_validate(message(event=event)).event == event


@pytest.mark.parametrize("event", ["removed", "UPDATED", "", None, 1])
def test_other_events_are_rejected(event: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(event=event))


def test_event_is_required() -> None:
    data = message()
    del data["event"]
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(data)


@pytest.mark.parametrize("type_", ["job_update", "resource_changes", "", None])
def test_type_is_the_literal_resource_change(type_: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(type=type_))


def test_type_defaults_to_resource_change() -> None:
    update = ResourceChangeUpdate(event="updated", resource_type="job", resource=Resource(id="j"))
    assert update.type == "resource_change"


@pytest.mark.parametrize("resource_type", ["", None, 7, ["workflow"]])
def test_resource_type_must_be_a_non_empty_string(resource_type: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(resource_type=resource_type))


@pytest.mark.parametrize("resource_id", [123, 1.5, None, ["w1"], {"id": "w1"}, True])
def test_non_string_ids_are_rejected(resource_id: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(resource={"id": resource_id}))


@pytest.mark.parametrize("etag", [123, ["e"], {"e": 1}])
def test_non_string_etags_are_rejected(etag: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(resource={"id": "w1", "etag": etag}))


@pytest.mark.parametrize("resource", [None, "w1", ["id", "w1"], 5])
def test_resource_must_be_an_object(resource: object) -> None:
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(message(resource=resource))


def test_resource_is_required() -> None:
    data = message()
    del data["resource"]
    with pytest.raises(ValidationError):
        ResourceChangeUpdate.model_validate(data)
