"""Nothing lost, nothing stuck: provider faults, retries, stop, leaving, shutdown, reconnects.

Every test runs against each provider API (Responses, Assistants, Chat Completions) with the
fake upstream scripting the fault. What every fault must look like to the room: one clear
system notice, the partial answer kept and marked `incomplete`, `ai-end` for everyone, the lock
released, and the next message answered normally.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.app import PROVIDER_KEY, SERVICE_KEY, SIO_KEY
from server.providers.chat import ChatProvider
from tests.conftest import RunningServer, StartServer, free_port
from tests.fake_upstream import CutStream, FakeUpstream, HTTPError, Malformed, Stall, Text
from tests.fake_upstream.script import Reply, split_words
from tests.test_process import server_env, spawn, wait_healthy
from tests.threads import LLM_APIS, deleted_threads, live_threads
from tests.tools_for_tests import (
    ChatStreamWatch,
    Crowd,
    Person,
    WirePeer,
    slow_upstream_cancel,
    system_notices,
    upstream_settled,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

ANSWER = "The quick brown fox jumps over the lazy dog and then runs far away."
LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(params=LLM_APIS)
def llm_api(request: pytest.FixtureRequest) -> str:
    """Every fault is handled the same way whatever the provider API."""
    return str(request.param)


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Factory for people on any server: `crowd(server, name, user_id=None)`."""
    made = Crowd()
    yield made
    await made.close()


async def room_of(crowd: Crowd, server: RunningServer, *names: str) -> list[Person]:
    return await crowd.room(server, *names)


def prefix(text: str, chunks: int) -> str:
    return "".join(split_words(text)[:chunks])


def notice_before_unlock(peer: Person) -> bool:
    """The system notice arrived before the turn's `ai-end` (clients learn why first)."""
    kinds = ["notice" if e == "message" and d["role"] == "system" else e for e, d in peer.events]
    return "notice" in kinds and kinds.index("notice") < kinds.index("ai-end")


def the_notice(peer: Person) -> dict[str, Any]:
    [notice] = system_notices(peer)
    assert notice["role"] == "system" and notice["name"] == "system"
    assert notice["user_id"] is None and notice["id"] and notice["created_at"] > 0
    assert "test-key" not in notice["content"]
    return notice


async def thread_ready(server: RunningServer) -> str:
    await wait_until(lambda: server.room.thread_id is not None, what="the room's thread")
    thread_id = server.room.thread_id
    assert thread_id is not None
    return thread_id


# ----- faults -----

