"""The in-memory resource store of the embedded server, and the changes it announces."""

from __future__ import annotations

import bisect
import copy
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from querysync._exceptions import QuerySyncError
from querysync._model import ChangeEvent

from ._etag import etag_of

__all__ = [
    "RESOURCE_TYPES",
    "ChangeListener",
    "InvalidResource",
    "ResourceStore",
    "UnknownResource",
    "rest_body",
]

log = logging.getLogger("querysync.server")

ChangeListener = Callable[[ChangeEvent, str, dict[str, Any]], None]
"""Called with ``(event, resource_type, resource)`` for every change; ``resource`` is a copy."""

# Fields the server owns: a write that names them is not an error, they are just not taken.
_SERVER_FIELDS = frozenset({"id", "etag", "user_id", "created_at", "updated_at"})
_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class _Field:
    types: tuple[type, ...]
    default: Any = _REQUIRED

    def accepts(self, value: Any) -> bool:
        # bool is an int in Python; a JSON true is not a version number.
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)


_STR = (str,)
_OPT_STR = (str, type(None))


@dataclass(frozen=True, slots=True)
class _Schema:
    fields: Mapping[str, _Field]
    # (field, resource type) pairs: the field must name an existing resource of that type.
    parents: tuple[tuple[str, str], ...] = ()
    # Children deleted with the resource: (resource type, field that points back here).
    children: tuple[tuple[str, str], ...] = ()
    # Columns the live server's list query does not read: its list items lack them,
    # and their etags (a hash of what was read) differ from the detail's.
    unlisted: tuple[str, ...] = ()
    # The REST bodies carry an etag (messages, workspaces, secrets, versions do not).
    rest_etag: bool = True
    # A create announces "updated" then "created"; jobs only ever send "updated".
    announces_create: bool = True


_SCHEMAS: dict[str, _Schema] = {
    "workflow": _Schema(
        {
            "name": _Field(_STR),
            "access": _Field(_STR),
            "graph": _Field((dict,)),
            "description": _Field(_STR, ""),
            "tags": _Field((list,), []),
        },
        children=(("workflowversion", "workflow_id"),),
        unlisted=("graph",),
    ),
    "workflowversion": _Schema(
        {
            "workflow_id": _Field(_STR),
            "version": _Field((int,), 0),
            "name": _Field(_STR, ""),
            "graph": _Field((dict,), {}),
        },
        parents=(("workflow_id", "workflow"),),
        rest_etag=False,
    ),
    "job": _Schema(
        {
            "workflow_id": _Field(_STR),
            "job_type": _Field(_STR, "workflow"),
            "status": _Field(_STR, "queued"),
            "params": _Field((dict,), {}),
            "error": _Field(_OPT_STR, None),
        },
        unlisted=("params",),
        announces_create=False,
    ),
    "asset": _Schema(
        {
            "name": _Field(_STR),
            "content_type": _Field(_STR),
            "parent_id": _Field(_OPT_STR, None),
            "workflow_id": _Field(_OPT_STR, None),
            "metadata": _Field((dict, type(None)), None),
        }
    ),
    "thread": _Schema(
        {"title": _Field(_OPT_STR, None)},
        children=(("message", "thread_id"),),
    ),
    "message": _Schema(
        {
            "thread_id": _Field(_STR),
            "role": _Field(_STR, "user"),
            "content": _Field((str, list, dict, type(None)), None),
        },
        parents=(("thread_id", "thread"),),
        rest_etag=False,
    ),
    "workspace": _Schema(
        {
            "name": _Field(_STR),
            "path": _Field(_STR),
            "is_default": _Field((bool,), False),
        },
        rest_etag=False,
    ),
    "secret": _Schema(
        {
            "key": _Field(_STR),
            "description": _Field(_STR, ""),
            "is_configured": _Field((bool,), False),
        },
        rest_etag=False,
    ),
}

RESOURCE_TYPES: tuple[str, ...] = tuple(_SCHEMAS)
"""The writable resource types, as NodeTool names them in ``resource_change``."""


