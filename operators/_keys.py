"""expand_keys: ResourceChangeUpdate -> Invalidation(update, keys)."""

from __future__ import annotations

from collections import Counter

from querysync._keys import KeyRegistry, default_registry
from querysync._model import ResourceChangeUpdate
from querysync._signals import Invalidation, Resync, keys_naming

from ._stage import Stage, item_stage, log

__all__ = ["expand_keys_"]

_MAX_WARNED_TYPES = 256


def expand_keys_(
    registry: KeyRegistry | None = None,
) -> Stage[ResourceChangeUpdate | Resync, Invalidation | Resync]:
    reg = registry if registry is not None else default_registry()
    # The types already warned about; bounded so that a server sending random type
    # names cannot grow it (or the counts) without limit.
    warned: set[str] = set()

    def keys_of(update: ResourceChangeUpdate, counts: Counter[str]) -> Invalidation | None:
        try:
            general, specific = reg.split(update)
        except Exception:
            # A user's rule failed on this update: its general keys are still right,
            # and losing the whole invalidation would leave those entries stale.
            counts["rule_errors"] += 1
            log.exception(
                "specific-key rule for %r raised; invalidating its general keys only",
                update.resource_type,
            )
            general, specific = reg.general_keys(update.resource_type), ()
        if not general and not specific:
            # A type with a rule whose frame names no key by itself (a live message
            # frame lacks its thread): passed on with no keys, so that a later stage
            # that can find them (querysync.sync's parent resolver) still sees it.
            return (
                Invalidation(update, (), ()) if update.resource_type in reg.resource_types else None
            )
        # Keys a rule derives from another field (a message's thread list) are not this
        # resource's own: a delete refetches them instead of removing them.
        return Invalidation(
            update, (*general, *specific), keys_naming(update.resource.id, specific)
        )

    def handle(update: ResourceChangeUpdate, counts: Counter[str]) -> Invalidation | None:
        invalidation = keys_of(update, counts)
        if invalidation is not None:
            counts["invalidations"] += 1
            return invalidation
        rt = update.resource_type
        if reg.is_ignored(rt):
            counts["ignored"] += 1
        else:
            counts["unknown_type"] += 1
            # Warn once per type: a server that emits a new type emits it often, and
            # one line says all there is to say.
            if rt not in warned and len(warned) < _MAX_WARNED_TYPES:
                warned.add(rt)
                log.warning("no query keys for resource type %r; dropped", rt)
        counts["dropped"] += 1
        return None

    return item_stage("expand_keys", handle)
