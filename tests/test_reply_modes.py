"""Reply modes: the assistant answers every message, only when mentioned, or when it decides to;
real server, real Socket.IO clients, real SDK, fake upstream, every provider API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer
from tests.threads import LLM_APIS, instructions_of, thread_texts

pytestmark = pytest.mark.timeout(30)

TURN_EVENTS = ("ai-start", "message-start", "message-delta", "message-list", "ai-end")
LONG = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(params=LLM_APIS)
def llm_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def people(server: RunningServer, *names: str, room: str | None = None) -> list[Peer]:
    joined = [Peer(server.url, name, room=room) for name in names]
    for peer in joined:
        await peer.join()
    return joined


async def close(peers: list[Peer]) -> None:
    for peer in peers:
        await peer.close()


def turn_events(peer: Peer) -> list[str]:
    return [name for name in peer.names() if name in TURN_EVENTS]


async def test_mention_mode_answers_only_mentions_with_the_whole_room_as_context(
    start_server: StartServer, upstream: FakeUpstream, llm_api: str
):
    server = await start_server(reply_mode="mention")
    alice, bob, carol = await people(server, "Alice", "Bob", "Carol")
    assert alice.of("welcome")[0]["room"]["reply"] == "mention"
    assert alice.of("welcome")[0]["assistant"]["handle"] == "ai"
    for peer, text in [(alice, "let's pick blue"), (bob, "agreed, blue"),
                       (carol, "ping @aiden about it")]:
        ack = await peer.call("message", {"content": text})
        assert ack["ok"] and ack["queued"] == 0
    await alice.wait_for("message", where=lambda m: m["content"] == "ping @aiden about it")
    upstream.enqueue(Text("You decided on blue."))
    await carol.say("@AI what did we decide?")
    for peer in (alice, bob, carol):
        await peer.wait_for("ai-end")
        assert turn_events(peer)[0] == "ai-start" and turn_events(peer).count("ai-start") == 1
    assert len(upstream.model_requests()) == 1  # the plain messages started no run
    assert thread_texts(upstream, server) == [
        "[Alice] let's pick blue", "[Bob] agreed, blue", "[Carol] ping @aiden about it",
        "[Carol] @AI what did we decide?", "You decided on blue."]
    [request] = upstream.model_requests()
    instructions = instructions_of(request.json)
    assert "Please address the user as Carol" in instructions
    assert "Carol addressed you directly" in instructions
    if llm_api == "chat":  # the plain messages went out in the request itself
        sent = [m["content"] for m in request.json["messages"][1:]]
        assert sent[:3] == ["[Alice] let's pick blue", "[Bob] agreed, blue",
                            "[Carol] ping @aiden about it"]
    await close([alice, bob, carol])


async def test_mention_mode_people_talk_while_an_answer_streams(
    start_server: StartServer, upstream: FakeUpstream, llm_api: str
):
    server = await start_server(reply_mode="mention")
    alice, bob = await people(server, "Alice", "Bob")
    upstream.enqueue(Text(LONG, delay=0.03))
    await alice.say("@ai a long one please")
    await bob.wait_for("message-delta")
    chatter = ["meanwhile one", "meanwhile two", "meanwhile three"]
    for text in chatter:
        assert (await bob.call("message", {"content": text}))["ok"]
    await alice.wait_for("message", count=len(chatter))
    assert alice.of("ai-end") == [], "the chatter arrived while the answer streamed"
    await alice.wait_for("ai-end")
    answer = alice.answers()[0]
    assert answer["content"] == LONG == alice.streamed(answer["id"])
    assert [m["content"] for m in alice.of("message")] == chatter
    # the chatter entered the thread after the answer, in order
    late = Peer(server.url, "Late")
    await late.join()
    history = await late.wait_for("message-list")
    assert [m["content"] for m in history] == ["@ai a long one please", LONG, *chatter]
    assert thread_texts(upstream, server)[-3:] == [f"[Bob] {t}" for t in chatter]
    await close([alice, bob, late])


async def test_auto_mode_stays_silent_on_no_reply_and_answers_otherwise(
    start_server: StartServer, upstream: FakeUpstream, llm_api: str
):
    server = await start_server(reply_mode="auto")
    alice, bob = await people(server, "Alice", "Bob")
    upstream.enqueue(Text("NO_REPLY", chunks=["NO", "_RE", "PLY"]))
    await alice.say("brb, coffee")
    await bob.wait_for("message")
    upstream.enqueue(Text("NOT sure, but I think it is Tuesday.", chunks=["NO", "T sure,", " but I",
                                                                        " think it is Tuesday."]))
    await bob.say("what day is it?")
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
    # the silent turn showed nobody anything; the real one streamed as usual
    for peer in (alice, bob):
        assert turn_events(peer) == ["ai-start", "message-start", "message-delta",
                                     "message-delta", "message-delta", "message-list", "ai-end"]
        [answer] = peer.answers()
        assert answer["content"] == "NOT sure, but I think it is Tuesday."
        assert peer.streamed(answer["id"]) == answer["content"]
    silent, spoken = (instructions_of(r.json) for r in upstream.model_requests())
    assert "answer exactly NO_REPLY" in silent and "answer exactly NO_REPLY" in spoken
    upstream.enqueue(Text("Hello Alice!"))
    await alice.say("@ai hello")
    await alice.wait_for("ai-end", count=2)
    assert "Alice addressed you directly" in instructions_of(upstream.model_requests()[-1].json)
    late = Peer(server.url, "Late")
    await late.join()
    history = await late.wait_for("message-list")
    assert "NO_REPLY" not in [m["content"] for m in history]
    assert [m["content"] for m in history] == [
        "brb, coffee", "what day is it?", "NOT sure, but I think it is Tuesday.", "@ai hello",
        "Hello Alice!"]
    await close([alice, bob, late])


async def test_switching_the_reply_mode(start_server: StartServer, upstream: FakeUpstream):
    server = await start_server()
    alice, bob = await people(server, "Alice", "Bob")
    assert alice.of("welcome")[0]["room"]["reply"] == "always"
    assert alice.of("welcome")[0]["room"]["reply_locked"] is False
    ack = await alice.call("room-settings", {"reply": "mention"})
    assert ack == {"ok": True, "reply": "mention"}
    for peer in (alice, bob):
        change = await peer.wait_for("room-settings")
        assert change == {"reply": "mention", "by": "Alice"}
        notice = await peer.wait_for("message", where=lambda m: m["role"] == "system")
        assert notice["content"] == "Alice set the assistant to answer when mentioned."
    await bob.say("no run for this")
    await alice.wait_for("message", where=lambda m: m["content"] == "no run for this")
    for bad in ({"reply": "sometimes"}, {"reply": None}, {}, "mention"):
        refused = await bob.call("room-settings", bad)
        assert refused["code"] == "invalid_payload"
    impostor = Peer(server.url, "AI")
    await impostor.connect()
    assert (await impostor.call("register", {"name": "AI"}))["code"] == "name_taken"
    outsider = Peer(server.url, "Outsider")
    await outsider.connect()
    assert (await outsider.call("room-settings", {"reply": "auto"}))["code"] == "not_registered"
    newcomer = Peer(server.url, "Newcomer")
    await newcomer.join()
    assert newcomer.of("welcome")[0]["room"]["reply"] == "mention"
    assert upstream.model_requests() == []
    await close([alice, bob, impostor, outsider, newcomer])


async def test_a_configured_rooms_mode_is_locked(start_server: StartServer, tmp_path: Path):
    path = tmp_path / "rooms.toml"
    path.write_text('[rooms.team]\nreply = "mention"\n')
    server = await start_server(rooms_file=str(path))
    [alice] = await people(server, "Alice", room="team")
    room: dict[str, Any] = alice.of("welcome")[0]["room"]
    assert (room["reply"], room["reply_locked"]) == ("mention", True)
    refused = await alice.call("room-settings", {"reply": "always"})
    assert refused["code"] == "settings_locked"
    assert alice.of("room-settings") == []
    await alice.close()


async def test_post_stream_in_a_mention_room(start_server: StartServer, upstream: FakeUpstream):
    """The original client's POST /stream: a plain message gets an empty body (no answer), a
    mention gets the answer's text."""
    server = await start_server(reply_mode="mention")
    [alice] = await people(server, "Alice")
    url = f"{server.url}/stream"
    async with aiohttp.ClientSession() as http:
        body = {"user_id": alice.user_id, "content": "just chatting"}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200 and await resp.text() == ""
        body = {"user_id": alice.user_id, "content": "@ai hi"}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200 and await resp.text() == "Echo: [Alice] @ai hi"
    await alice.close()
