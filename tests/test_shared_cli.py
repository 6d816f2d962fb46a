"""The shared-cache command line: inspect nats://, mirror, refused connections, credentials.

Plus the promise that a process without --share never imports nats.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _nats_server import NatsServer
from _shared_support import spawn, spawn_mirror, start_publisher

from querysync.server import NodeToolServer, Workload
from querysync.sinks import QueryCache
from querysync.testing import free_port


def querysync_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "querysync", *args],
        capture_output=True, text=True, timeout=60, env=clean, cwd="/",
    )


def without_age(out: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in out.splitlines()]
    for row in rows:
        assert isinstance(row.pop("age"), float | int)
    return rows


async def test_inspect_lists_a_bucket_exactly_as_the_publishers_folder_and_mirror_keeps_one(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    running = await start_publisher(server, nats_server.url, tmp_path / "pub")
    mirror = await spawn_mirror(tmp_path, nats_server.url, tmp_path / "m")
    try:
        await mirror.wait_line("mirroring")
        await Workload(server, seed=5).run(seconds=0.5, rate=200, kind="mixed")
        async with asyncio.timeout(20):
            await running.settle()
    finally:
        await running.stop()  # flushes the folder and publishes what is pending
    try:
        bucket = await asyncio.to_thread(
            querysync_cli, "inspect", f"{nats_server.url}/t", "--json"
        )
        assert bucket.returncode == 0, bucket.stderr
        folder = await asyncio.to_thread(querysync_cli, "inspect", str(tmp_path / "pub"), "--json")
        assert folder.returncode == 0, folder.stderr
        rows = without_age(bucket.stdout)
        assert len(rows) > 5
        assert rows == without_age(folder.stdout)
        # The mirror's folder holds the same keys, states and etags.
        async with asyncio.timeout(15):
            while True:
                with QueryCache(tmp_path / "m") as mirrored:
                    view = sorted(
                        ([list(k), e.etag, e.stale] for k in mirrored if (e := mirrored.get(k))),
                        key=repr,
                    )
                if view == sorted(([r["key"], r["etag"], r["stale"]] for r in rows), key=repr):
                    break
                await asyncio.sleep(0.2)
        table = await asyncio.to_thread(querysync_cli, "inspect", f"{nats_server.url}/t")
        assert table.returncode == 0
        assert f"{len(rows)} entries" in table.stdout
    finally:
        assert await mirror.stop() == 0


def test_a_refused_nats_connection_is_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    for args in (
        ["inspect", f"{url}/t", "--json"],
        ["mirror", f"{url}/t", "--cache", str(tmp_path / "m")],
        ["sync", "--ws", "ws://127.0.0.1:1/ws", "--api", "http://127.0.0.1:1",
         "--cache", str(tmp_path / "c"), "--share", url, "--no-live"],
    ):
        done = querysync_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "cannot connect to NATS" in done.stderr
        assert "Traceback" not in done.stderr


def test_credentials_are_used_and_never_shown(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "nats", extra=["--user", "qs", "--pass", "s3cret-Pw"])
    nats.start()
    try:
        host = f"127.0.0.1:{nats.port}"
        wrong = querysync_cli("-vv", "inspect", f"nats://qs:wrong-Pw@{host}/t", "--json")
        assert wrong.returncode == 2
        assert "wrong-Pw" not in wrong.stderr + wrong.stdout
        in_url = querysync_cli("-vv", "inspect", f"nats://qs:s3cret-Pw@{host}/t", "--json")
        assert in_url.returncode == 0, in_url.stderr
        assert "s3cret-Pw" not in in_url.stderr + in_url.stdout
        env = {**os.environ, "QUERYSYNC_NATS_USER": "qs", "QUERYSYNC_NATS_PASSWORD": "s3cret-Pw"}
        from_env = querysync_cli("-vv", "inspect", f"nats://{host}/t", "--json", env=env)
        assert from_env.returncode == 0, from_env.stderr
        assert "s3cret-Pw" not in from_env.stderr + from_env.stdout
    finally:
        nats.stop()


async def test_a_standby_sync_share_process_stops_cleanly_on_sigterm(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    running = await start_publisher(server, nats_server.url, tmp_path / "pub", lease=5.0)
    try:
        child = await spawn(
            tmp_path, "sync", "--ws", server.ws_url, "--api", server.api_url,
            "--cache", str(tmp_path / "standby"), "--share", nats_server.url, "--bucket", "t",
            "--no-live",
        )
        await child.wait_line("standby")
        assert server.connections == 1
        assert await child.stop() == 0
        assert not child.has_line("active")
    finally:
        await running.stop()


def test_sync_without_share_never_imports_nats(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        import querysync, querysync.sinks, querysync.cli
        from querysync.server import NodeToolServer

        async def main():
            async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
                running = await querysync.sync(server.ws_url, server.api_url, sys.argv[1])
                async with running:
                    server.create("workflow", {"name": "w", "access": "private",
                                               "graph": {"nodes": [], "edges": []}})
                    await asyncio.wait_for(running.settle(), 20)
                    assert len(running.cache) > 1
            print(sorted(m for m in sys.modules if m == "nats" or m.startswith("nats.")))

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c")],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


async def test_a_tls_url_connects_to_a_tls_server_and_a_plain_one_refuses_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    import ssl

    from querysync.sinks import ShareConfig, ShareConnectionError, SharedCache

    cert, key = self_signed(tmp_path)
    secure = NatsServer(
        tmp_path / "tls", extra=["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    )
    secure.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        config = ShareConfig(f"tls://127.0.0.1:{secure.port}", bucket="t", tls=context)
        async with SharedCache(config) as cache:
            assert len(cache) == 0
        # Without the certificate's authority the connection is refused, not retried.
        refused = await asyncio.to_thread(
            querysync_cli, "inspect", f"tls://127.0.0.1:{secure.port}/t", "--json"
        )
        assert refused.returncode == 2, refused.stderr
        assert "cannot connect to NATS" in refused.stderr
    finally:
        secure.stop()
    # A tls:// URL to a server without TLS fails cleanly too.
    with pytest.raises(ShareConnectionError, match="cannot connect to NATS"):
        async with SharedCache(f"tls://127.0.0.1:{nats_server.port}", bucket="t"):
            pass
