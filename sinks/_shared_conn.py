"""ShareConfig and the connection to a NATS JetStream bucket (nats-py is imported only here).

Credentials come from the config or, when it names none, from the environment:
``QUERYSYNC_NATS_TOKEN``, ``QUERYSYNC_NATS_USER`` with ``QUERYSYNC_NATS_PASSWORD``, or
``QUERYSYNC_NATS_CREDS`` (a ``.creds`` file). A URL may also carry ``user:password@``.
None of them is ever logged: logs and errors show the URL without its user part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from querysync._exceptions import (
    ConfigurationError,
    LeaseLostError,
    ShareConnectionError,
    ShareError,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = [
    "Bucket",
    "LeaseLostError",
    "ShareConfig",
    "ShareConnectionError",
    "ShareError",
    "connect_bucket",
    "redact",
]

log = logging.getLogger("querysync.share")

_SCHEMES = ("nats", "tls")


@dataclass(frozen=True)
class ShareConfig:
    """Where the shared cache lives and how to reach it.

    - ``url``: ``nats://HOST:PORT`` or ``tls://HOST:PORT`` (several comma-separated for
      a cluster); a path (``nats://HOST:PORT/BUCKET``) names the bucket.
    - ``bucket``: default ``"querysync"`` (or the URL's path).
    - ``lease``: seconds a publisher's lease lasts without renewal, default 5.0; it is
      renewed every third of that. A standby takes over at most about ``lease`` + 0.5 s
      after the active publisher stopped renewing.
    - ``history``: revisions kept per key, default 1 (1 to 64).
    - ``replicas``: copies of the bucket in a cluster, default 1.
    - ``max_bytes``: bucket size limit in bytes, default -1 (none). JetStream refuses
      writes beyond it (discard new): the publisher logs and retries them.
    - ``token``, ``user``/``password``, ``creds`` (a file path): credentials; each
      defaults to its ``QUERYSYNC_NATS_*`` environment variable.
    - ``tls``: an SSL context; default None (a ``tls://`` URL uses the system's default).
    - ``connect_timeout``: seconds for the first connection, default 5.0.
    - ``ack_timeout``: seconds to wait for the server to acknowledge writes, default 5.0.
    """

    url: str
    bucket: str = "querysync"
    lease: float = 5.0
    history: int = 1
    replicas: int = 1
    max_bytes: int = -1
    token: str | None = field(default=None, repr=False)
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    creds: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    ack_timeout: float = 5.0

    @classmethod
    def of(cls, share: str | ShareConfig, bucket: str | None = None) -> ShareConfig:
        """``share`` as a config: a URL (its path naming the bucket) or a config as is.

        ``bucket`` (when given) wins over the URL's path and the config's own bucket.
        """
        config = share if isinstance(share, ShareConfig) else cls(url=share)
        parts = urlsplit(config.url.split(",")[0])
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigurationError(
                "a shared cache URL is nats://HOST:PORT or tls://HOST:PORT, "
                f"not {redact(config.url)!r}"
            )
        path = parts.path.strip("/")
        if path:
            config = replace(config, url=_without_path(config.url), bucket=path)
        if bucket is not None:
            config = replace(config, bucket=bucket)
        if not config.lease > 0 or not 1 <= config.history <= 64 or config.replicas < 1:
            raise ConfigurationError("lease must be positive, history 1 to 64, replicas >= 1")
        return config

    def servers(self) -> list[str]:
        """The server URLs to connect to."""
        return [u.strip() for u in self.url.split(",") if u.strip()]


def redact(url: str) -> str:
    """``url`` without its ``user:password@`` part: what logs and errors may show."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            one = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        out.append(one.strip())
    return ",".join(out)


def _without_path(url: str) -> str:
    out = []
    for one in url.split(","):
        p = urlsplit(one.strip())
        out.append(urlunsplit((p.scheme, p.netloc, "", "", "")))
    return ",".join(out)


class Bucket:
    """One connection to NATS and the JetStream KV bucket of a shared cache.

    ``on_reconnect`` callbacks run (on the loop) after every reconnection.
    """

    def __init__(
        self, config: ShareConfig, nc: Client, js: JetStreamContext, kv: KeyValue
    ) -> None:
        self.config = config
        self.nc = nc
        self.js = js
        self.kv = kv
        self.stream = f"KV_{config.bucket}"
        self.prefix = f"$KV.{config.bucket}."
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []

    @property
    def max_payload(self) -> int:
        """Bytes one message may carry (the server's ``max_payload``)."""
        return int(self.nc.max_payload)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self.nc.is_closed:
            await self.nc.close()

    async def _reconnected(self) -> None:
        log.info("reconnected to NATS at %s", redact(self.nc.connected_url.geturl()
                                                       if self.nc.connected_url else ""))
        for callback in list(self.on_reconnect):
            try:
                await callback()
            except Exception:
                log.exception("a reconnection callback failed")


async def _require_tls(servers: list[str], seconds: float) -> None:
    """Refuse tls:// servers that do not ask for TLS in their greeting.

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``; to a
    server that does not, it would send the CONNECT line, credentials included, in the
    clear, tls:// or not. So the greeting is read first, on a connection of its own.
    """
    for url in servers:
        if not url.startswith("tls://"):
            continue
        parts = urlsplit(url)
        where = redact(url)
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 4222)
                try:
                    line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise ShareConnectionError(
                f"cannot connect to NATS at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            info = json.loads(line.split(b" ", 1)[1]) if line.startswith(b"INFO ") else {}
        except (ValueError, IndexError):
            info = {}
        if not (isinstance(info, dict) and info.get("tls_required")):
            raise ShareConnectionError(
                f"cannot connect to NATS at {where}: the server does not require TLS "
                "(credentials are never sent in the clear to a tls:// URL)"
            )


async def connect_bucket(config: ShareConfig) -> Bucket:
    """Connect to NATS and open the config's bucket, creating it when missing.

    Raises :class:`ShareConnectionError` when the first connection fails (refused,
    unreachable, bad credentials): an error, not a retry loop. Once connected, a lost
    connection is retried for ever (every 0.5 s).
    """
    try:
        import nats
        import nats.errors
        import nats.js.errors
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "a shared cache needs nats-py: pip install 'querysync[nats]'"
        ) from exc

    holder: list[Bucket] = []

    async def reconnected() -> None:
        if holder:
            await holder[0]._reconnected()

    async def disconnected() -> None:
        if holder and not holder[0].nc.is_closed:  # not when closed on purpose
            log.warning("disconnected from NATS; reconnecting")

    errors: list[Exception] = []
    hopeless = asyncio.Event()  # a certificate refused: retrying cannot help

    async def error(exc: Exception) -> None:
        errors.append(exc)
        if isinstance(exc, ssl.SSLError):
            hopeless.set()
        log.warning("NATS: %s", exc)

    options: dict[str, Any] = {}
    token = config.token or os.environ.get("QUERYSYNC_NATS_TOKEN")
    user = config.user or os.environ.get("QUERYSYNC_NATS_USER")
    password = config.password or os.environ.get("QUERYSYNC_NATS_PASSWORD")
    creds = config.creds or os.environ.get("QUERYSYNC_NATS_CREDS")
    if token:
        options["token"] = token
    if user:
        options["user"] = user
        options["password"] = password or ""
    if creds:
        options["user_credentials"] = creds
    servers = config.servers()
    tls = config.tls
    if tls is None and any(s.startswith("tls://") for s in servers):
        tls = ssl.create_default_context()
    if tls is not None:
        options["tls"] = tls
    where = redact(config.url)
    if any(s.startswith("tls://") for s in servers):
        await _require_tls(servers, config.connect_timeout)
    from nats.aio.client import Client

    nc = Client()
    connecting = asyncio.ensure_future(
        nc.connect(
            servers,
            connect_timeout=max(1, round(config.connect_timeout)),
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # typed int, a float works
            # One retry per server at the first connection: a refused one is an error,
            # not a retry loop. Once connected, reconnection never gives up (below).
            max_reconnect_attempts=1,
            allow_reconnect=True,
            reconnected_cb=reconnected,
            disconnected_cb=disconnected,
            error_cb=error,
            name="querysync",
            **options,
        )
    )
    # Bounded: a TLS handshake that fails after the TCP connect is retried by nats-py
    # for ever, whatever max_reconnect_attempts says.
    given_up = asyncio.ensure_future(hopeless.wait())
    await asyncio.wait(
        {connecting, given_up},
        timeout=config.connect_timeout * 2 + 1,
        return_when=asyncio.FIRST_COMPLETED,
    )
    given_up.cancel()
    done = connecting.done()
    if not done:
        await nc.close()
        while not connecting.done():  # nats-py's connect can swallow one cancellation
            connecting.cancel()
            await asyncio.wait({connecting}, timeout=0.5)
    failure = connecting.exception() if not connecting.cancelled() else None
    if not done or failure is not None:
        cause = failure if failure is not None else (errors[-1] if errors else TimeoutError())
        raise ShareConnectionError(
            f"cannot connect to NATS at {where}: {type(cause).__name__}: {cause}"
        ) from cause
    nc.options["max_reconnect_attempts"] = -1
    try:
        js = nc.jetstream(timeout=config.ack_timeout)
        try:
            kv = await js.key_value(config.bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=config.bucket,
                history=config.history,
                replicas=config.replicas,
                max_bytes=config.max_bytes,
                description="querysync shared cache",
            )
    except BaseException as exc:
        await nc.close()
        if isinstance(exc, nats.errors.Error | asyncio.TimeoutError | OSError):
            raise ShareConnectionError(
                f"NATS at {where} has no usable JetStream bucket {config.bucket!r}: {exc}"
            ) from exc
        raise
    bucket = Bucket(config, nc, js, kv)
    holder.append(bucket)
    log.info("connected to NATS at %s, bucket %r", where, config.bucket)
    return bucket
