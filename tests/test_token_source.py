"""Token sources: a fixed string, callables (plain and async), a token file, a token command."""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
from pathlib import Path

import pytest

from querysync import ConfigurationError, TokenSourceError
from querysync._redact import redact
from querysync._token import TokenCommand, TokenFile, TokenProvider


async def test_a_string_is_fixed_and_never_asked_again() -> None:
    provider = TokenProvider("s3cret-fixed")
    assert provider.fixed
    assert await provider.current() == "s3cret-fixed"
    assert await provider.refresh("s3cret-fixed") == "s3cret-fixed"
    assert provider.counts["asks"] == 0
    assert "s3cret" not in repr(provider)


async def test_no_token_is_none() -> None:
    provider = TokenProvider(None)
    assert provider.fixed
    assert await provider.current() is None


async def test_a_plain_callable_runs_off_the_loop_and_is_cached_until_refresh() -> None:
    threads: list[int] = []
    answers = iter(["tok-one", "tok-two"])

    def source() -> str:
        threads.append(threading.get_ident())
        return next(answers)

    provider = TokenProvider(source)
    assert not provider.fixed
    assert await provider.current() == "tok-one"
    assert await provider.current() == "tok-one"
    assert provider.counts["asks"] == 1
    assert await provider.refresh() == "tok-two"
    assert provider.counts["asks"] == 2
    assert threading.get_ident() not in threads  # a blocking source never holds the loop


async def test_an_async_callable_is_awaited_on_the_loop() -> None:
    calls = 0

    async def source() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return f"  async-tok-{calls}\n"

    provider = TokenProvider(source)
    assert await provider.current() == "async-tok-1"  # trimmed
    assert await provider.refresh() == "async-tok-2"


async def test_concurrent_refreshes_after_one_rejection_ask_once() -> None:
    calls = 0
    gate = asyncio.Event()

    async def source() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return f"tok-{calls}"

    provider = TokenProvider(source)
    first = asyncio.ensure_future(provider.current())
    await asyncio.sleep(0)
    gate.set()
    assert await first == "tok-1"
    gate.clear()
    # Twenty fetches answered 401 for tok-1 at the same moment: one call serves them.
    waiting = [asyncio.ensure_future(provider.refresh("tok-1")) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {"tok-2"}
    assert calls == 2
    # A late 401 for the old token takes the new one without asking again.
    assert await provider.refresh("tok-1") == "tok-2"
    assert calls == 2


@pytest.mark.parametrize("bad", ["raises", "empty", "not-a-string", "slow"])
async def test_a_failing_source_is_a_counted_token_source_error_and_keeps_the_last_token(
    bad: str,
) -> None:
    calls = 0

    async def source() -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            return "good-token"
        if bad == "raises":
            raise RuntimeError("keyring locked")
        if bad == "slow":
            await asyncio.sleep(10)
        return "" if bad == "empty" else 42

    provider = TokenProvider(source, timeout=0.2)  # type: ignore[arg-type]
    assert await provider.current() == "good-token"
    with pytest.raises(TokenSourceError) as raised:
        await provider.refresh()
    assert provider.counts["errors"] == 1
    assert await provider.current() == "good-token"
    if bad == "raises":
        assert "keyring locked" in str(raised.value)
    # The source can be asked again after a failure.
    with pytest.raises(TokenSourceError):
        await provider.refresh()
    assert provider.counts["errors"] == 2


def test_a_source_that_is_no_token_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        TokenProvider(42)  # type: ignore[arg-type]


async def test_a_token_file_is_read_again_at_each_ask(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("file-token-1\n")
    provider = TokenProvider(TokenFile(path))
    assert await provider.current() == "file-token-1"
    path.write_text("file-token-2\n")
    assert await provider.current() == "file-token-1"  # cached until asked again
    assert await provider.refresh() == "file-token-2"
    path.write_text("   \n")
    with pytest.raises(TokenSourceError, match="is empty"):
        await provider.refresh()
    path.unlink()
    with pytest.raises(TokenSourceError, match="cannot read the token file"):
        await provider.refresh()
    assert "file-token" not in repr(TokenFile(path))


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


async def test_a_token_command_gives_its_trimmed_output() -> None:
    command = TokenCommand(python("print('  cmd-token-xyz  ')"))
    assert await command() == "cmd-token-xyz"


async def test_a_failing_token_command_names_its_status_and_last_error_line() -> None:
    # The output is put together at run time, so it is not in the command's text.
    code = "import sys; print('cmd-' + 'secret-out'); sys.stderr.write('one\\nno such vault\\n');"
    command = TokenCommand(python(code + " sys.exit(3)"))
    with pytest.raises(TokenSourceError) as raised:
        await command()
    message = str(raised.value)
    assert "exited with status 3: no such vault" in message
    assert "cmd-secret-out" not in message
    assert "\n" not in message


async def test_a_hung_token_command_is_killed_at_its_timeout() -> None:
    command = TokenCommand(python("import time; time.sleep(30)"), timeout=0.3)
    with pytest.raises(TokenSourceError, match=r"gave no token within 0\.3 s"):
        await command()


async def test_a_token_command_that_prints_nothing_is_an_error() -> None:
    with pytest.raises(TokenSourceError, match="printed no token"):
        await TokenCommand(python("pass"))()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("ws://user:SECRET-pw@host:7777/ws", "SECRET-pw"),
        ("ws://TOKEN-as-user@host/ws", "TOKEN-as-user"),
        ("GET http://h/ws?client=x&api_key=SECRET-q", "SECRET-q"),
        ("{'Authorization': 'Bearer SECRET-hdr'}", "SECRET-hdr"),
        ("Authorization: Basic SECRET-basic", "SECRET-basic"),
        ('{"token": "SECRET-json"}', "SECRET-json"),
        ("password=SECRET-pass;", "SECRET-pass"),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_removes_known_tokens_anywhere_and_keeps_plain_text() -> None:
    assert redact("got abcd-1234-token back", ["abcd-1234-token"]) == "got *** back"
    plain = "WebSocket ws://127.0.0.1:7777/ws: close code 1008: Token expired"
    assert redact(plain) == plain
