"""Many rooms on one server: real server, real Socket.IO clients, real SDK, fake upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.rooms import RoomsFileError, load_rooms_file
from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import Call, FakeUpstream, HTTPError, Text, ToolCalls
from tests.peers import Peer
from tests.threads import LLM_APIS, deleted_threads, instructions_of, live_threads, thread_texts

pytestmark = pytest.mark.timeout(30)

Peers = Callable[..., Peer]
LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(params=LLM_APIS)
def llm_api(request: pytest.FixtureRequest) -> str:
    """The room behaviours that involve the thread hold for every provider API."""
    return str(request.param)


async def joined(peers: Peers, room: str | None, *names: str, **kwargs: Any) -> list[Peer]:
    people = [peers(name, room=room, **kwargs) for name in names]
    for person in people:
        await person.join()
    return people


def rooms_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rooms.toml"
    path.write_text(text)
    return str(path)


async def get_json(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_two_rooms_hold_separate_conversations(
    peers: Peers, upstream: FakeUpstream, server: RunningServer
):
    alice, bob = await joined(peers, "Design", "Alice", "Bob")
    carol = (await joined(peers, None, "Carol"))[0]
    assert alice.of("welcome")[0]["room"] == {"name": "design", "listed": True, "password": False,
                                              "reply": "always", "reply_locked": False}
    assert carol.of("welcome")[0]["room"]["name"] == "main"
    assert [u["name"] for u in carol.of("welcome")[0]["users"]] == ["Carol"]
    await alice.say("hello design")
    await bob.wait_for("ai-end")
    await carol.say("hello main")
    await carol.wait_for("ai-end")
    design_texts = {m["content"] for p in (alice, bob) for m in p.of("message") + p.answers()}
    main_texts = {m["content"] for m in carol.of("message") + carol.answers()}
    assert "hello design" in design_texts and "Echo: [Alice] hello design" in design_texts
    assert not any("main" in text for text in design_texts)
    assert not any("design" in text for text in main_texts)
    assert carol.of("join") == [] and [j["name"] for j in alice.of("join")] == ["Bob"]
    assert thread_texts(upstream, server, "design") == ["[Alice] hello design",
                                                        "Echo: [Alice] hello design"]
    assert thread_texts(upstream, server) == ["[Carol] hello main", "Echo: [Carol] hello main"]
    # a late joiner gets its own room's history only
    dave = (await joined(peers, "design", "Dave"))[0]
    history = await dave.wait_for("message-list")
    assert [m["content"] for m in history] == ["hello design", "Echo: [Alice] hello design"]
    # the same nickname may be used in another room
    assert (await joined(peers, None, "Alice"))[0].of("welcome")


async def test_answers_in_two_rooms_stream_at_the_same_time(
    peers: Peers, upstream: FakeUpstream
):
    [ann] = await joined(peers, "a", "Ann")
    [ben] = await joined(peers, "b", "Ben")
    upstream.enqueue(Text(LONG, delay=0.03), Text(LONG, delay=0.03))
    await ann.say("long one")
    await ann.wait_for("message-delta")
    await ben.say("long two")
    await ben.wait_for("message-delta", count=2)
    assert ann.of("ai-end") == [], "room a's answer must still be streaming"
    for peer in (ann, ben):
        await peer.wait_for("ai-end", timeout=15)
        [answer] = peer.answers()
        assert answer["content"] == LONG == peer.streamed(answer["id"])
    assert {d["id"] for d in ann.of("message-delta")}.isdisjoint(
        d["id"] for d in ben.of("message-delta"))


async def test_a_stop_and_a_full_queue_in_one_room_leave_the_other_alone(
    start_server: StartServer, upstream: FakeUpstream
):
    server = await start_server(max_queued_turns=1)
    ann, ben = Peer(server.url, "Ann", room="a"), Peer(server.url, "Ben", room="b")
    for peer in (ann, ben):
        await peer.join()
    upstream.enqueue(Text(LONG, delay=0.05))
    await ann.say("long")
    await ann.wait_for("message-delta")
    assert (await ann.call("message", {"content": "queued"}))["ok"]
    refused = await ann.call("message", {"content": "one too many"})
    assert refused["code"] == "busy_queue_full"
    assert (await ben.call("message", {"content": "am I blocked?"}))["ok"]
    await ben.wait_for("ai-end")
    assert ben.answers()[0]["content"] == "Echo: [Ben] am I blocked?"
    assert (await ben.call("stop"))["stopped"] is False  # nothing to stop in room b
    upstream.enqueue(HTTPError(401))  # for room a's queued message, once the stop is through
    assert (await ann.call("stop"))["stopped"] is True
    await ann.wait_for("ai-end", count=2)  # the stopped answer, then the queued one's failure
    assert not any("stopped" in m["content"] for m in ben.of("message"))
    # a failing provider in room a is room a's news only
    notices = [m["content"] for m in ann.of("message") if m["role"] == "system"]
    assert len(notices) == 2 and "stopped" in notices[0]
    await ben.say("fine here?")
    await ben.wait_for("ai-end", count=2)
    assert ben.answers()[-1]["content"] == "Echo: [Ben] fine here?"
    assert [m for m in ben.of("message") if m["role"] == "system"] == []
    for peer in (ann, ben):
        await peer.close()


async def test_tools_see_only_their_own_room(
    start_server: StartServer, upstream: FakeUpstream, llm_api: str
):
    server = await start_server(tools_module="tests.room_tools")
    ann = Peer(server.url, "Ann", room="design")
    ben, cat = Peer(server.url, "Ben"), Peer(server.url, "Cat")
    for peer in (ann, ben, cat):
        await peer.join()
    upstream.enqueue(ToolCalls([Call("who_is_here", "{}")]), Text("Just you, Ann."))
    await ann.say("who is here?")
    await ann.wait_for("ai-end")
    [output] = upstream.tool_outputs
    assert [p["name"] for p in json.loads(output["output"])] == ["Ann"]
    assert ben.of("tool-call") == []
    for peer in (ann, ben, cat):
        await peer.close()


async def test_closing_a_room_deletes_its_thread_only(
    peers: Peers, upstream: FakeUpstream, server: RunningServer, llm_api: str
):
    [ann] = await joined(peers, "design", "Ann")
    [ben] = await joined(peers, None, "Ben")
    for peer in (ann, ben):
        await peer.say("hi")
        await peer.wait_for("ai-end")
    design = server.rooms.get("design")
    assert design is not None
    design_thread, main_thread = design.thread_id, server.room.thread_id
    await ann.close()
    for _ in range(100):
        if design.thread_id is None and server.rooms.get("design") is None:
            break
        await asyncio.sleep(0.02)
    assert server.rooms.get("design") is None and design.thread_id is None
    assert server.room.thread_id == main_thread
    if llm_api != "chat":
        assert design_thread in deleted_threads(upstream, llm_api)
        assert main_thread in live_threads(upstream, llm_api)
    await ben.say("still here")
    await ben.wait_for("ai-end", count=2)
    assert ben.answers()[-1]["content"] == "Echo: [Ben] still here"
    # the room opens afresh, with a new thread and no history
    [cat] = await joined(peers, "design", "Cat")
    assert cat.of("message-list") == []


@pytest.mark.parametrize(
    "room", ["", "   ", "no spaces", "x" * 41, "émoji", "a/b", 17, None.__class__.__name__ + "!",
             ["design"]],
)
async def test_a_bad_room_name_is_refused_and_the_socket_may_try_again(
    peers: Peers, room: Any
):
    peer = peers("Ann")
    await peer.connect()
    ack = await peer.call("register", {"name": "Ann", "room": room})
    assert ack["ok"] is False and ack["code"] == "invalid_room"
    assert peer.of("error")[0]["code"] == "invalid_room"
    ack = await peer.call("register", {"name": "Ann", "room": "  Good_Room-1 "})
    assert ack["ok"] is True and ack["room"]["name"] == "good_room-1"


async def test_max_rooms_is_enforced_and_freed_when_a_room_closes(start_server: StartServer):
    server = await start_server(max_rooms=2)
    ann, ben = Peer(server.url, "Ann"), Peer(server.url, "Ben", room="two")
    for peer in (ann, ben):
        await peer.join()
    cat = Peer(server.url, "Cat")
    await cat.connect()
    refused = await cat.call("register", {"name": "Cat", "room": "three"})
    assert refused["code"] == "room_limit"
    assert (await cat.call("register", {"name": "Cat", "room": "two"}))["ok"]  # open: fine
    await cat.close()
    await ben.close()
    dan = Peer(server.url, "Dan")
    await dan.connect()
    for _ in range(100):
        ack = await dan.call("register", {"name": "Dan", "room": "three"})
        if ack["ok"]:
            break
        assert ack["code"] == "room_limit"
        await asyncio.sleep(0.02)
    assert ack["ok"] and ack["room"]["name"] == "three"
    for peer in (ann, dan):
        await peer.close()


async def test_configured_rooms_passwords_and_ad_hoc_off(
    start_server: StartServer, upstream: FakeUpstream, tmp_path: Path
):
    path = rooms_file(tmp_path, """