# fault -> (scripted replies, settings, words in the notice, deltas kept, model requests)
FAULTS: dict[str, tuple[Callable[[], list[Reply]], dict[str, Any], str, int, int]] = {
    # The SDK retries 5xx and 429 twice (PROVIDER_MAX_RETRIES=2): all three attempts fail.
    "http_500": (lambda: [HTTPError(500)] * 3, {}, "unavailable", 0, 3),
    "http_503": (lambda: [HTTPError(503)] * 3, {}, "unavailable", 0, 3),
    "http_429_retry_after": (
        lambda: [HTTPError(429, retry_after=0.05)] * 3, {}, "rate-limiting", 0, 3
    ),
    "cut_stream": (lambda: [CutStream(3, ANSWER)], {}, "cut off", 3, 1),
    "cut_stream_clean_eof": (lambda: [CutStream(3, ANSWER, clean=True)], {}, "cut off", 3, 1),
    "malformed_event": (lambda: [Malformed(2, ANSWER)], {}, "cut off", 2, 1),
    "first_token_never_comes": (lambda: [Stall(5)], {"run_timeout": 0.5}, "in time", 0, 1),
    "silent_mid_answer": (
        lambda: [Text(ANSWER, delay=5)], {"run_timeout": 0.5}, "in time", 1, 1
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failed_turn_is_reported_once_and_the_room_recovers(
    fault: str, start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    replies, settings, words, kept, attempts = FAULTS[fault]
    server = await start_server(**settings)
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(*replies())
    await alice.say("first question")
    partial = prefix(ANSWER, kept)
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
        notice = the_notice(peer)
        assert words in notice["content"]
        assert notice_before_unlock(peer)  # the reason arrives before the unlock
        if kept:
            [answer] = peer.answers()
            assert answer["incomplete"] is True and answer["content"] == partial
            assert peer.streamed(answer["id"]) == partial
        else:
            assert peer.answers() == [] and peer.of("message-delta") == []
    assert not server.room.busy
    assert len(upstream.model_requests()) == attempts
    # The lock is released: the next message is answered normally. (Once the upstream noticed
    # the abandoned run: see test_the_turn_after_an_abandoned_answer_is_answered.)
    await upstream_settled(upstream)
    upstream.enqueue(Text("All good again."))
    await bob.say("second question")
    for peer in (alice, bob):
        await peer.wait_for("ai-end", count=2)
        last = peer.answers()[-1]
        assert last["content"] == "All good again." and "incomplete" not in last
        assert len(system_notices(peer)) == 1
    transcript = [(m.role, m.content, m.incomplete) for m in server.room.transcript]
    expected = [("user", "first question", False)]
    if kept:
        expected.append(("assistant", partial, True))
    expected += [("user", "second question", False), ("assistant", "All good again.", False)]
    assert transcript == expected


@pytest.mark.parametrize(
    "llm_api",
    [
        "responses",
        "assistants",
        "chat",
    ],
)
@pytest.mark.parametrize("fault", ["cut_stream", "malformed_event"])
async def test_a_late_joiner_sees_the_cut_answer_marked_incomplete(
    fault: str, start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    replies, settings, _, kept, _ = FAULTS[fault]
    server = await start_server(**settings)
    [alice] = await room_of(crowd, server, "Alice")
    upstream.enqueue(*replies())
    await alice.say("first question")
    await alice.wait_for("ai-end")
    [live] = alice.answers()
    carol = crowd(server, "Carol")
    await carol.join()
    history = await carol.wait_for("message-list")
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1] == live
    assert history[1]["incomplete"] is True and history[1]["content"] == prefix(ANSWER, kept)
    assert history == [m.to_wire() for m in server.room.transcript]


async def test_an_unreachable_provider_is_reported_and_the_room_recovers(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    """Connection refused (the upstream process is gone), through every SDK retry."""
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    await thread_ready(server)
    port = int(upstream.base_url.rsplit(":", 1)[1].split("/")[0])
    await upstream.stop()
    await alice.say("anyone there?")
    for peer in (alice, bob):
        await peer.wait_for("ai-end", timeout=15)
        assert "unavailable" in the_notice(peer)["content"]
        assert peer.answers() == []
    assert not server.room.busy
    await upstream.start(port=port)
    await bob.say("and now?")
    for peer in (alice, bob):
        await peer.wait_for("ai-end", count=2)
        assert peer.answers()[-1]["content"] == "Echo: [Bob] and now?"
        assert len(system_notices(peer)) == 1


async def test_a_closed_provider_port_from_the_start(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd, llm_api: str
):
    """OPENAI_BASE_URL points at a closed loopback port: the server starts but is not ready
    (/readyz 503 with the reason) and people are told `unavailable` instead of silence; once
    something listens there, the provider opens by itself and messages are answered."""
    port = free_port()
    closed = f"http://127.0.0.1:{port}/v1"
    server = await start_server(openai_base_url=closed, provider_max_retries=0)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 503
            assert "cannot be opened" in (await resp.json())["reason"]
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200  # alive, just not ready
    alice = crowd(server, "Alice")
    await alice.sio.connect(server.url, transports=["websocket"], wait_timeout=5)
    refused = await alice.call("register", {"name": "Alice"})
    assert refused["code"] == "unavailable" and "not available" in refused["message"]
    late = FakeUpstream()
    await late.start(port=port)
    try:
        await wait_until(lambda: server.app[SERVICE_KEY].ready, timeout=15,
                         what="the provider to open once its server listens")
        assert (await alice.call("register", {"name": "Alice"}))["ok"]
        [bob] = await room_of(crowd, server, "Bob")
        await bob.say("hello again")
        for peer in (alice, bob):
            await peer.wait_for("ai-end")
            assert peer.answers()[-1]["content"] == "Echo: [Bob] hello again"
    finally:
        await late.stop()


# ----- retries: only before anything streamed -----


async def test_a_503_then_success_is_retried_without_a_notice(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(HTTPError(503), Text("Answer after a retry."))
    await alice.say("hello")
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
        assert system_notices(peer) == []
        [answer] = peer.answers()
        assert answer["content"] == "Answer after a retry." and "incomplete" not in answer
    assert len(upstream.model_requests()) == 2


async def test_a_429_with_retry_after_is_waited_out_without_a_notice(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(HTTPError(429, retry_after=0.6), Text("Answer after waiting."))
    started = time.monotonic()
    await alice.say("hello")
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
        assert system_notices(peer) == []
        assert [a["content"] for a in peer.answers()] == ["Answer after waiting."]
    assert time.monotonic() - started >= 0.6  # the SDK honoured Retry-After
    assert len(upstream.model_requests()) == 2


async def test_a_cut_stream_is_never_retried(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(CutStream(2, ANSWER), Text("A retry would show this."))
    await alice.say("hello")
    await bob.wait_for("ai-end")
    await asyncio.sleep(0.2)
    assert len(upstream.model_requests()) == 1
    assert upstream.pending_replies() == 1
    [answer] = bob.answers()
    assert answer["content"] == prefix(ANSWER, 2) and answer["incomplete"] is True


@pytest.mark.parametrize("retries", [0, 1])
async def test_provider_max_retries_bounds_the_attempts(
    retries: int, start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server(provider_max_retries=retries)
    [alice] = await room_of(crowd, server, "Alice")
    upstream.enqueue(*[HTTPError(503)] * (retries + 1), Text("not reached"))
    await alice.say("hello")
    await alice.wait_for("ai-end")
    assert "unavailable" in the_notice(alice)["content"]
    assert len(upstream.model_requests()) == retries + 1
    assert upstream.pending_replies() == 1


# ----- stop -----


async def upstream_run_was_cancelled(
    upstream: FakeUpstream, llm_api: str, watch: ChatStreamWatch, index: int = 0
) -> None:
    """The fake saw the provider run of turn `index` end early, from the client side."""
    if llm_api == "responses":
        def cancelled() -> bool:
            resp = list(upstream.responses.values())[index]
            return bool(resp["status"] == "cancelled" and resp.get("client_disconnected"))
        await wait_until(cancelled, what="the response to be cancelled")
    elif llm_api == "assistants":
        def run_cancelled() -> bool:
            run = list(upstream.runs.values())[index]
            return bool(run["status"] == "cancelled")
        await wait_until(run_cancelled, what="the run to be cancelled")
        assert upstream.active_runs() == []
    else:
        await wait_until(lambda: len(watch.outcomes) > index, what="the chat stream to end")
        assert watch.outcomes[index] == "gone"


async def test_any_participant_can_stop_the_answer(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd, llm_api: str,
    monkeypatch: pytest.MonkeyPatch,
):
    watch = ChatStreamWatch(monkeypatch)
    server = await start_server()
    alice, bob, carol = await room_of(crowd, server, "Alice", "Bob", "Carol")
    upstream.enqueue(Text(LONG, delay=0.05))
    await alice.say("tell me a long story")
    await carol.wait_for("message-delta", count=3)
    assert await bob.call("stop") == {"ok": True, "stopped": True}
    for peer in (alice, bob, carol):
        await peer.wait_for("ai-end")
        notice = the_notice(peer)
        assert "Bob" in notice["content"] and "stop" in notice["content"]
        [answer] = peer.answers()
        assert answer["incomplete"] is True and answer["content"]
        assert LONG.startswith(answer["content"]) and answer["content"] != LONG
        assert peer.streamed(answer["id"]) == answer["content"]
        assert notice_before_unlock(peer)
    await upstream_run_was_cancelled(upstream, llm_api, watch)
    assert not server.room.busy
    assert [(m.role, m.incomplete) for m in server.room.transcript] == [
        ("user", False), ("assistant", True)
    ]
    # A late joiner's history keeps the partial answer, marked incomplete.
    dave = crowd(server, "Dave")
    await dave.join()
    history = await dave.wait_for("message-list")
    if llm_api != "assistants":  # see test_a_late_joiner_sees_the_cut_answer_marked_incomplete
        assert history[-1] == alice.answers()[0]
    await carol.say("next question")
    await alice.wait_for("ai-end", count=2)
    assert alice.answers()[-1]["content"] == "Echo: [Carol] next question"


@pytest.mark.parametrize(
    "llm_api",
    [
        "responses",
        "assistants",
        "chat",
    ],
)
@pytest.mark.parametrize("cause", ["stop", "run_timeout"])
async def test_the_turn_after_an_abandoned_answer_is_answered(
    cause: str, start_server: StartServer, upstream: FakeUpstream, crowd: Crowd,
    monkeypatch: pytest.MonkeyPatch,
):
    """A real upstream takes a moment to notice an abandoned run (here 0.3 s): the message
    queued behind a stopped answer, or sent right after a timeout, must still be answered."""
    slow_upstream_cancel(monkeypatch, upstream, 0.3)
    server = await start_server(run_timeout=0.5 if cause == "run_timeout" else 60)
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(Text(LONG, delay=0.05 if cause == "stop" else 5))
    await alice.say("tell me a long story")
    await bob.wait_for("message-delta")
    if cause == "stop":
        ack = await bob.call("message", {"content": "a queued question"})
        assert ack["ok"] is True and ack["queued"] == 1
        assert await bob.call("stop") == {"ok": True, "stopped": True}
    else:
        await bob.wait_for("ai-end")
        await bob.say("a queued question")
    for peer in (alice, bob):
        await peer.wait_for("ai-end", count=2)
        assert len(system_notices(peer)) == 1
        assert peer.answers()[-1]["content"] == "Echo: [Bob] a queued question"
    await upstream_settled(upstream)


async def test_stop_before_the_first_token(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd, llm_api: str,
    monkeypatch: pytest.MonkeyPatch,
):
    watch = ChatStreamWatch(monkeypatch)
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(Stall(5))
    await alice.say("think hard")
    await bob.wait_for("ai-start")
    await asyncio.sleep(0.3)  # the request is in flight upstream
    assert await alice.call("stop") == {"ok": True, "stopped": True}
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
        assert "Alice" in the_notice(peer)["content"]
        assert peer.answers() == []
    await upstream_run_was_cancelled(upstream, llm_api, watch)
    await bob.say("next")
    await alice.wait_for("ai-end", count=2)
    assert alice.answers()[-1]["content"] == "Echo: [Bob] next"


async def test_stop_with_nothing_running_changes_nothing(
    start_server: StartServer, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    seen = len(bob.events)
    assert await alice.call("stop") == {"ok": True, "stopped": False}
    stranger = await crowd(server).connect()
    ack = await stranger.call("stop")
    assert ack["ok"] is False and ack["code"] == "not_registered"
    await asyncio.sleep(0.1)
    assert bob.events[seen:] == [] and not server.room.busy


# ----- leaving and shutting down mid-answer -----


async def test_the_last_person_leaving_mid_answer_cancels_the_run_and_deletes_the_thread(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd, llm_api: str,
    monkeypatch: pytest.MonkeyPatch,
):
    watch = ChatStreamWatch(monkeypatch)
    server = await start_server()
    [alice] = await room_of(crowd, server, "Alice")
    upstream.enqueue(Text(LONG, delay=0.05))
    await alice.say("a long one please")
    await alice.wait_for("message-delta", count=2)
    room = server.room
    thread = room.thread_id
    assert thread is not None
    await alice.close()
    await wait_until(lambda: room.thread_id is None and not room.busy,
                     what="the room to reset")
    assert room.transcript == [] and server.rooms.get("main") is None
    await upstream_run_was_cancelled(upstream, llm_api, watch)
    if llm_api == "chat":
        provider = server.app[PROVIDER_KEY]
        assert isinstance(provider, ChatProvider) and provider.thread(thread) == []
    else:
        assert thread in deleted_threads(upstream, llm_api)
        assert live_threads(upstream, llm_api) == {}
    # The room starts afresh for whoever comes next.
    dave = crowd(server, "Dave")
    welcome = await dave.join()
    assert welcome["busy"] is False and dave.of("message-list") == []
    await dave.say("hello")
    await dave.wait_for("ai-end")
    assert dave.answers()[-1]["content"] == "Echo: [Dave] hello"


@pytest.mark.slow
async def test_sigterm_mid_answer_cancels_the_run_deletes_the_thread_and_exits(
    tmp_path: Path, upstream: FakeUpstream, llm_api: str, crowd: Crowd,
    monkeypatch: pytest.MonkeyPatch,
):
    watch = ChatStreamWatch(monkeypatch)
    port = free_port()
    env = server_env(OPENAI_API_KEY="sk-test-secret-key", OPENAI_BASE_URL=upstream.base_url,
                     SERVER_PORT=str(port), SHUTDOWN_TIMEOUT="2", DRAIN_TIMEOUT="0.5",
                     LLM_API=llm_api)
    proc = await spawn(tmp_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        alice, bob = crowd(url, "Alice"), crowd(url, "Bob")
        await alice.join()
        await bob.join()
        upstream.enqueue(Text(LONG, delay=0.1))
        await alice.say("a long one please")
        await bob.wait_for("message-delta", count=2)
        threads = list(live_threads(upstream, llm_api))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
        # Bounded (see test_sigterm_exits_within_shutdown_timeout for the documented bound).
        assert time.monotonic() - started < 0.5 + 2 * 2 + 2
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "sk-test-secret-key" not in output
    await upstream_run_was_cancelled(upstream, llm_api, watch)
    if llm_api != "chat":
        [thread] = threads
        assert thread in deleted_threads(upstream, llm_api)
        assert live_threads(upstream, llm_api) == {}
    if llm_api == "assistants":
        assert upstream.active_runs() == [] and upstream.assistants == {}
    # The people in the room were told the answer ended before the server went away.
    for peer in (alice, bob):
        assert "ai-end" in peer.names()
        [answer] = peer.answers()
        assert answer["incomplete"] is True and peer.streamed(answer["id"]) == answer["content"]


@pytest.mark.slow
@pytest.mark.parametrize("llm_api", ["responses"])
async def test_sigterm_exits_within_shutdown_timeout(
    tmp_path: Path, upstream: FakeUpstream, llm_api: str, crowd: Crowd
):
    budget = 2.0
    port = free_port()
    env = server_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=upstream.base_url,
                     SERVER_PORT=str(port), SHUTDOWN_TIMEOUT=str(budget), LLM_API=llm_api)
    proc = await spawn(tmp_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        for name in ("Alice", "Bob"):
            await crowd(url, name).join()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert elapsed < budget + 1.0, f"exit took {elapsed:.1f}s with SHUTDOWN_TIMEOUT={budget}"


@pytest.mark.parametrize("llm_api", ["responses"])
async def test_many_connections_dying_at_once_leave_no_ghosts(
    start_server: StartServer, crowd: Crowd, caplog: pytest.LogCaptureFixture, llm_api: str
):
    """150 clients whose connections died together (a dropped network): their pings expire at
    the same moment, and the next broadcast finds them all dead."""
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        dead = [WirePeer(server.url, session, f"Gone{i}") for i in range(150)]
        try:
            for peer in dead:
                await peer.join()
                peer.frozen = True  # no more pongs
            eio = server.app[SIO_KEY].eio
            manager = server.app[SIO_KEY].manager
            alive = {manager.eio_sid_from_sid(p.sio.get_sid(), "/") for p in (alice, bob)}
            expired = time.time() - 3600
            for eio_sid, sock in eio.sockets.items():
                if eio_sid not in alive:
                    sock.last_ping = expired  # a ping went unanswered long ago
            await alice.say("is anybody still here?")
            await bob.wait_for("ai-end")
            await wait_until(lambda: len(bob.of("leave")) >= 150, timeout=3,
                             what="a leave for every dead connection")
            assert sorted(u["name"] for u in server.room.users()) == ["Alice", "Bob"]
            assert bob.answers()[-1]["content"] == "Echo: [Alice] is anybody still here?"
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        finally:
            await asyncio.gather(*(peer.close() for peer in dead))


# ----- reconnecting mid-answer -----


@pytest.mark.parametrize("old_socket", ["still_open", "closed_first"])
async def test_a_client_reconnecting_mid_answer_gets_the_rest_without_gap_or_duplicate(
    old_socket: str, start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(Text(LONG, delay=0.03))
    await bob.say("a long answer please")
    await alice.wait_for("message-delta", count=5)
    seen_by_bob = len(bob.events)
    if old_socket == "closed_first":
        await alice.close()
        await bob.wait_for("leave")
    again = crowd(server, "Alice", user_id=alice.user_id)
    welcome = await again.join()
    assert welcome["user_id"] == alice.user_id and welcome["name"] == "Alice"
    assert welcome["busy"] is True
    await again.wait_for("ai-end")
    await bob.wait_for("ai-end")
    # What the new socket saw: the history, the turn in progress, the rest of the answer.
    assert again.names()[:4] == ["welcome", "message-list", "ai-start", "message-start"]
    [history] = again.of("message-list")[:1]
    assert [m["content"] for m in history] == ["a long answer please"]
    [start] = again.of("message-start")
    [final] = again.answers()
    assert start["id"] == final["id"] and start["content"]
    assert start["content"] + again.streamed(final["id"]) == final["content"] == LONG
    # What the others saw of it: exactly what the protocol says about presence.
    presence = [(e, d["user_id"]) for e, d in bob.events[seen_by_bob:] if e in ("join", "leave")]
    if old_socket == "still_open":
        assert presence == []
        await alice.close()
        await asyncio.sleep(0.2)
        assert [e for e, _ in bob.events[seen_by_bob:] if e in ("join", "leave")] == []
    else:
        assert presence == [("leave", alice.user_id), ("join", alice.user_id)]
    # One presence for Alice throughout, under the same id.
    assert sorted(u["user_id"] for u in server.room.users()) == sorted([alice.user_id,
                                                                        bob.user_id])


async def test_a_late_joiner_sees_questions_still_waiting_in_the_queue(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server()
    alice, bob = await room_of(crowd, server, "Alice", "Bob")
    upstream.enqueue(Text(LONG, delay=0.03))
    await alice.say("first question")
    await bob.wait_for("message-delta")
    ack = await bob.call("message", {"content": "second question, waiting"})
    assert ack["ok"] is True and ack["queued"] == 1
    carol = crowd(server, "Carol")
    await carol.join()
    await carol.wait_for("ai-end", count=2)
    history = carol.of("message-list")[0]
    seen = [m["content"] for m in history] + [m["content"] for m in carol.of("message")]
    assert "second question, waiting" in seen
    [reply] = [a for a in carol.answers() if a.get("reply_to") == ack["id"]]
    assert reply["content"] == "Echo: [Bob] second question, waiting"
