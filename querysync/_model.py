"""The message model: what a NodeTool backend says when a resource changes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

__all__ = ["ChangeEvent", "Resource", "ResourceChangeUpdate"]

ChangeEvent = Literal["created", "updated", "deleted"]


class Resource(BaseModel):
    """The changed resource: its id, its etag and every other property the sender added.

    A missing id reads as ``""``; ids and etags must be strings (an integer id is a
    validation error, not silently turned into text, so two spellings of one
    resource can never end up in two cache entries).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    id: StrictStr = ""
    etag: StrictStr | None = None


class ResourceChangeUpdate(BaseModel):
    """One ``resource_change`` message, validated and immutable."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["resource_change"] = "resource_change"
    event: ChangeEvent
    resource_type: StrictStr = Field(min_length=1)
    resource: Resource

    @property
    def resource_key(self) -> tuple[str, str]:
        """The identity that throttling coalesces on: ``(resource_type, id)``."""
        return (self.resource_type, self.resource.id)
