"""``querysync demo``: an embedded server, a workload and a synced cache that must agree."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from querysync._audit import Agreement, audit
from querysync._keys import KeyRegistry, QueryKey, nodetool_registry
from querysync._nodetool import LIST_KEYS
from querysync._sync import Sync, mirrored_keys, sync
from querysync.server import NodeToolServer, Workload, WorkloadReport

from ._signals import Stop, stop_on_signals
from ._view import counters_line, counters_table

__all__ = ["expected_keys", "run_demo"]


def expected_keys(
    snapshot: Mapping[str, Mapping[str, object]], registry: KeyRegistry | None = None
) -> Iterator[QueryKey]:
    """What mirror mode promises to hold: every list, and each live resource's own keys."""
    reg = registry if registry is not None else nodetool_registry()
    yield from LIST_KEYS
    for resource_type, resources in snapshot.items():
        for resource_id in resources:
            yield from mirrored_keys(reg, resource_type, resource_id)


def _summary(
    agreement: Agreement, report: WorkloadReport, counts: dict[str, int], seconds: float
) -> Table:
    table = Table(title="querysync demo: summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "workload writes (created/updated/deleted)",
        (f"{report.created}/{report.updated}/{report.deleted}"),
    )
    table.add_row("frames received", f"{counts.get('source.frames', 0):,}")
    table.add_row("resource changes", f"{counts.get('resource_changes', 0):,}")
    table.add_row("coalesced by the throttle", f"{counts.get('coalesced', 0):,}")
    table.add_row("invalidations applied", f"{counts.get('invalidations', 0):,}")
    table.add_row("skipped, already fresh", f"{counts.get('cache.skipped_fresh', 0):,}")
    table.add_row("refetches", f"{counts.get('cache.fetched', 0):,}")
    table.add_row("fetch failures", f"{counts.get('cache.fetch_failed', 0):,}")
    table.add_row("gone on refetch (404, removed)", f"{counts.get('cache.fetch_gone', 0):,}")
    table.add_row("cache entries checked against the server", f"{agreement.checked:,}")
    table.add_row("disagreements", f"{len(agreement.disagreements):,}")
    table.add_row("elapsed", f"{seconds:.1f} s")
    verdict = "[green]AGREE[/green]" if agreement.ok else "[red]DISAGREE[/red]"
    table.add_row("cache vs server", verdict)
    return table


async def run_demo(args: argparse.Namespace, status: Console) -> int:
    """Run the demo; 0 only when every cached entry agrees with the server (130 after SIGINT).

    The summary goes to stdout; the live view (on a terminal, without ``--no-live``) or
    else a progress line every ``args.every`` seconds goes to ``status``.
    """
    console = Console()
    started = time.monotonic()
    live_view = not args.no_live and status.is_terminal
    with tempfile.TemporaryDirectory(prefix="querysync-demo-") as tmp:
        async with NodeToolServer() as server:
            console.print(f"embedded NodeTool server on {server.api_url}; cache in {tmp}")
            running = await sync(
                server.ws_url, server.api_url, Path(tmp) / "cache", window=args.window
            )
            try:
                async with asyncio.timeout(10):
                    await server.wait_for_connections(1)
                report, agreement, stop = await _drive(running, server, args, status, live_view)
            finally:
                await running.stop()
            counts = running.counts()
    console.print(_summary(agreement, report, counts, time.monotonic() - started))
    for problem in agreement.disagreements[:20]:
        console.print(f"  [red]{list(problem.key)}[/red]: {problem.problem}")
    return stop.status(0 if agreement.ok else 1)


def _progress(console: Console) -> Progress:
    """The workload's progress bar, with the time left; drawn inside the live view."""
    return Progress(
        TextColumn("workload"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s, {task.fields[left]:.1f} s left"),
        console=console,
        auto_refresh=False,
    )


async def _drive(
    running: Sync,
    server: NodeToolServer,
    args: argparse.Namespace,
    console: Console,
    live_view: bool,
) -> tuple[WorkloadReport, Agreement, Stop]:
    workload = Workload(server, seed=args.seed)
    task = asyncio.ensure_future(workload.run(seconds=args.seconds, rate=args.rate, kind="mixed"))
    live = Live(console=console, refresh_per_second=4) if live_view else None
    progress = _progress(console)
    bar = progress.add_task("workload", total=args.seconds, left=args.seconds)
    began = time.monotonic()
    next_line = began + args.every
    with stop_on_signals() as stop, live if live is not None else contextlib.nullcontext():
        while not task.done():
            if stop.is_set():
                workload.stop()
            await asyncio.wait({task}, timeout=0.25)
            elapsed = min(time.monotonic() - began, args.seconds)
            left = max(args.seconds - elapsed, 0.0)
            progress.update(bar, completed=elapsed, left=left)
            if live is not None:
                live.update(
                    Group(
                        counters_table(
                            running.counts(),
                            title="querysync demo: live",
                            state=str(running.source.state),
                        ),
                        f"server: {server.counts['resource_changes']:,} changes announced",
                        progress,
                    )
                )
            elif time.monotonic() >= next_line and not task.done():
                next_line = time.monotonic() + args.every
                console.print(
                    f"workload {elapsed:.1f}/{args.seconds:.1f} s, {left:.1f} s left; "
                    + counters_line(running.counts(), state=str(running.source.state)),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
    report = task.result()
    console.print(
        f"workload done: {report.changes:,} writes in {report.elapsed:.1f} s; "
        "waiting for the cache to settle"
    )
    async with asyncio.timeout(60):
        await running.settle()
    agreement = await audit(running.cache, running.api, expect=expected_keys(server.snapshot()))
    return report, agreement, stop