[rooms.design]
instructions = "Design room rule: answer in sketches."

[rooms.board]
password = "s3cret"
listed = false
max_participants = 1
""")
    server = await start_server(rooms_file=path, rooms_ad_hoc=False)
    ann = Peer(server.url, "Ann")
    await ann.connect()
    assert (await ann.call("register", {"name": "Ann", "room": "random"}))["code"] == \
        "unknown_room"
    missing = await ann.call("register", {"name": "Ann", "room": "board"})
    wrong = await ann.call("register", {"name": "Ann", "room": "board", "password": "guess"})
    assert missing["code"] == wrong["code"] == "wrong_password"
    assert "needs a password" in missing["message"] and "Wrong password" in wrong["message"]
    for bad in ("\ud800", 17, ["s3cret"]):  # not text: refused like a wrong one, no crash
        odd = await ann.call("register", {"name": "Ann", "room": "board", "password": bad})
        assert odd["code"] == "wrong_password"
    ok = await ann.call("register", {"name": "Ann", "room": "board", "password": "s3cret"})
    assert ok["ok"] and ok["room"] == {"name": "board", "listed": False, "password": True,
                                       "reply": "always", "reply_locked": False}
    ben = Peer(server.url, "Ben", room="board", password="s3cret")
    await ben.connect()
    full = await ben.call("register", {"name": "Ben", "room": "board", "password": "s3cret"})
    assert full["code"] == "room_full"
    # instructions reach only that room's runs
    cat, dan = Peer(server.url, "Cat", room="design"), Peer(server.url, "Dan")
    for peer in (cat, dan):
        await peer.join()
    await cat.say("draw me a login page")
    await cat.wait_for("ai-end")
    await dan.say("hello")
    await dan.wait_for("ai-end")
    design_run, main_run = (instructions_of(r.json) for r in upstream.model_requests())
    assert "Design room rule: answer in sketches." in design_run
    assert "Design room rule" not in main_run and "Please address the user as Dan" in main_run
    status, listing = await get_json(f"{server.url}/api/rooms")
    assert status == 200
    assert listing == {"rooms": [{"name": "main", "people": 1, "busy": False},
                                 {"name": "design", "people": 1, "busy": False}]}
    for peer in (ann, ben, cat, dan):
        await peer.close()


async def test_the_rooms_list_and_health_count_everyone(
    start_server: StartServer, upstream: FakeUpstream
):
    server = await start_server(room_password="pw")
    auth = {"auth": {"token": "pw"}}
    people = [Peer(server.url, n, room=r) for n, r in
              [("Ann", "zeta"), ("Ben", "zeta"), ("Cat", None), ("Dan", "alpha")]]
    for peer in people:
        await peer.connect(**auth)
        await peer.join()
    upstream.enqueue(Text(LONG, delay=0.05))
    await people[0].say("long")
    await people[1].wait_for("message-delta")
    status, body = await get_json(f"{server.url}/api/rooms")
    assert status == 401 and body["code"] == "unauthorized"
    status, body = await get_json(f"{server.url}/api/rooms", Authorization="Bearer nope")
    assert status == 401
    status, body = await get_json(f"{server.url}/api/rooms", Authorization="Bearer pw")
    assert status == 200 and body == {"rooms": [
        {"name": "main", "people": 1, "busy": False},
        {"name": "alpha", "people": 1, "busy": False},
        {"name": "zeta", "people": 2, "busy": True},
    ]}
    status, health = await get_json(f"{server.url}/healthz")
    assert (health["users"], health["rooms"], health["busy"]) == (4, 3, True)
    for peer in people:
        await peer.close()


async def test_room_pages_are_served_by_name(server: RunningServer):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/") as root:
            page = await root.text()
        async with http.get(f"{server.url}/r/design") as resp:
            assert resp.status == root.status and await resp.text() == page
        async with http.get(f"{server.url}/r/Design", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == "/r/design"
        async with http.get(f"{server.url}/r/not%20a%20room!") as resp:
            # the page, which tells the person the name is not a room's (tests/browser)
            assert resp.status == root.status and await resp.text() == page


async def test_post_stream_posts_into_the_named_room(peers: Peers, server: RunningServer):
    [ann] = await joined(peers, "design", "Ann")
    [ben] = await joined(peers, None, "Ben")
    url = f"{server.url}/stream"
    async with aiohttp.ClientSession() as http:
        body = {"user_id": ann.user_id, "content": "to design", "room": "design"}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200 and await resp.text() == "Echo: [Ann] to design"
        async with http.post(url, json={"user_id": ann.user_id, "content": "no room"}) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "not_registered"
        body = {"user_id": ben.user_id, "content": "to main"}
        async with http.post(url, json=body) as resp:
            assert resp.status == 200 and await resp.text() == "Echo: [Ben] to main"
        body = {"user_id": ben.user_id, "content": "x", "room": "bad room"}
        async with http.post(url, json=body) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "invalid_room"
    assert [m["content"] for m in ben.of("message")] == []  # design's message stayed there


async def test_a_pasted_log_or_a_huge_nickname_gets_an_error_not_a_closed_socket(
    peers: Peers,
):
    """Input well past the limits but under MAX_PAYLOAD_BYTES gets its own error."""
    peer = peers("Ann")
    await peer.connect()
    ack = await peer.call("register", {"name": "n" * 100_000})
    assert ack["code"] == "invalid_name" and peer.sio.connected
    await peer.join()
    ack = await peer.call("message", {"content": "log line\n" * 11_000})
    assert ack["code"] == "message_too_long" and peer.sio.connected
    assert (await peer.call("message", {"content": "short"}))["ok"]


@pytest.mark.parametrize(
    ("text", "names"),
    [("[rooms.Design]\n", ["'Design'", "'design'"]),
     ("[rooms.design]\npasword = 'x'\n", ["'design'", "'pasword'"]),
     ("[rooms.design]\nlisted = 'no'\n", ["'design'", "'listed'", "bool"]),
     ("[rooms.design]\nmax_participants = 0\n", ["'design'", "'max_participants'"]),
     ("[rooms.b]\nmax_participants = true\n", ["'b'", "'max_participants'", "int"]),
     ("[rooms]\nx = 1\n", ["'x'"]),
     ("[room.design]\n", ["'room'"]),
     ("[rooms.design\n", ["not valid TOML"])],
)
def test_a_bad_rooms_file_names_the_room_and_the_key(
    tmp_path: Path, text: str, names: list[str]
):
    path = rooms_file(tmp_path, text)
    with pytest.raises(RoomsFileError) as error:
        load_rooms_file(path)
    message = str(error.value)
    assert message.startswith(path) and "\n" not in message
    for name in names:
        assert name in message


def test_a_missing_rooms_file_is_named(tmp_path: Path):
    with pytest.raises(RoomsFileError, match=r"nothing\.toml: cannot read it"):
        load_rooms_file(str(tmp_path / "nothing.toml"))
