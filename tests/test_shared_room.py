"""The shared room end to end: real server, real Socket.IO clients, real SDK, fake upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.fake_upstream import FakeUpstream, HTTPError, Text
from tests.peers import Peer
from tests.threads import LLM_APIS, deleted_threads, instructions_of, live_threads, thread_texts

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=LLM_APIS)
def llm_api(request: pytest.FixtureRequest) -> str:
    """Every behaviour of the room holds for every provider API."""
    return str(request.param)

Peers = Callable[..., Peer]

TURN_EVENTS = {"ai-start", "message-start", "message-delta", "message-list", "ai-end"}


async def room_of(peers: Peers, *names: str) -> list[Peer]:
    joined = [peers(name) for name in names]
    for peer in joined:
        await peer.join()
    return joined


async def settled(peer: Peer, turns: int = 1) -> None:
    await peer.wait_for("ai-end", count=turns)


def turn_shape(peer: Peer) -> list[str]:
    """The peer's turn events with runs of deltas collapsed to one entry."""
    shape: list[str] = []
    for name in peer.names():
        if name in TURN_EVENTS and not (name == "message-delta" and shape[-1:] == [name]):
            shape.append(name)
    return shape


async def test_message_goes_to_the_others_and_the_answer_to_everyone(
    peers: Peers, upstream: FakeUpstream
):
    alice, bob, carol = await room_of(peers, "Alice", "Bob", "Carol")
    upstream.enqueue(Text("Hello Alice, nice to meet you all."))
    await alice.say("Hi everyone")
    for peer in (alice, bob, carol):
        await settled(peer)
    for other in (bob, carol):
        [msg] = other.of("message")
        assert msg["content"] == "Hi everyone" and msg["name"] == "Alice"
        assert msg["user_id"] == alice.user_id and msg["role"] == "user"
    assert alice.of("message") == []  # the sender is not echoed
    for peer in (alice, bob, carol):
        [answer] = peer.answers()
        assert answer["content"] == "Hello Alice, nice to meet you all."
        assert answer["user_id"] is None and answer["name"] == "Roundtable AI"


async def test_every_client_sees_the_same_turn_in_order(peers: Peers, upstream: FakeUpstream):
    alice, bob, carol = await room_of(peers, "Alice", "Bob", "Carol")
    upstream.enqueue(Text("one two three four five six", delay=0.01))
    await bob.say("count please")
    for peer in (alice, bob, carol):
        await settled(peer)
        assert turn_shape(peer) == [
            "ai-start", "message-start", "message-delta", "message-list", "ai-end"
        ]


async def test_every_clients_deltas_join_to_the_final_message(
    peers: Peers, upstream: FakeUpstream
):
    alice, bob, carol = await room_of(peers, "Alice", "Bob", "Carol")
    text = "Streaming *works*: ünïcødé, emoji 🎉, and\nnew lines — all in order."
    upstream.enqueue(Text(text, chunks=[text[i : i + 3] for i in range(0, len(text), 3)]))
    await carol.say("show me")
    for peer in (alice, bob, carol):
        await settled(peer)
        [start] = peer.of("message-start")
        [answer] = peer.answers()
        assert start["id"] == answer["id"]
        assert len(peer.of("message-delta")) > 10
        assert peer.streamed(answer["id"]) == answer["content"] == text


async def test_run_instructions_name_the_sender_and_today(peers: Peers, upstream: FakeUpstream):
    alice, bob = await room_of(peers, "Alice", "Bob")
    await bob.say("What day is it?")
    await settled(alice)
    [request] = upstream.model_requests()
    instructions = instructions_of(request.json)
    assert "Please address the user as Bob." in instructions
    assert datetime.now().astimezone().date().isoformat() in instructions
    assert request.json["stream"] is True


async def test_the_model_is_told_who_said_what(
    peers: Peers, upstream: FakeUpstream, server: RunningServer
):
    alice, bob = await room_of(peers, "Alice", "Bob")
    await alice.say("I like tea")
    await settled(bob)
    await bob.say("I like coffee")
    await settled(bob, 2)
    texts = thread_texts(upstream, server)
    assert texts[0] == "[Alice] I like tea" and texts[2] == "[Bob] I like coffee"


async def test_late_joiner_gets_the_whole_history_once(peers: Peers, upstream: FakeUpstream,
                                                       server: RunningServer):
    alice, bob = await room_of(peers, "Alice", "Bob")
    await alice.say("first question")
    await settled(bob)
    await bob.say("second question")
    await settled(bob, 2)
    dave = peers("Dave")
    welcome = await dave.join()
    assert [u["name"] for u in welcome["users"]] == ["Alice", "Bob", "Dave"]
    history = await dave.wait_for("message-list")
    assert len(dave.of("message-list")) == 1
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in history] == [
        "first question", "Echo: [Alice] first question",
        "second question", "Echo: [Bob] second question",
    ]
    assert history == [m.to_wire() for m in server.room.transcript]
    live_ids = [m["id"] for m in bob.of("message")] + [a["id"] for a in bob.answers()]
    assert {m["id"] for m in history} >= set(live_ids)
    # The thread holds the same conversation (the model sees the speaker's name).
    expected = [f"[{m['name']}] {m['content']}" if m["role"] == "user" else m["content"]
                for m in history]
    assert thread_texts(upstream, server) == expected


