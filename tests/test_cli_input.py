"""The command line's input: checked up front, one line and the right exit status, no traceback.

Each case here gave a traceback, or ran on, before the arguments were checked at parse
time (issue 12 item 7); --version, --help, --server and the environment (issue 13).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
from test_cli_commands import ENV, QUERYSYNC

from querysync import __version__
from querysync.cli import main
from querysync.cli._args import resolve_endpoints
from querysync.sinks import QueryCache

WS, API = "ws://127.0.0.1:9/ws", "http://127.0.0.1:9"

USAGE_ERRORS: dict[str, list[str]] = {
    "ws-bad-ipv6": ["sync", "--ws", "ws://[::1", "--api", API, "--cache", "c"],
    "ws-port-too-big": ["sync", "--ws", "ws://127.0.0.1:70000/ws", "--api", API, "--cache", "c"],
    "ws-port-negative": ["tail", "--ws", "ws://127.0.0.1:-1/ws"],
    "ws-not-a-url": ["tail", "--ws", "not-a-url"],
    "ws-no-host": ["tail", "--ws", "ws:///ws"],
    "api-scheme": ["sync", "--ws", WS, "--api", "ftp://127.0.0.1", "--cache", "c"],
    "api-bad-ipv6": ["sync", "--ws", WS, "--api", "http://[::1", "--cache", "c"],
    "api-not-a-url": ["sync", "--ws", WS, "--api", "127.0.0.1:7777", "--cache", "c"],
    "api-port": ["sync", "--ws", WS, "--api", "http://127.0.0.1:99999", "--cache", "c"],
    "server-bad": ["sync", "--server", "http://[::1", "--cache", "c"],
    "no-endpoints": ["sync", "--cache", "c"],
    "no-api": ["sync", "--ws", WS, "--cache", "c"],
    "sync-window-negative": ["sync", "--ws", WS, "--api", API, "--cache", "c", "--window", "-1"],
    "sync-every-zero": ["sync", "--ws", WS, "--api", API, "--cache", "c", "--every", "0"],
    "serve-port-too-big": ["serve", "--port", "65536"],
    "serve-port-negative": ["serve", "--port", "-1"],
    "serve-port-not-a-number": ["serve", "--port", "http"],
    "demo-rate-zero": ["demo", "--rate", "0"],
    "demo-rate-nan": ["demo", "--rate", "nan"],
    "demo-seconds-negative": ["demo", "--seconds", "-1"],
    "demo-seconds-inf": ["demo", "--seconds", "inf"],
    "demo-window-negative": ["demo", "--window", "-0.5"],
    "demo-seed-text": ["demo", "--seed", "one"],
    "no-command": [],
    "unknown-command": ["mirror-everything"],
    "unknown-flag": ["inspect", "x", "--colour"],
}


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    assert err.startswith("querysync"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv", list(USAGE_ERRORS.values()), ids=list(USAGE_ERRORS))
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUERYSYNC_SERVER", raising=False)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    one_line(err)


def test_a_bad_server_from_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYSYNC_SERVER", "ws://[::1")
    assert main(["tail"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "$QUERYSYNC_SERVER" in err


def test_a_key_that_is_not_one_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path), '["workflow", {"id": 1}]']) == 2
    one_line(capsys.readouterr().err)


def test_a_recording_that_cannot_be_written_is_a_runtime_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no-such-folder" / "feed.jsonl"
    assert main(["tail", "--ws", WS, "--record", str(target)]) == 1
    err = one_line(capsys.readouterr().err)
    assert str(target) in err


def test_bad_input_in_a_real_process_prints_no_traceback() -> None:
    # In-process, a traceback would be an exception; a process must also keep it off stderr.
    done = subprocess.run(
        [str(QUERYSYNC), "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "65535" in one_line(done.stderr)


# -- --version and --help --------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"querysync {__version__}\n"


@pytest.mark.parametrize("command", ["demo", "sync", "tail", "inspect", "serve"])
def test_each_command_has_a_description_an_example_and_its_defaults(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example:\n  querysync " in text
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: querysync {command}")
    assert len(description.split()) >= 5
    assert max(map(len, text.splitlines())) <= 80
    flattened = " ".join(text.split())
    defaults = {
        "demo": ["(default: 6.0)", "(default: 150.0)", "(default: 0.25)"],
        "sync": ["(default: 0.25)", "(default: 5.0)", "$QUERYSYNC_TOKEN", "$QUERYSYNC_SERVER"],
        "tail": ["$QUERYSYNC_TOKEN", "$QUERYSYNC_SERVER"],
        "inspect": [],
        "serve": ["(default: 127.0.0.1)", "(default: 7777)", "$QUERYSYNC_TOKEN"],
    }[command]
    for default in defaults:
        assert default in flattened, (default, text)


# -- inspect: one entry, a prefix, 80 columns, a closed pipe ---------------------------

LONG_ID = "wf-" + "0123456789abcdef" * 3  # 51 characters: a table at 80 columns once cut it


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    with QueryCache(directory) as cache:
        cache.set(("workflow", LONG_ID), {"id": LONG_ID, "name": "ünïcode"}, etag="Z" * 40)
        cache.set(("workflow", "short"), {"id": "short"}, etag="e2")
        cache.set(("workflows",), {"workflows": [{"id": LONG_ID}], "next": None})
        cache.set(("page", 2), [1, 2, 3])
        cache.flush()
    return directory


def test_inspect_key_prints_that_entrys_data(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(["inspect", str(cache_dir), "workflow", LONG_ID]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": LONG_ID, "name": "ünïcode"}
    assert main(["inspect", str(cache_dir), '["page", 2]', "--json"]) == 0
    assert capsys.readouterr().out == "[1, 2, 3]\n"
    assert main(["inspect", str(cache_dir), "workflow", "missing"]) == 1
    assert "no entry for" in one_line(capsys.readouterr().err)


def test_inspect_prefix_lists_only_the_entries_under_it(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(["inspect", str(cache_dir), "--prefix", "workflow", "--json"]) == 0
    keys = [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(keys) == [["workflow", "short"], ["workflow", LONG_ID]]


@pytest.mark.parametrize("columns", [80, 120])
def test_inspect_fits_the_terminal_and_cuts_no_key(
    columns: int,
    cache_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["inspect", str(cache_dir)]) == 0
    table = capsys.readouterr().out
    assert "4 entries" in table
    assert max(map(len, table.splitlines())) <= columns
    for key in (f'["workflow", "{LONG_ID}"]', '["workflow", "short"]', '["page", 2]'):
        assert key in table
    assert "…" not in table
    assert table.count("Z") == 40  # the etag may fold, never end in "…"


def test_inspect_into_a_closed_pipe_is_quiet(cache_dir: Path) -> None:
    with QueryCache(cache_dir) as cache:
        for n in range(3000):
            cache.set(("job", f"job-{n:05}"), {"n": n})
        cache.flush()
    # `| head -1`: the reader leaves after one line, long before the listing ends.
    inspect = subprocess.Popen(
        [str(QUERYSYNC), "inspect", str(cache_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert inspect.stdout is not None
    assert inspect.stderr is not None
    assert inspect.stdout.readline().startswith(b'{"key": ')
    inspect.stdout.close()
    status = inspect.wait(timeout=30)
    err = inspect.stderr.read().decode()
    inspect.stderr.close()
    assert err == ""
    assert status == 0


@pytest.mark.parametrize(
    ("server", "ws", "api"),
    [
        ("http://127.0.0.1:7777", "ws://127.0.0.1:7777/ws", "http://127.0.0.1:7777"),
        ("https://example.org/", "wss://example.org/ws", "https://example.org"),
        ("http://h:1/nodetool/", "ws://h:1/nodetool/ws", "http://h:1/nodetool"),
        ("ws://h:1", "ws://h:1/ws", "http://h:1"),
    ],
)
def test_server_derives_both_urls_and_explicit_flags_win(server: str, ws: str, api: str) -> None:
    parser = argparse.ArgumentParser()
    args = argparse.Namespace(server=server, ws=None, api=None)
    resolve_endpoints(args, parser, need_api=True, environ={})
    assert (args.ws, args.api) == (ws, api)
    args = argparse.Namespace(server=None, ws="ws://other:2/feed", api=None)
    resolve_endpoints(args, parser, need_api=True, environ={"QUERYSYNC_SERVER": server})
    assert (args.ws, args.api) == ("ws://other:2/feed", api)
