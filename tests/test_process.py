"""`python -m server` as a real process: start-up, a chat, SIGTERM clean-up, config errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


async def spawn(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            if proc.returncode is not None:
                raise AssertionError("server exited during start-up")
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture(params=["asyncio", "uvloop"])
async def process(
    tmp_path: Path, upstream: FakeUpstream, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m server` on asyncio's loop (the default) and on uvloop (EVENT_LOOP=uvloop)."""
    port = free_port()
    env = server_env(OPENAI_API_KEY="sk-test-secret-key", OPENAI_BASE_URL=upstream.base_url,
                     SERVER_PORT=str(port), SHUTDOWN_TIMEOUT="3", EVENT_LOOP=request.param)
    proc = await spawn(tmp_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_deletes_every_rooms_thread_and_exits_promptly(
    process: tuple[asyncio.subprocess.Process, str], upstream: FakeUpstream,
    request: pytest.FixtureRequest,
):
    proc, url = process
    alice, bob = Peer(url, "Alice"), Peer(url, "Bob")
    carol = Peer(url, "Carol", room="design")
    for peer in (alice, bob, carol):
        await peer.join()
    upstream.enqueue(Text("Hello from the subprocess", delay=0.01))
    await alice.say("hi")
    await bob.wait_for("ai-end")
    assert bob.answers()[0]["content"] == "Hello from the subprocess"
    await carol.say("hello design")
    await carol.wait_for("ai-end")
    conversations = set(upstream.conversations)
    assert len(conversations) == 2  # one thread per room
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 10)
    assert time.monotonic() - started < 10
    assert conversations <= set(upstream.deleted_conversations)
    output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "sk-test-secret-key" not in output
    assert "deleted thread" in output
    assert f"loop: {request.node.callspec.params['process']})" in output
    for peer in (alice, bob, carol):
        await peer.close()


async def test_sigint_also_cleans_up(
    process: tuple[asyncio.subprocess.Process, str], upstream: FakeUpstream
):
    proc, url = process
    alice = Peer(url, "Alice")
    await alice.join()
    for _ in range(50):
        if upstream.conversations:
            break
        await asyncio.sleep(0.05)
    [conversation] = upstream.conversations
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 10)
    assert conversation in upstream.deleted_conversations
    await alice.close()


@pytest.mark.parametrize(
    ("env", "setting"),
    [({"LLM_API": "responses"}, "OPENAI_API_KEY"),
     ({"OPENAI_API_KEY": "k", "SERVER_PORT": "eighty"}, "SERVER_PORT"),
     ({"OPENAI_API_KEY": "k", "ROOMS_FILE": "no-such-rooms.toml"}, "no-such-rooms.toml")],
)
async def test_bad_configuration_stops_start_up_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], setting: str
):
    proc = await spawn(tmp_path, server_env(**env))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and setting in lines[0], lines


async def test_asking_for_uvloop_without_it_installed_is_one_clear_line(tmp_path: Path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text('raise ImportError("uvloop is not here")\n')
    env = server_env(OPENAI_API_KEY="k", EVENT_LOOP="uvloop")
    env["PYTHONPATH"] = f"{shadow}{os.pathsep}{env['PYTHONPATH']}"
    proc = await spawn(tmp_path, env)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and "EVENT_LOOP" in lines[0] and "pip install uvloop" in lines[0]


async def started(tmp_path: Path, upstream: FakeUpstream, **env: str) -> tuple[
        asyncio.subprocess.Process, str]:
    port = free_port()
    proc = await spawn(tmp_path, server_env(
        OPENAI_API_KEY="k", OPENAI_BASE_URL=upstream.base_url, SERVER_PORT=str(port),
        SHUTDOWN_TIMEOUT="3", **env))
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, proc)
    return proc, url


@pytest.mark.parametrize(("drain", "complete"), [("10", True), ("0.3", False)])
async def test_sigterm_lets_the_answer_in_flight_finish_within_drain_timeout(
    tmp_path: Path, upstream: FakeUpstream, drain: str, complete: bool
):
    """SIGTERM closes the listening port at once; the answer streaming then finishes (or, past
    DRAIN_TIMEOUT, is cut short with a notice and kept as incomplete) before the server exits."""
    proc, url = await started(tmp_path, upstream, DRAIN_TIMEOUT=drain)
    try:
        alice = Peer(url, "Alice")
        await alice.join()
        text = " ".join(f"w{i}" for i in range(30))
        upstream.enqueue(Text(text, delay=0.05))
        await alice.say("a long one")
        await alice.wait_for("message-delta")
        proc.send_signal(signal.SIGTERM)
        await alice.wait_for("ai-end", timeout=15)
        [answer] = alice.answers()
        if complete:
            assert answer["content"] == text and "incomplete" not in answer
        else:
            assert answer.get("incomplete") is True and text.startswith(answer["content"])
            [notice] = [m for m in alice.of("message") if m["role"] == "system"]
            assert "restarting" in notice["content"]
        await asyncio.wait_for(proc.wait(), 15)
        assert proc.returncode == 0
        assert list(upstream.conversations) == []  # the thread was deleted
        await alice.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
