"""querysync's stream operators: frames in, invalidations out.

Each function returns an operator (``Observable -> Observable``) to use with
``source.pipe(...)``. The returned operator also carries ``counts``, a
``collections.Counter`` of what it did (frames, rejected, coalesced, ...).

Every operator passes a :class:`querysync.Resync` through unchanged and in order.
Time-based operators read time only from their scheduler: ``scheduler=``, else the
subscription's scheduler, else an ``AsyncIOScheduler`` on the running loop.
"""

from __future__ import annotations

from typing import Any

from reactivex import abc, typing

from querysync._keys import KeyRegistry
from querysync._model import ResourceChangeUpdate
from querysync._signals import Invalidation, Resync

from ._decode import Frame, RejectHandler, decode_
from ._keys import expand_keys_
from ._parse import resource_changes_
from ._route import routed_to_
from ._stage import Stage
from ._throttle import throttle_per_resource_

__all__ = [
    "Frame",
    "RejectHandler",
    "Stage",
    "decode",
    "expand_keys",
    "resource_changes",
    "routed_to",
    "throttle_per_resource",
]


def decode(*, on_reject: RejectHandler | None = None) -> Stage[Any, dict[str, Any] | Resync]:
    """Frames (JSON ``str``, MessagePack ``bytes`` or a decoded ``dict``) -> message dicts.

    .. marble::
        ---t---b---x---|
        [   decode()   ]
        ---m---m-------|     (x undecodable: handed to on_reject, counted, logged)

    A frame that cannot be decoded, or that is not an object, becomes a
    :class:`querysync.Rejected` for ``on_reject``; the stream goes on.
    """
    return decode_(on_reject)


def resource_changes(
    *, on_reject: RejectHandler | None = None
) -> Stage[Any, ResourceChangeUpdate | Resync]:
    """Frames or dicts -> :class:`querysync.ResourceChangeUpdate`.

    .. marble::
        ---u---p---x---v---|
        [ resource_changes() ]
        ---U-----------V---|   (p: another type, skipped; x: rejected)

    Messages of other types are skipped silently. A frame that cannot be decoded, or
    that says ``resource_change`` but fails validation, is handed to ``on_reject`` as a
    :class:`querysync.Rejected`, logged and counted. Bad input never calls ``on_error``.
    """
    return resource_changes_(on_reject)


def routed_to(key: str) -> Stage[Any, dict[str, Any] | Resync]:
    """Decoded messages -> those whose ``job_id``, ``workflow_id`` or ``thread_id`` is ``key``.

    .. marble::
        ---j1--j2--r1--w1--|
        [ routed_to("1") ]
        ---j1----------w1--|   (r1: a resource_change, never routed)

    Messages pass unchanged; ``resource_change`` messages never pass; a ``Resync``
    passes, since a reconnect may have lost the routed messages too.
    """
    return routed_to_(key)


def throttle_per_resource(
    window: typing.RelativeTime, *, scheduler: abc.SchedulerBase | None = None
) -> Stage[ResourceChangeUpdate | Resync, ResourceChangeUpdate | Resync]:
    """Updates -> at most one update per resource per ``window`` (seconds), the last never lost.

    .. marble::
        -a1-a2-a3-b1--------a4---|
        [ throttle_per_resource(3) ]
        -a1-------b1-a3-----a4---|

    Per ``(resource_type, resource.id)``, independently: an update for a resource with no
    open window passes at once and opens a window; updates inside the window are held,
    latest wins; when the window closes the held update is emitted and opens the next
    window. On completion every held update is emitted before ``on_completed``; errors
    pass through at once. A resource's state is dropped when its window closes with
    nothing held. One pending timer serves all windows (they close in the order they
    opened), so no thread and no timer per resource.

    ``window`` is seconds (or a ``timedelta``), finite and greater than zero; anything
    else raises :class:`querysync.ConfigurationError` here, at the call.
    """
    return throttle_per_resource_(window, scheduler)


def expand_keys(
    registry: KeyRegistry | None = None,
) -> Stage[ResourceChangeUpdate | Resync, Invalidation | Resync]:
    """Updates -> :class:`querysync.Invalidation` (the update and the keys it invalidates).

    .. marble::
        ---w---z---|
        [ expand_keys() ]
        ---W-------|      (z: no keys for its type, dropped and counted)

    ``registry`` defaults to :func:`querysync.default_registry`. An unknown type is
    logged once per type and counted; a type the registry ignores on purpose is counted
    quietly.
    """
    return expand_keys_(registry)


def _claim_public_classes() -> None:
    # Public classes report this module (help, repr, tracebacks), not the private one.
    from querysync._public import claim

    claim(__name__, globals(), __all__)


_claim_public_classes()