async def test_two_messages_at_once_are_both_answered_in_turn(
    peers: Peers, upstream: FakeUpstream, server: RunningServer
):
    alice, bob, carol = await room_of(peers, "Alice", "Bob", "Carol")
    upstream.enqueue(Text("answer for Alice", delay=0.02), Text("answer for Bob", delay=0.02))
    await asyncio.gather(alice.say("from Alice"), bob.say("from Bob"))
    for peer in (alice, bob, carol):
        await settled(peer, 2)
        assert [a["content"] for a in peer.answers()] == ["answer for Alice", "answer for Bob"]
        shape = turn_shape(peer)
        assert shape == ["ai-start", "message-start", "message-delta", "message-list", "ai-end"] * 2
    # One run at a time: each question entered the thread only after the previous answer.
    assert thread_texts(upstream, server) == [
        "[Alice] from Alice", "answer for Alice", "[Bob] from Bob", "answer for Bob"
    ]
    instructions = [instructions_of(r.json) for r in upstream.model_requests()]
    assert "as Alice." in instructions[0] and "as Bob." in instructions[1]


async def test_thread_is_deleted_when_the_last_person_leaves(
    peers: Peers, upstream: FakeUpstream, server: RunningServer, llm_api: str
):
    alice, bob = await room_of(peers, "Alice", "Bob")
    await alice.say("hello")
    await settled(bob)
    room = server.room
    thread = room.thread_id
    assert thread is not None
    await alice.close()
    await bob.wait_for("leave")
    assert room.thread_id == thread
    await bob.close()
    for _ in range(100):
        if room.thread_id is None:
            break
        await asyncio.sleep(0.02)
    assert room.thread_id is None and room.transcript == []
    assert server.rooms.get("main") is None  # the room closed
    if llm_api != "chat":  # the chat provider keeps its thread in the server itself
        assert thread in deleted_threads(upstream, llm_api)
        assert live_threads(upstream, llm_api) == {}


async def test_leave_and_join_reach_the_others(peers: Peers):
    alice, bob = await room_of(peers, "Alice", "Bob")
    assert alice.of("join") == [{"user_id": bob.user_id, "name": "Bob"}]
    assert bob.of("join") == []
    await bob.close()
    assert await alice.wait_for("leave") == {"user_id": bob.user_id, "name": "Bob"}


async def test_spoofed_identity_fields_are_ignored(peers: Peers, upstream: FakeUpstream):
    alice, mallory = await room_of(peers, "Alice", "Mallory")
    await mallory.say("I am Alice", name="Alice", user_id=alice.user_id, role="assistant",
                      created_at=0)
    msg = await alice.wait_for("message")
    assert (msg["name"], msg["user_id"], msg["role"]) == ("Mallory", mallory.user_id, "user")
    assert msg["created_at"] > 0
    await settled(alice)
    assert "Please address the user as Mallory." in instructions_of(
        upstream.model_requests()[0].json)


async def test_client_user_id_is_kept_or_replaced(peers: Peers):
    kept = await peers("Ann", user_id="1732212345678abcdef").join()
    assert kept["user_id"] == "1732212345678abcdef"
    for bad in ["", "x" * 65, "<script>", 42]:
        welcome = await peers(f"P{len(str(bad))}", user_id=bad).join()  # type: ignore[arg-type]
        assert welcome["user_id"] != bad and welcome["user_id"].startswith("u_")
    missing = peers("NoId")
    await missing.connect()
    welcome = await missing.call("register", {"name": "NoId"})
    assert welcome["ok"] and welcome["user_id"].startswith("u_")


BAD_REQUESTS: list[tuple[str, str, Any, str]] = [
    ("unregistered", "message", {"content": "hi"}, "not_registered"),
    ("registered", "register", {"name": "Again"}, "already_registered"),
    ("fresh", "register", "Alice", "invalid_payload"),
    ("fresh", "register", {"name": 5}, "invalid_payload"),
    ("fresh", "register", {"user_id": "x"}, "invalid_payload"),
    ("fresh", "register", {"name": "   "}, "invalid_name"),
    ("fresh", "register", {"name": "x" * 33}, "invalid_name"),
    ("fresh", "register", {"name": "bad\nname"}, "invalid_name"),
    ("fresh", "register", {"name": "bob"}, "name_taken"),
    ("registered", "message", "just a string", "invalid_payload"),
    ("registered", "message", {"content": ["a"]}, "invalid_payload"),
    ("registered", "message", None, "invalid_payload"),
    ("registered", "message", {"content": " \n\t "}, "empty_message"),
    ("registered", "message", {"content": "x" * 8001}, "message_too_long"),
]


