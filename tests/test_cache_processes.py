"""Several processes on one cache directory, and a process killed in the middle of writing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _support import obj

from querysync.sinks import QueryCache

# The children import the installed querysync; running them from the checkout would
# import the source folder instead, where querysync.sinks does not exist.
_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from querysync.sinks import QueryCache

    directory, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    while not os.path.exists(go):
        time.sleep(0.005)
    with QueryCache(directory, batch_size=20) as cache:
        for i in range(count):
            cache.set((name, i), {"writer": name, "i": i})
            cache.set(("shared",), {"last": name})
            if i % 25 == 0:
                cache.invalidate((name,))
                cache.flush()
    """
)

_KILLED = textwrap.dedent(
    """
    import hashlib, sys
    from querysync.sinks import QueryCache

    def payload(i):
        body = ("%06d" % i) * (8000 if i % 10 == 0 else 40)  # every 10th is a 48 KB file
        return {"i": i, "body": body, "sha": hashlib.sha256(body.encode()).hexdigest()}

    cache = QueryCache(sys.argv[1], batch_size=2000)
    for i in range(200):
        cache.set(("item", i), payload(i))
    cache.flush()
    i = 200
    while True:
        for _ in range(2000):
            cache.set(("item", i), payload(i))
            i += 1
        if i == 2200:
            print("ready", flush=True)
        # Bounded memory: the writer thread is busy with a 2000-row transaction
        # nearly all the time, which is where the kill lands.
        cache.flush()
    """
)


def _spawn(tmp_path: Path, script: str, *args: str) -> subprocess.Popen[str]:
    path = tmp_path / ("writer.py" if script is _WRITER else "killed.py")
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_writing_one_directory_lose_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    go = tmp_path / "go"
    count = 300
    writers = [
        _spawn(tmp_path, _WRITER, str(directory), name, str(count), str(go)) for name in "ab"
    ]
    go.touch()
    for proc in writers:
        _, err = proc.communicate(timeout=50)
        assert proc.returncode == 0, err
    with QueryCache(directory) as cache:
        for name in "ab":
            keys = cache.keys((name,))
            assert sorted(k[1] for k in keys) == list(range(count))  # type: ignore[type-var]
            entry = cache.get((name, count - 1))
            assert entry is not None
            assert entry.data == {"writer": name, "i": count - 1}
        shared = cache.get(("shared",))
        assert shared is not None
        assert obj(shared.data)["last"] in ("a", "b")
        assert cache.stats()["corrupt_rows"] == 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_while_writing_leaves_a_readable_cache(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    proc = _spawn(tmp_path, _KILLED, str(directory))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with QueryCache(directory) as cache:
        keys = cache.keys(("item",))
        numbers = sorted(k[1] for k in keys)  # type: ignore[type-var]
        assert numbers[:200] == list(range(200))
        for key in keys:
            entry = cache.get(key)
            assert entry is not None
            data = entry.data
            assert obj(data)["i"] == key[1]
            assert hashlib.sha256(obj(data)["body"].encode()).hexdigest() == obj(data)["sha"]
        stats = cache.stats()
        assert (stats["corrupt_rows"], stats["unsafe_rows"]) == (0, 0)
        cache.set(("after",), 1)
    with QueryCache(directory) as cache:
        assert cache.get(("after",)) is not None
