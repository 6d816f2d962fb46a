"""NodeToolServer: the embedded server's lifecycle and Python API, and ``serve()``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from querysync._exceptions import ConfigurationError
from querysync._model import ChangeEvent

from ._auth import TOKEN_PATH, Credentials
from ._commands import Commands
from ._jobs import JobRunner
from ._rest import RestApi
from ._store import ResourceStore
from ._ws import Hub, RawFrame, WsEndpoint

__all__ = ["NodeToolServer", "serve"]

log = logging.getLogger("querysync.server")

GOING_AWAY = 1001


class NodeToolServer:
    """A NodeTool-compatible backend in memory: ``/ws`` and the REST API on one aiohttp app.

    Args (all keyword-only):
        token: when set, /ws wants it as ``Authorization: Bearer`` or ``?api_key=``
            (refused clients are closed with 1008) and REST wants the Bearer header (401).
        ping_interval: seconds between the server's ``{"type": "ping"}`` (default 25);
            None sends none.
        stats_interval: seconds between ``system_stats`` messages (default 1); None sends none.
        host, port: where :meth:`start` listens by default (127.0.0.1, port 0 = any free port).
        full_resources: put the whole resource in ``resource_change`` messages instead of
            only ``id`` and ``etag`` (the live server sends only those two; default False).
        send_queue_size: messages a connection may fall behind before it is closed with
            1013 (default 10 000). Broadcasting only queues, so a slow client never holds
            up the others; a client that far behind is closed rather than skipped, since a
            skipped ``resource_change`` would leave its cache silently wrong, while a
            reconnecting client resyncs.
        close_timeout: seconds a client gets to answer a close frame (default 2).
        max_msg_size: largest frame accepted from a client, bytes (default 4 MiB).
        job_steps, job_step_seconds: the shape of a simulated ``run_job`` (3 steps, 0.01 s).
        store: the :class:`ResourceStore` to serve (a new empty one by default).
        token_ttl: seconds an issued token is valid (default None: the fixed ``token``
            never expires). With it, /ws and REST accept only tokens from
            :meth:`issue_token`, ``POST /api/auth/token`` (Bearer ``token``) or the token
            file, and refuse older ones with 1008 / 401 ``"Token expired"``; a /ws
            connection is closed with 1008 when its token expires.
        token_file: with ``token_ttl``, a file that always holds a valid token (written
            at start and every ``token_ttl / 2`` seconds, mode 0600).

    The store outlives :meth:`stop`, so ``stop()`` then ``start()`` is a backend that went
    away and came back with its data. ``counts`` tallies what the server did:
    ``frames_sent`` (and ``binary_frames_sent``, ``text_frames_sent``), ``frames_received``,
    ``resource_changes`` (store changes announced, each counted once however many clients
    got it), ``internal_changes``, ``connections``, ``auth_rejected``, ``invalid_messages``,
    ``commands``, ``slow_clients_dropped``, ``rest_requests``, ``rest_unauthorized``,
    ``tokens_expired`` (open /ws connections closed because their token expired).
    Every method must be called from the event loop's thread.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        ping_interval: float | None = 25.0,
        stats_interval: float | None = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        full_resources: bool = False,
        send_queue_size: int = 10_000,
        close_timeout: float = 2.0,
        max_msg_size: int = 4 * 1024 * 1024,
        job_steps: int = 3,
        job_step_seconds: float = 0.01,
        store: ResourceStore | None = None,
        token_ttl: float | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        intervals = {"ping_interval": ping_interval, "stats_interval": stats_interval}
        for name, interval in intervals.items():
            if interval is not None and interval <= 0:
                raise ConfigurationError(
                    f"{name} must be positive seconds or None, got {interval!r}"
                )
        if send_queue_size < 1:
            raise ConfigurationError("send_queue_size must be at least 1")
        self.counts: Counter[str] = Counter()
        self.store = store if store is not None else ResourceStore()
        self._token = token
        self.credentials = Credentials(token, token_ttl, token_file=token_file)
        self._host = host
        self._port = port
        self._full_resources = full_resources
        self._hub = Hub()
        self._jobs = JobRunner(
            self.store, self._hub, self.counts, steps=job_steps, step_seconds=job_step_seconds
        )
        self._ws = WsEndpoint(
            hub=self._hub,
            commands=Commands(self.store, self._jobs),
            counts=self.counts,
            token=self.credentials,
            ping_interval=ping_interval,
            stats_interval=stats_interval,
            queue_size=send_queue_size,
            close_timeout=close_timeout,
            max_msg_size=max_msg_size,
        )
        self._rest = RestApi(self.store, self.counts, self.credentials)
        self._runner: web.AppRunner | None = None
        self.store.subscribe(self._announce)

    # -- lifecycle -------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp application serving this server's store (``/ws`` and ``/api/``).

        :meth:`start` makes one per start; use this directly to mount the server in
        another runner (pytest-aiohttp's ``aiohttp_client``, for instance).
        """
        app = web.Application(middlewares=[self._rest.middleware])
        app.router.add_get("/ws", self._ws.handle)
        if self.credentials.ttl is not None:
            app.router.add_post(TOKEN_PATH, self.credentials.handle_issue)
        app.router.add_routes(self._rest.routes())
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on ``host:port``; port None means the last port used, else the default.

        Restarting on the port it had (``stop()`` then ``start()``) keeps the store.
        """
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        host = host if host is not None else self._host
        port = port if port is not None else self._port
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host = host
        self._port = runner.addresses[0][1]
        self.credentials.start_rotation()
        log.info("NodeTool server listening on %s", self.api_url)

    async def stop(self, *, code: int | None = GOING_AWAY, reason: str = "Server shutdown") -> None:
        """Close every connection (with ``code``, or cut off when None) and stop listening.

        Running jobs are cancelled and left as they were. A stopped server can start again.
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._jobs.stop()
        await self.credentials.stop_rotation()
        # Stop listening first: a client reconnecting at once would otherwise get in
        # between and be cut a second time by the cleanup.
        for site in list(runner.sites):
            await site.stop()
        await self.drop_connections(code=code, reason=reason)
        await runner.cleanup()
        log.info("NodeTool server on port %d stopped", self._port)

    async def __aenter__(self) -> NodeToolServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._runner is not None

    @property
    def port(self) -> int:
        """The port listened on (the last one, after a stop); 0 before the first start."""
        return self._port

    @property
    def host(self) -> str:
        """The host listened on."""
        return self._host

    @property
    def api_url(self) -> str:
        """The REST base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self._url_host()}:{self._started_port()}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL, ``ws://127.0.0.1:PORT/ws``."""
        return f"ws://{self._url_host()}:{self._started_port()}/ws"

    def _started_port(self) -> int:
        if not self._port:
            raise RuntimeError("the server has not been started")
        return self._port

    def _url_host(self) -> str:
        if self._host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self._host == "::":
            return "[::1]"
        return f"[{self._host}]" if ":" in self._host else self._host

    def issue_token(self) -> str:
        """A new token valid for ``token_ttl`` seconds (the fixed ``token`` without a ttl)."""
        return self.credentials.issue()

    # -- connections -----------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many /ws clients are connected now (refused ones are never counted)."""
        return self._hub.open_count

    async def wait_for_connections(self, count: int = 1) -> None:
        """Return once ``count`` clients are connected; wrap it in ``asyncio.timeout()``."""
        await self._hub.wait_for(count)

    async def drop_connections(self, *, code: int | None = None, reason: str = "") -> int:
        """Close every /ws connection with ``code``, or cut them off (no close frame) if None.

        Returns how many were dropped. The server keeps listening.
        """
        conns = list(self._hub.connections)
        if code is None:
            for conn in conns:
                conn.abort()
        else:
            await asyncio.gather(*(conn.close(code, reason) for conn in conns))
        for conn in conns:
            self._hub.remove(conn)
        return len(conns)

    def broadcast(self, message: Mapping[str, Any]) -> int:
        """Send any message to every client, in each one's mode; returns how many took it."""
        return self._hub.broadcast(dict(message))

    def broadcast_raw(self, frame: str | bytes) -> int:
        """Send a frame as it is (text or binary, whatever the modes); for bad-input tests."""
        return self._hub.broadcast(RawFrame(frame))

    # -- resources -------------------------------------------------------------------

    def create(
        self, resource_type: str, fields: Mapping[str, Any], *, id: str | None = None
    ) -> dict[str, Any]:
        """Create a resource as ``POST`` would and announce it (``updated``, then ``created``).

        Raises :class:`InvalidResource` for fields ``POST`` would answer 422 to.
        """
        return self.store.create(resource_type, fields, id=id)

    def update(
        self, resource_type: str, resource_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge ``fields`` into a resource as ``PUT`` would, and announce it (``updated``).

        Raises :class:`UnknownResource` (404) or :class:`InvalidResource` (422).
        """
        return self.store.update(resource_type, resource_id, fields)

    def delete(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Delete a resource as ``DELETE`` would and announce it; returns its last state."""
        return self.store.delete(resource_type, resource_id)

    def get(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """A copy of one resource as ``GET /api/.../{id}`` returns it."""
        return self.store.get(resource_type, resource_id)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every stored resource, ``{resource_type: {id: resource}}``, as a deep copy.

        Covers the writable types (:data:`RESOURCE_TYPES`), not the read-only example,
        collection and model lists.
        """
        return self.store.snapshot()

    def _announce(self, event: ChangeEvent, resource_type: str, resource: dict[str, Any]) -> None:
        self.counts["resource_changes"] += 1
        payload = (
            resource
            if self._full_resources
            else {"id": resource["id"], "etag": resource["etag"]}
        )
        self._hub.broadcast(
            {
                "type": "resource_change",
                "event": event,
                "resource_type": resource_type,
                "resource": payload,
            }
        )


async def serve(
    host: str = "127.0.0.1",
    port: int = 7777,
    token: str | None = None,
    *,
    ping_interval: float | None = 25.0,
    stats_interval: float | None = 1.0,
    on_ready: Callable[[NodeToolServer], object] | None = None,
) -> None:
    """Run a :class:`NodeToolServer` until cancelled, then stop it cleanly.

    ``on_ready`` is called with the started server (to print its URLs, say). Port 7777
    is the live NodeTool server's default.
    """
    server = NodeToolServer(token=token, ping_interval=ping_interval, stats_interval=stats_interval)
    await server.start(host, port)
    try:
        if on_ready is not None:
            on_ready(server)
        await asyncio.Event().wait()
    finally:
        await server.stop()