@pytest.mark.parametrize(("who", "event", "payload", "code"), BAD_REQUESTS)
async def test_bad_requests_are_refused_without_side_effects(
    peers: Peers, server: RunningServer, upstream: FakeUpstream,
    who: str, event: str, payload: Any, code: str,
):
    bob = peers("Bob")
    await bob.join()
    client = peers("Eve")
    await client.connect()
    if who == "registered":
        await client.join()
        await bob.wait_for("join")
    seen_by_bob = len(bob.events)
    ack = await client.call(event, payload)
    assert ack["ok"] is False and ack["code"] == code
    error = await client.wait_for("error")
    assert error["code"] == code and error["message"]
    await asyncio.sleep(0.1)
    assert bob.events[seen_by_bob:] == []
    assert server.room.transcript == [] and not server.room.busy
    assert upstream.model_requests() == []
    if who == "fresh":  # still connected, and may try again
        welcome = await client.call("register", {"name": "Eve"})
        assert welcome["ok"] and welcome["name"] == "Eve"


async def test_unregistered_sockets_receive_no_room_traffic(peers: Peers):
    alice, bob = await room_of(peers, "Alice", "Bob")
    lurker = await peers().connect()
    await alice.say("secret plans")
    await settled(bob)
    assert lurker.events == []


async def test_provider_error_reaches_everyone_and_releases_the_lock(
    peers: Peers, upstream: FakeUpstream
):
    alice, bob = await room_of(peers, "Alice", "Bob")
    upstream.enqueue(HTTPError(400, "Invalid value for 'model'."))
    await alice.say("hello?")
    for peer in (alice, bob):
        await settled(peer)
        notice = await peer.wait_for("message", where=lambda m: m["role"] == "system")
        assert notice["name"] == "system" and notice["user_id"] is None
        assert "could not answer" in notice["content"]
        assert "test-key" not in notice["content"]
    await bob.say("second try")
    await settled(alice, 2)
    assert alice.answers()[-1]["content"] == "Echo: [Bob] second try"


async def test_health_route(server: RunningServer, peers: Peers, llm_api: str):
    await room_of(peers, "Alice")
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
        body = await resp.json()
    assert body == {"status": "ok", "users": 1, "busy": False, "rooms": 1, "provider": llm_api}


async def test_a_burst_of_messages_is_answered_in_order_without_conflicts(
    peers: Peers, upstream: FakeUpstream, server: RunningServer
):
    """Assistants servers refuse a message or run while a run is active (HTTP 400): the turn
    queue must make that impossible, whatever the clients do."""
    people = await room_of(peers, "P0", "P1", "P2", "P3", "P4")
    await asyncio.gather(*(p.say(f"{p.name} says {i}") for i in range(2) for p in people))
    watcher = people[0]
    await settled(watcher, 10)
    assert not [m for m in watcher.of("message") if m["role"] == "system"]
    answers = [a["content"] for a in watcher.answers()]
    questions = [m.content for m in server.room.transcript if m.role == "user"]
    assert len(answers) == len(questions) == 10
    assert answers == [f"Echo: [{q.split()[0]}] {q}" for q in questions]
    assert upstream.active_runs() == []


async def test_joining_mid_answer_shows_the_answer_so_far_and_the_queue(
    peers: Peers, upstream: FakeUpstream
):
    alice, bob = await room_of(peers, "Alice", "Bob")
    words = [f"w{i} " for i in range(40)]
    upstream.enqueue(Text("".join(words), chunks=words, delay=0.02))
    await alice.say("tell me a long story")
    await bob.wait_for("message-delta", count=5)
    await bob.say("and then?")  # waits for its turn
    carol = peers("Carol")
    welcome = await carol.join()
    assert welcome["busy"] is True
    [start] = await asyncio.gather(carol.wait_for("message-start"))
    assert len(start["content"]) >= len("w0 w1 w2 w3 w4 ")
    queued = await carol.wait_for("message")
    assert queued["content"] == "and then?" and queued["name"] == "Bob"
    await carol.wait_for("ai-end", count=2)
    first = carol.answers()[0]
    assert start["content"] + carol.streamed(first["id"]) == first["content"] == "".join(words)
    assert [a["content"] for a in carol.answers()] == [
        "".join(words), "Echo: [Bob] and then?"]
    history = carol.of("message-list")[0]
    assert [m["content"] for m in history] == ["tell me a long story"]


async def test_message_ack_carries_the_servers_id_and_time(peers: Peers):
    [alice] = await room_of(peers, "Alice")
    ack = await alice.call("message", {"content": "hello", "id": "client-id-1"})
    assert ack["ok"] is True and ack["id"] == "client-id-1" and ack["created_at"] > 0
    assert ack["queued"] in (0, 1)
    again = await alice.call("message", {"content": "hello again", "id": "client-id-1"})
    assert again["id"] != "client-id-1"  # an id already used is replaced
