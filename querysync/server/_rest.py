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
from ._store import InvalidResource, ResourceStore, UnknownResource

__all__ = ["RestApi"]

log = logging.getLogger("querysync.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Endpoint:
    resource_type: str
    path: str
    wrap: Callable[[list[dict[str, Any]]], dict[str, Any]]
    # A query parameter the list needs (messages are listed per thread).
    required_filter: str | None = None


# Each list wraps its items the way the live server does; there is one page only, so
# every "next" marker is null.
_ENDPOINTS = (
    _Endpoint("workflow", "/api/workflows", lambda items: {"next": None, "workflows": items}),
    _Endpoint("job", "/api/jobs", lambda items: {"jobs": items, "next_start_key": None}),
    _Endpoint("asset", "/api/assets", lambda items: {"next": None, "assets": items}),
    _Endpoint("thread", "/api/threads", lambda items: {"next": None, "threads": items}),
    _Endpoint(
        "message",
        "/api/messages",
        lambda items: {"next": None, "messages": items},
        required_filter="thread_id",
    ),
    _Endpoint(
        "workspace", "/api/workspaces", lambda items: {"workspaces": items, "next_cursor": None}
    ),
    _Endpoint(
        "secret", "/api/settings/secrets", lambda items: {"secrets": items, "next_key": None}
    ),
)


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
    ``If-None-Match`` is ignored, as on the live server.
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
            return web.json_response(ep.wrap(self._store.select(ep.resource_type, **where)))

        return handle

    def _getter(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return web.json_response(self._store.get(ep.resource_type, request.match_info["id"]))

        return handle

    def _creator(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            return web.json_response(self._store.create(ep.resource_type, body))

        return handle

    def _updater(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            rid = request.match_info["id"]
            return web.json_response(self._store.update(ep.resource_type, rid, body))

        return handle

    def _deleter(self, ep: _Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self._store.delete(ep.resource_type, request.match_info["id"])
            return web.json_response(None)

        return handle

    async def _versions(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["id"]
        self._store.get("workflow", workflow_id)
        versions = self._store.select("workflowversion", workflow_id=workflow_id)
        return web.json_response({"next": None, "versions": versions})

    async def _create_version(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["id"]
        workflow = self._store.get("workflow", workflow_id)
        body = await _body(request)
        fields = {"name": workflow["name"], "graph": workflow["graph"], **body}
        fields["workflow_id"] = workflow_id
        return web.json_response(self._store.create("workflowversion", fields))

    async def _examples(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"next": None, "workflows": _catalog.example_workflows()})

    async def _collections(self, request: web.Request) -> web.StreamResponse:
        items = _catalog.collections()
        return web.json_response({"collections": items, "count": len(items)})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_catalog.models())
