"""resource_changes: frames or dicts -> validated ResourceChangeUpdate, bad ones rejected."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import ValidationError

from querysync._model import ResourceChangeUpdate
from querysync._signals import Rejected, Resync

from ._decode import RejectHandler, decode_frame, report_rejection
from ._stage import Stage, item_stage

__all__ = ["describe_validation_error", "parse_update", "resource_changes_"]

_validate = ResourceChangeUpdate.model_validate


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: ``resource.id: Input should be a valid string``."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "invalid resource_change: " + "; ".join(parts)


def parse_update(message: dict[str, Any]) -> ResourceChangeUpdate:
    """Validate one decoded ``resource_change`` message, or raise ``ValueError``."""
    try:
        return _validate(message)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    except RecursionError:
        raise ValueError("invalid resource_change: resource nests too deeply") from None


def resource_changes_(
    on_reject: RejectHandler | None = None,
) -> Stage[Any, ResourceChangeUpdate | Resync]:
    def handle(frame: Any, counts: Counter[str]) -> ResourceChangeUpdate | None:
        counts["frames"] += 1
        try:
            message = decode_frame(frame)
        except ValueError as exc:
            report_rejection(Rejected(frame, str(exc), "decode"), counts, on_reject)
            return None
        if message.get("type") != "resource_change":
            counts["other_messages"] += 1
            return None
        try:
            update = parse_update(message)
        except ValueError as exc:
            report_rejection(Rejected(frame, str(exc), "parse"), counts, on_reject)
            return None
        counts["resource_changes"] += 1
        return update

    return item_stage("resource_changes", handle)
