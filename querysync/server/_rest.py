"""The REST API of the embedded server, with the live server's paths and body shapes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import _catalog
from ._auth import Credentials, rest_auth_failure
from ._store import InvalidResource, ResourceStore, UnknownResource, rest_body

__all__ = ["RestApi"]

log = logging.getLogger("querysync.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """A list endpoint and how it pages, as on the live server (shared/nodetool-protocol.md)."""

    resource_type: str
    path: str
    items: str
    # The query parameter that asks for a page, the body member that names the next
    # one, and the page-size parameter with its default (None: one page, no size).
    cursor: str
    next: str
    limit: str | None
    default_limit: int
    # What the next member holds on the last page.
    last: str | None = ""
    # A query parameter the list needs (messages are listed per thread).
    required_filter: str | None = None
    # Members in the order the live server writes them.
    items_first: bool = False


_ENDPOINTS = (
    _Endpoint("workflow", "/api/workflows", "workflows", "cursor", "next", "limit", 100),
    _Endpoint(
        "job",
        "/api/jobs",
        "jobs",
        "start_key",
        "next_start_key",
        "limit",
        100,
        last=None,
        items_first=True,
    ),
    _Endpoint("asset", "/api/assets", "assets", "cursor", "next", "page_size", 10_000),
    _Endpoint("thread", "/api/threads", "threads", "cursor", "next", "limit", 10),
    _Endpoint(
        "message",
        "/api/messages",
        "messages",
        "cursor",
        "next",
        "limit",
        100,
        required_filter="thread_id",
    ),
    _Endpoint(
        "workspace",
        "/api/workspaces",
        "workspaces",
        "cursor",
        "next_cursor",
        "limit",
        100,
        last=None,
        items_first=True,
    ),
    _Endpoint(
        "secret",
        "/api/settings/secrets",
        "secrets",
        "key",
        "next_key",
        None,
        100,
        last=None,
        items_first=True,
    ),
)
# Versions page like the others but live under their workflow's path.
_VERSIONS = _Endpoint(
    "workflowversion",
    "/api/workflows/{id}/versions",
    "versions",
    "cursor",
    "next",
    "limit",
    100,
    items_first=True,
)


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise _unprocessable("int_parsing", ["query", name], "Input should be a positive integer")
    return value


def _page_body(
    ep: _Endpoint, request: web.Request, store: ResourceStore, **where: Any
) -> dict[str, Any]:
    after = _int_param(request, ep.cursor, None)
    limit = _int_param(request, ep.limit, ep.default_limit) if ep.limit else ep.default_limit
    assert limit is not None
    newest_first = request.query.get("reverse", "").lower() in ("1", "true")
    items, cursor = store.page(
        ep.resource_type, after=after, limit=limit, newest_first=newest_first, **where
    )
    nxt: str | None = str(cursor) if cursor is not None else ep.last
    if ep.items_first:
        return {ep.items: items, ep.next: nxt}
    return {ep.next: nxt, ep.items: items}


def _unprocessable(kind: str, loc: list[str], msg: str) -> InvalidResource:
    return InvalidResource([{"type": kind, "loc": loc, "msg": msg}])


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise _unprocessable("json_invalid", ["body"], "JSON decode error") from None
    except RecursionError:
        # Too deep for the parser: FastAPI answers any parse failure other than a
        # decode error with this 400, and nothing reaches the log.
        raise web.HTTPBadRequest(reason="There was an error parsing the body") from None
    if not isinstance(data, dict):
        raise _unprocessable("model_attributes_type", ["body"], "Input should be an object")
    return data


class RestApi:
    """Routes and middleware of ``/api/...``: JSON in and out, Bearer-only auth.

    Errors are JSON as FastAPI writes them: 401 and 404 ``{"detail": "..."}``, 422
    ``{"detail": [{"type", "loc", "msg"}, ...]}``. There is no ETag header and
    ``If-None-Match`` is ignored, as on the live server. Each GET is counted under
    ``"GET <route>"`` (``"GET /api/messages/{id}"``) in the server's counts.
    """

    def __init__(
        self, store: ResourceStore, counts: Counter[str], token: str | Credentials | None
    ) -> None:
        self._store = store
        self._counts = counts
        self._token = token

    def routes(self) -> list[web.RouteDef]:
        """Every REST route; the fixed paths come before the ``{id}`` ones that would match them."""
        table: list[web.RouteDef] = [
            web.get("/api/workflows/examples", self._examples),
            web.get("/api/collections/", self._collections),
            web.get("/api/collections", self._collections),
            web.get("/api/models/all", self._models),
            web.get("/api/workflows/{id}/versions", self._versions),
            web.post("/api/workflows/{id}/versions", self._create_version),
        ]
        for ep in _ENDPOINTS:
            for path in (ep.path, ep.path + "/"):
                table.append(web.get(path, self._lister(ep)))
                table.append(web.post(path, self._creator(ep)))
            one = ep.path + "/{id}"
            table.append(web.get(one, self._getter(ep)))
            table.append(web.put(one, self._updater(ep)))
            table.append(web.delete(one, self._deleter(ep)))
        return table

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth for ``/api/``, and errors as JSON bodies."""
        if request.path.startswith("/api/"):
            self._counts["rest_requests"] += 1
            if request.method == "GET":
                # Per route ("GET /api/messages/{id}"): benchmarks and tests count what
                # a client asked for on the server's side.
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else request.path
                self._counts[f"GET {route}"] += 1
            failure = rest_auth_failure(request, self._token)
            if failure is not None:
                self._counts["rest_unauthorized"] += 1
                return web.json_response(
                    {"detail": failure}, status=401, headers={"WWW-Authenticate": "Bearer"}
                )
        try:
            return await handler(request)
        except UnknownResource as exc:
            return web.json_response({"detail": str(exc)}, status=404)
        except InvalidResource as exc:
            return web.json_response({"detail": exc.errors}, status=422)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return web.json_response({"detail": exc.reason}, status=exc.status, headers=headers)

    def _lister(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            where: dict[str, Any] = {}
            if ep.required_filter is not None:
                value = request.query.get(ep.required_filter)
                if not value:
                    raise _unprocessable("missing", ["query", ep.required_filter], "Field required")
                where[ep.required_filter] = value
            return web.json_response(_page_body(ep, request, self._store, **where))

        return handle

    def _getter(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            rid = request.match_info["id"]
            return web.json_response(self._store.rest_view(ep.resource_type, rid))

        return handle

    def _creator(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            created = self._store.create(ep.resource_type, body)
            return web.json_response(rest_body(ep.resource_type, created))

        return handle

    def _updater(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            rid = request.match_info["id"]
            updated = self._store.update(ep.resource_type, rid, body)
            return web.json_response(rest_body(ep.resource_type, updated))

        return handle

    def _deleter(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self._store.delete(ep.resource_type, request.match_info["id"])
            return web.json_response(None)

        return handle

    async def _versions(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["id"]
        self._store.get("workflow", workflow_id)
        return web.json_response(
            _page_body(_VERSIONS, request, self._store, workflow_id=workflow_id)
        )

    async def _create_version(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["id"]
        workflow = self._store.get("workflow", workflow_id)
        body = await _body(request)
        fields = {"name": workflow["name"], "graph": workflow["graph"], **body}
        fields["workflow_id"] = workflow_id
        created = self._store.create("workflowversion", fields)
        return web.json_response(rest_body("workflowversion", created))

    async def _examples(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"next": None, "workflows": _catalog.example_workflows()})

    async def _collections(self, request: web.Request) -> web.StreamResponse:
        items = _catalog.collections()
        return web.json_response({"collections": items, "count": len(items)})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_catalog.models())
