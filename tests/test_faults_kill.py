"""A process killed with SIGKILL during heavy writes, ten times in a row on one directory.

Each round a child process opens the same cache directory and writes as fast as it can:
sets of small and large values (some large enough to live in their own files),
invalidations that rewrite rows, removals, and a log of keys it has flushed. It is
killed at a random moment: sometimes while opening, mostly in the middle of writing.
After every kill the cache must open, every entry it holds must be one that was written
whole (each value carries a checksum of itself), and everything the child had flushed
before the kill must still be there.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support import obj

from querysync.sinks import QueryCache

ROUNDS = 10

_CHILD = textwrap.dedent(
    """
    import hashlib, json, random, sys
    from querysync.sinks import QueryCache

    directory, round_, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)

    def sealed(key, n, size):
        body = {"key": list(key), "n": n, "round": round_, "pad": "p" * size}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return {**body, "sha": digest}

    if sys.stdin.readline().strip() != "go":  # imported already; open when told to
        sys.exit(0)
    cache = QueryCache(directory, batch_size=rng.choice([1, 20, 500]))
    print("open", flush=True)
    n = logs = 0
    while True:
        n += 1
        op = rng.random()
        key = ("item", rng.randrange(300))
        if op < 0.7:
            size = rng.choice([10, 2000, 40000, 90000])  # 40 KB and up: a value file
            cache.set(key, sealed(key, n, size))
        elif op < 0.85:
            cache.invalidate(key)  # rewrites the row with the stale flag
        elif op < 0.9:
            cache.remove(key)
        else:
            log = ("log", round_, n)
            cache.set(log, sealed(log, n, 100))
            logs += 1
        if n % 150 == 0:
            cache.flush()  # blocks until written: whatever was logged before is durable
            print("flushed", n, logs, flush=True)
    """
)


def digest(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "sha"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def spawn(script: Path, directory: Path, round_: int, seed: int) -> subprocess.Popen[str]:
    # The child imports the installed querysync: run from the checkout, it would find the
    # source folder first, where querysync.sinks does not exist.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen(
        [sys.executable, str(script), str(directory), str(round_), str(seed)],
        cwd=script.parent,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Rounds:
    """What the kills left, round after round."""

    seed: int
    survived: int = 0
    checked: int = 0
    # Per round: the last n it acknowledged as flushed and how many log keys it had
    # written by then; log keys are never removed, so all of them must stay.
    durable: dict[int, tuple[int, int]] = field(default_factory=dict)


def kill_one(proc: subprocess.Popen[str], round_: int, rng: random.Random, where: str) -> str:
    """Let the child open the cache and write, kill it at a random moment; its output."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen = ""
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen = proc.stdout.readline()
        assert seen == "open\n", (where, seen, proc.stderr and proc.stderr.read())
        if round_ % 4 != 1:
            # Mostly in the middle of heavy writing: after a first flush, at a random
            # moment; one round in four right after opening.
            seen += proc.stdout.readline()
            assert "flushed" in seen, (where, seen)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(0.0, 0.02))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, where
    return seen + out


def check_after_kill(directory: Path, rounds: Rounds, where: str) -> None:
    """The cache opens, holds only entries written whole, and kept every flushed log key."""
    with QueryCache(directory) as cache:
        stats = cache.stats()
        assert (stats["corrupt_rows"], stats["unsafe_rows"]) == (0, 0), where
        for key in cache:
            entry = cache.get(key)
            assert entry is not None, (where, key)
            data = entry.data
            assert obj(data)["sha"] == digest(obj(data)), (where, key)
            assert tuple(obj(data)["key"]) == key, (where, key)
            rounds.checked += 1
        for past, (last, logs) in rounds.durable.items():
            kept = [k for k in cache.keys(("log", past)) if int(str(k[2])) <= last]
            assert len(kept) == logs, (where, past)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_ten_kills_in_a_row_leave_a_cache_that_opens_with_only_whole_entries(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    rounds = Rounds(seed=random.SystemRandom().randrange(2**32))
    rng = random.Random(rounds.seed)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    directory = tmp_path / "cache"
    # Each child is started while the one before runs: it imports meanwhile, and opens
    # the cache only when told to, once the one before is dead and its cache checked.
    children = [spawn(script, directory, 0, rng.randrange(2**32))]
    try:
        for round_ in range(ROUNDS):
            where = f"seed {rounds.seed}, round {round_}"
            if round_ + 1 < ROUNDS:
                children.append(spawn(script, directory, round_ + 1, rng.randrange(2**32)))
            output = kill_one(children[round_], round_, rng, where)
            acks = [x.split() for x in output.splitlines() if x.startswith("flushed")]
            rounds.durable[round_] = max(
                ((int(a[1]), int(a[2])) for a in acks), default=(0, 0)
            )
            check_after_kill(directory, rounds, where)
            rounds.survived += 1
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=30)

    # One last open that writes: the directory is still a working cache.
    with QueryCache(directory) as cache:
        cache.set(("after",), {"ok": True})
    with QueryCache(directory) as cache:
        after = cache.get(("after",))
        assert after is not None
        assert after.data == {"ok": True}
    assert rounds.survived == ROUNDS
    record_property("kills_survived", rounds.survived)
    record_property("entries_checked_after_kills", rounds.checked)
    record_property("kill_seed", rounds.seed)