class UnknownResource(QuerySyncError, LookupError):
    """No resource of that type has that id (REST answers 404)."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"{resource_type.capitalize()} not found")
        self.resource_type = resource_type
        self.resource_id = resource_id


class InvalidResource(QuerySyncError, ValueError):
    """The fields of a write are not acceptable (REST answers 422).

    ``errors`` holds one FastAPI-style dict per problem: ``{"type", "loc", "msg"}``.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors))
        self.errors = errors


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ResourceStore:
    """Resources by type and id, each a JSON dict carrying its ``id`` and ``etag``.

    Every write announces itself to the listeners, as the live server does: a create
    as ``updated`` then ``created`` (same etag), an update as ``updated``, a delete as
    ``deleted`` with the last state. Deleting a workflow or a thread deletes its
    versions or messages first, each with its own ``deleted``. Lists come back in
    creation order. All calls are synchronous and must come from the event loop's
    thread, since listeners write to the connections.
    """

    __slots__ = (
        "_by_parent",
        "_data",
        "_listeners",
        "_new_id",
        "_order",
        "_seq",
        "_sequence",
        "_views",
    )

    def __init__(self, *, new_id: Callable[[], str] | None = None) -> None:
        """An empty store; ``new_id`` makes ids for creates without one (uuid4 hex)."""
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._data: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in RESOURCE_TYPES}
        # What a list shows of each resource, made once per write: a list request hands
        # these out as they are, instead of copying every item of every page it serves.
        self._views: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in RESOURCE_TYPES}
        # Creation numbers: a page's cursor is the number of its last item, which stays
        # valid whatever is created or deleted before the next page is asked for.
        self._seq: dict[str, dict[str, int]] = {t: {} for t in RESOURCE_TYPES}
        # Per type, the creation numbers in order and whose they are: a page starts by
        # bisection, so reading a list of n items a page at a time costs O(n), not O(n^2).
        self._order: dict[str, tuple[list[int], dict[int, str]]] = {
            t: ([], {}) for t in RESOURCE_TYPES
        }
        # Per type and parent field (a message's thread_id), per parent id, the creation
        # numbers of its children in order: the list of one thread's messages is then
        # found without looking at every message (10,000 threads: 10^8 checks before).
        self._by_parent: dict[str, dict[str, dict[Any, list[int]]]] = {
            t: {name: {} for name, _ in _SCHEMAS[t].parents} for t in RESOURCE_TYPES
        }
        self._sequence = 0
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Add a listener; the returned function removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def get(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """A copy of one resource; raises :class:`UnknownResource`."""
        return copy.deepcopy(self._get(resource_type, resource_id))

    def exists(self, resource_type: str, resource_id: str) -> bool:
        """True when the resource is in the store."""
        return resource_id in self._table(resource_type)

    def select(self, resource_type: str, **where: Any) -> list[dict[str, Any]]:
        """Copies of the resources of a type whose fields equal ``where``, oldest first."""
        table = self._table(resource_type)
        numbers, rest = self._numbers(resource_type, where)
        owners = self._order[resource_type][1]
        return [
            copy.deepcopy(r)
            for r in (table[owners[n]] for n in numbers)
            if all(r.get(k) == v for k, v in rest.items())
        ]

    def _numbers(
        self, resource_type: str, where: dict[str, Any]
    ) -> tuple[list[int], dict[str, Any]]:
        """The creation numbers to look at for ``where`` (in order), and what is left of it.

        A match on one parent field (a message's ``thread_id``) is the parent's own
        children, every one of which matches: no resource of the type is looked at.
        """
        if len(where) == 1:
            ((field, value),) = where.items()
            children = self._by_parent[resource_type].get(field)
            if children is not None:
                return children.get(value, []), {}
        return self._order[resource_type][0], where

    def page(
        self,
        resource_type: str,
        *,
        after: int | None = None,
        limit: int,
        newest_first: bool = False,
        **where: Any,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of a list as the REST API shows it, and the cursor of the next page.

        The items are the stored list views, not copies: serialise them, never change
        them. They follow creation order (``newest_first`` reverses it), start after the
        item numbered ``after`` and number at most ``limit``; the cursor is None on the
        last page. List views lack the columns the live list query does not read
        (workflows' ``graph``, jobs' ``params``, with an etag of what is left) and carry
        no etag where the live bodies have none.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        views = self._views[self._type(resource_type)]
        table = self._data[resource_type]
        owners = self._order[resource_type][1]
        numbers, where = self._numbers(resource_type, where)
        if newest_first:
            end = len(numbers) if after is None else bisect.bisect_left(numbers, after)
            positions: Iterable[int] = range(end - 1, -1, -1)
        else:
            start = 0 if after is None else bisect.bisect_right(numbers, after)
            positions = range(start, len(numbers))
        out: list[dict[str, Any]] = []
        last = 0
        for at in positions:
            rid = owners[numbers[at]]
            if where and not all(table[rid].get(k) == v for k, v in where.items()):
                continue
            if len(out) == limit:
                return out, last
            out.append(views[rid])
            last = numbers[at]
        return out, None

    def rest_view(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """One resource as ``GET /api/.../{id}`` shows it (a copy); raises UnknownResource."""
        return rest_body(resource_type, self.get(resource_type, resource_id))

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """A deep copy of everything: ``{resource_type: {id: resource}}`` for every type."""
        return copy.deepcopy(self._data)

    def create(
        self, resource_type: str, fields: Mapping[str, Any], *, id: str | None = None
    ) -> dict[str, Any]:
        """Create a resource from ``fields`` (defaults filled in) and announce it.

        ``id`` picks the id (an :class:`InvalidResource` if taken); otherwise a fresh
        uuid hex. Fields the server owns (``id``, ``etag``, timestamps) are not taken
        from ``fields``; fields the schema does not know are kept as they are.
        """
        schema = self._schema(resource_type)
        table = self._table(resource_type)
        if id is not None and (not isinstance(id, str) or not id):
            raise InvalidResource([_error("string_type", "id", "Input should be a string")])
        rid = id if id is not None else self._new_id()
        if rid in table:
            raise InvalidResource([_error("value_error", "id", f"id {rid!r} already exists")])
        body = _writable(resource_type, fields)
        for name, spec in schema.fields.items():
            if name not in body:
                if spec.default is _REQUIRED:
                    continue
                body[name] = copy.deepcopy(spec.default)
        self._validate(schema, body, partial=False)
        if resource_type == "workflowversion" and not body.get("version"):
            siblings = self.select("workflowversion", workflow_id=body["workflow_id"])
            body["version"] = 1 + len(siblings)
        now = _now()
        resource: dict[str, Any] = {
            "id": rid,
            "user_id": "1",
            **body,
            "created_at": now,
            "updated_at": now,
        }
        resource["etag"] = etag_of(resource)
        table[rid] = resource
        self._sequence += 1
        self._seq[resource_type][rid] = self._sequence
        numbers, owners = self._order[resource_type]
        numbers.append(self._sequence)
        owners[self._sequence] = rid
        for field, children in self._by_parent[resource_type].items():
            children.setdefault(resource.get(field), []).append(self._sequence)
        self._views[resource_type][rid] = _list_view(schema, resource)
        # The live server's save() announces an update before the create, same etag.
        self._emit("updated", resource_type, resource)
        if schema.announces_create:
            self._emit("created", resource_type, resource)
        return copy.deepcopy(resource)

    def update(
        self, resource_type: str, resource_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge ``fields`` into a resource, give it a new etag and announce it."""
        schema = self._schema(resource_type)
        current = self._get(resource_type, resource_id)
        body = _writable(resource_type, fields)
        self._validate(schema, body, partial=True)
        updated = {**copy.deepcopy(current), **body, "updated_at": _now()}
        updated["etag"] = etag_of(updated)
        number = self._seq[resource_type][resource_id]
        for field, children in self._by_parent[resource_type].items():
            if updated.get(field) != current.get(field):
                _unfile(children, current.get(field), number)
                bisect.insort(children.setdefault(updated.get(field), []), number)
        self._table(resource_type)[resource_id] = updated
        self._views[resource_type][resource_id] = _list_view(schema, updated)
        self._emit("updated", resource_type, updated)
        return copy.deepcopy(updated)

    def delete(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Remove a resource (and its children) and announce it; returns its last state."""
        schema = self._schema(resource_type)
        self._get(resource_type, resource_id)
        for child_type, back_ref in schema.children:
            for child in self.select(child_type, **{back_ref: resource_id}):
                self.delete(child_type, child["id"])
        last = self._table(resource_type).pop(resource_id)
        del self._views[resource_type][resource_id]
        number = self._seq[resource_type].pop(resource_id)
        numbers, owners = self._order[resource_type]
        del numbers[bisect.bisect_left(numbers, number)]
        del owners[number]
        for field, children in self._by_parent[resource_type].items():
            _unfile(children, last.get(field), number)
        self._emit("deleted", resource_type, last)
        return copy.deepcopy(last)

    def _schema(self, resource_type: str) -> _Schema:
        try:
            return _SCHEMAS[resource_type]
        except KeyError:
            raise InvalidResource(
                [_error("enum", "resource_type", f"unknown resource type {resource_type!r}")]
            ) from None

    def _type(self, resource_type: str) -> str:
        self._schema(resource_type)
        return resource_type

    def _table(self, resource_type: str) -> dict[str, dict[str, Any]]:
        self._schema(resource_type)
        return self._data[resource_type]

    def _get(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        try:
            return self._table(resource_type)[resource_id]
        except KeyError:
            raise UnknownResource(resource_type, resource_id) from None

    def _validate(self, schema: _Schema, body: dict[str, Any], *, partial: bool) -> None:
        errors: list[dict[str, Any]] = []
        for name, spec in schema.fields.items():
            if name not in body:
                if not partial and spec.default is _REQUIRED:
                    errors.append(_error("missing", name, "Field required"))
            elif not spec.accepts(body[name]):
                kinds = " or ".join(t.__name__ for t in spec.types).replace("NoneType", "null")
                errors.append(_error("type_error", name, f"Input should be {kinds}"))
        for name, parent_type in schema.parents:
            value = body.get(name)
            if isinstance(value, str) and value not in self._data[parent_type]:
                errors.append(_error("value_error", name, f"{parent_type} {value!r} not found"))
        if errors:
            raise InvalidResource(errors)

    def _emit(self, event: ChangeEvent, resource_type: str, resource: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, resource_type, copy.deepcopy(resource))
            except Exception:
                # A broken listener must not undo a write that already happened.
                log.exception("resource change listener raised")


def rest_body(resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` as a REST body shows it: no etag for the types whose bodies have none."""
    if resource_type in _SCHEMAS and not _SCHEMAS[resource_type].rest_etag:
        resource.pop("etag", None)
    return resource


def _list_view(schema: _Schema, resource: dict[str, Any]) -> dict[str, Any]:
    # A deep copy once per write, so that a later write's merge never reaches a view
    # that a list response is serialising.
    view = {k: copy.deepcopy(v) for k, v in resource.items() if k not in schema.unlisted}
    if not schema.rest_etag:
        view.pop("etag", None)
    elif schema.unlisted:
        del view["etag"]
        view["etag"] = etag_of(view)
    return view


def _writable(resource_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise InvalidResource(
            [_error("model_attributes_type", "body", "Input should be an object")]
        )
    body = {k: copy.deepcopy(v) for k, v in fields.items() if k not in _SERVER_FIELDS}
    if resource_type == "secret" and "value" in body:
        # The real API never hands a secret's value back; it only says one is set.
        value = body.pop("value")
        body["is_configured"] = bool(value)
    return body


def _error(kind: str, name: str, msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", name], "msg": msg}


def _unfile(children: dict[Any, list[int]], parent: Any, number: int) -> None:
    """Take creation number ``number`` out of the children of ``parent``."""
    numbers = children[parent]
    del numbers[bisect.bisect_left(numbers, number)]
    if not numbers:
        del children[parent]
