"""Limits and hostile input: nicknames, message size, payload size, participants, rate and queue
limits, the room password, browser origins, reserved and unknown events, and property-based
fuzzing of every handler. A refused request changes nothing: no broadcast, no transcript entry,
no lock; the server keeps answering normally afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import unicodedata
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.messages import is_safe_id
from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import FakeUpstream, Stall, Text
from tests.tools_for_tests import Crowd, Harness, Person, running_room, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    made = Crowd()
    yield made
    await made.close()


async def quiet_for(peer: Person, seen: int, settle: float = 0.1) -> None:
    """Nothing more reached `peer` (it saw `seen` events before)."""
    await asyncio.sleep(settle)
    assert peer.events[seen:] == []


async def refused(person: Person, event: str, payload: Any, code: str) -> None:
    ack = await person.call(event, payload)
    assert ack["ok"] is False and ack["code"] == code and ack["message"]
    error = await person.wait_for("error", where=lambda e: e["code"] == code)
    assert error["message"] == ack["message"]


# ----- nicknames -----


@pytest.mark.parametrize(
    ("raw", "bound"),
    [
        ("  Zoë  ", "Zoë"),
        ("A" * 32, "A" * 32),
        ("🦊" * 32, "🦊" * 32),  # the limit counts characters, not bytes
        ("李雷 & Ünïcødé-Ñame", "李雷 & Ünïcødé-Ñame"),
        ("<b>Bob</b>", "<b>Bob</b>"),  # kept verbatim: clients must render names as text
    ],
)
async def test_acceptable_nicknames_are_bound_trimmed(
    raw: str, bound: str, server: RunningServer, crowd: Crowd
):
    [watcher] = await crowd.room(server, "Watcher")
    person = await crowd(server).connect()
    ack = await person.call("register", {"name": raw})
    assert ack["ok"] is True and ack["name"] == bound
    assert await watcher.wait_for("join") == {"user_id": ack["user_id"], "name": bound}


@pytest.mark.parametrize(
    "raw",
    [
        "A" * 33, "🦊" * 33, "", "   ", "\u3000",
        "tab\there", "nul\x00", "bell\x07", "del\x7f", "esc\x1b[31m",
        "zero\u200bwidth", "bidi\u202eoverride", "bom\ufeff", "soft\u00adhyphen",
        "private\ue000use", "lone\ud800surrogate", "ne\x85l",
    ],
)
async def test_bad_nicknames_are_refused_without_side_effects(
    raw: str, server: RunningServer, crowd: Crowd
):
    [watcher] = await crowd.room(server, "Watcher")
    person = await crowd(server).connect()
    seen = len(watcher.events)
    await refused(person, "register", {"name": raw}, "invalid_name")
    await quiet_for(watcher, seen)
    assert [u["name"] for u in server.room.users()] == ["Watcher"]


async def test_max_name_length_setting(start_server: StartServer, crowd: Crowd):
    server = await start_server(max_name_length=5)
    ok = await crowd(server).connect()
    assert (await ok.call("register", {"name": " abcde "}))["name"] == "abcde"
    too_long = await crowd(server).connect()
    await refused(too_long, "register", {"name": "abcdef"}, "invalid_name")


@pytest.mark.parametrize("other", ["alice", "ALICE", " Alice ", "aLiCe"])
async def test_nicknames_are_unique_whatever_the_case(
    other: str, server: RunningServer, crowd: Crowd
):
    [alice] = await crowd.room(server, "Alice")
    person = await crowd(server).connect()
    seen = len(alice.events)
    await refused(person, "register", {"name": other}, "name_taken")
    await quiet_for(alice, seen)


async def test_case_folding_covers_more_than_ascii(server: RunningServer, crowd: Crowd):
    await crowd.room(server, "Straße")
    person = await crowd(server).connect()
    await refused(person, "register", {"name": "STRASSE"}, "name_taken")


@pytest.mark.parametrize(("first", "second"), [("Zo\u00eb", "Zoe\u0308"), ("Bob", "Ｂｏｂ")])
async def test_look_alike_nicknames_are_the_same_nickname(
    first: str, second: str, server: RunningServer, crowd: Crowd
):
    assert unicodedata.normalize("NFKC", first) == unicodedata.normalize("NFKC", second)
    await crowd.room(server, first)
    person = await crowd(server).connect()
    await refused(person, "register", {"name": second}, "name_taken")


async def test_an_online_user_id_under_another_nickname_gets_a_fresh_id(
    server: RunningServer, crowd: Crowd
):
    [alice] = await crowd.room(server, "Alice")
    mallory = crowd(server, "Mallory", user_id=alice.user_id)
    welcome = await mallory.join()
    assert welcome["user_id"] != alice.user_id and welcome["user_id"].startswith("u_")
    assert await alice.wait_for("join") == {"user_id": welcome["user_id"], "name": "Mallory"}


async def test_the_same_person_in_two_tabs_is_one_presence(server: RunningServer, crowd: Crowd):
    [alice, bob] = await crowd.room(server, "Alice", "Bob")
    tab = crowd(server, "Alice", user_id=alice.user_id)
    welcome = await tab.join()
    assert welcome["user_id"] == alice.user_id
    await tab.close()
    await asyncio.sleep(0.1)
    assert [e for e, _ in bob.events if e in ("join", "leave")] == []
    await alice.close()
    assert await bob.wait_for("leave") == {"user_id": alice.user_id, "name": "Alice"}


# ----- message length and ids -----


async def test_max_message_length_counts_characters(start_server: StartServer, crowd: Crowd):
    server = await start_server(max_message_length=10)
    alice, bob = await crowd.room(server, "Alice", "Bob")
    assert (await alice.call("message", {"content": "🦊" * 10}))["ok"] is True
    await bob.wait_for("ai-end")
    seen = len(bob.events)
    await refused(alice, "message", {"content": "🦊" * 11}, "message_too_long")
    await refused(alice, "message", {"content": "\u3000\n\t "}, "empty_message")
    await quiet_for(bob, seen)
    assert len(server.room.transcript) == 2


async def test_a_repeated_client_id_is_replaced(server: RunningServer, crowd: Crowd):
    alice, bob = await crowd.room(server, "Alice", "Bob")
    first = await alice.call("message", {"content": "one", "id": "my-id-1"})
    assert first["id"] == "my-id-1"
    second = await bob.call("message", {"content": "two", "id": "my-id-1"})
    assert second["ok"] is True and second["id"] != "my-id-1"
    await alice.wait_for("ai-end", count=2)
    ids = [m.id for m in server.room.transcript]
    assert len(ids) == len(set(ids)) == 4


async def test_a_client_cannot_take_the_id_of_the_answer_being_streamed(
    server: RunningServer, upstream: FakeUpstream, crowd: Crowd
):
    alice, mallory = await crowd.room(server, "Alice", "Mallory")
    upstream.enqueue(Text("one two three four five six", delay=0.1))
    await alice.say("slow answer please")
    start = await mallory.wait_for("message-start")
    ack = await mallory.call("message", {"content": "mine now", "id": start["id"]})
    assert ack["ok"] is True
    await alice.wait_for("ai-end", count=2)
    ids = [m.id for m in server.room.transcript]
    assert len(ids) == len(set(ids)), ids
    assert ack["id"] != start["id"]


async def test_content_that_cannot_be_encoded_is_refused_up_front(
    server: RunningServer, upstream: FakeUpstream, crowd: Crowd
):
    alice, bob = await crowd.room(server, "Alice", "Bob")
    seen = len(bob.events)
    ack = await alice.call("message", {"content": "broken \ud800 text"})
    await asyncio.sleep(0.3)
    assert ack["ok"] is False and ack["code"] == "invalid_payload"
    assert bob.events[seen:] == []


# ----- Socket.IO payload size -----


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_packet_over_max_payload_bytes_drops_only_its_sender(
    transport: str, start_server: StartServer, crowd: Crowd
):
    server = await start_server(max_payload_bytes=4096)
    alice, bob = await crowd.room(server, "Alice", "Bob")
    big = crowd(server, "Big")
    await big.sio.connect(server.url, transports=[transport], wait_timeout=5)
    assert (await big.call("register", {"name": "Big"}))["ok"] is True
    await alice.wait_for("join", where=lambda j: j["name"] == "Big")
    await big.sio.emit("message", {"content": "x" * 10_000})
    left = await alice.wait_for("leave")
    assert left["name"] == "Big"
    await wait_until(lambda: not big.sio.connected, what="the big sender to be dropped")
    assert [m for m in alice.of("message") if m["role"] == "user"] == []
    assert server.room.transcript == [] and not server.room.busy
    # The others carry on as if nothing happened.
    await bob.say("still here?")
    await alice.wait_for("ai-end")
    assert alice.answers()[-1]["content"] == "Echo: [Bob] still here?"
    assert [m["content"] for m in alice.of("message")] == ["still here?"]


# ----- participants, rate, queue -----


async def test_max_participants(start_server: StartServer, crowd: Crowd):
    server = await start_server(max_participants=2)
    alice, bob = await crowd.room(server, "Alice", "Bob")
    carol = await crowd(server, "Carol").connect()
    seen = len(alice.events)
    await refused(carol, "register", {"name": "Carol"}, "room_full")
    await quiet_for(alice, seen)
    # A second tab of someone already in the room is not a new participant.
    tab = crowd(server, "Alice", user_id=alice.user_id)
    assert (await tab.join())["user_id"] == alice.user_id
    await bob.close()
    await alice.wait_for("leave")
    assert (await carol.call("register", {"name": "Carol"}))["ok"] is True


async def test_rate_limit_per_socket(
    start_server: StartServer, upstream: FakeUpstream, crowd: Crowd
):
    server = await start_server(rate_limit_per_minute=3)
    alice, bob = await crowd.room(server, "Alice", "Bob")
    for i in range(3):
        assert (await alice.call("message", {"content": f"m{i}"}))["ok"] is True
    await bob.wait_for("ai-end", count=3)
    seen = len(bob.events)
    await refused(alice, "message", {"content": "one too many"}, "rate_limited")
    await quiet_for(bob, seen)
    assert len(server.room.transcript) == 6 and len(upstream.model_requests()) == 3
    # The limit is per socket: Bob is not affected.
    assert (await bob.call("message", {"content": "bob is fine"}))["ok"] is True
    await alice.wait_for("ai-end", count=4)


async def test_max_queued_turns(start_server: StartServer, upstream: FakeUpstream, crowd: Crowd):
    server = await start_server(max_queued_turns=2)
    alice, bob = await crowd.room(server, "Alice", "Bob")
    upstream.enqueue(Stall(0.5, then=Text("first answer")))
    await alice.say("first")
    await bob.wait_for("ai-start")
    assert (await alice.call("message", {"content": "second"}))["queued"] == 1
    assert (await bob.call("message", {"content": "third"}))["queued"] == 2
    await alice.wait_for("message", where=lambda m: m["content"] == "third")
    seen = len(bob.events)
    await refused(alice, "message", {"content": "fourth"}, "busy_queue_full")
    await asyncio.sleep(0.1)
    assert "message" not in [e for e, _ in bob.events[seen:]]
    await bob.wait_for("ai-end", count=3)
    assert [m.content for m in server.room.transcript if m.role == "user"] == [
        "first", "second", "third"
    ]
    assert len(bob.answers()) == 3


# ----- access control: password and origins -----


@pytest.mark.parametrize("auth", [None, {}, {"token": "wrong"}, {"token": ""}, "s3cret",
                                  {"token": ["s3cret"]}, {"password": "nope"}])
async def test_a_room_password_refuses_without_the_right_token(
    auth: Any, start_server: StartServer, crowd: Crowd
):
    server = await start_server(room_password="s3cret")
    person = crowd(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await person.connect(**({} if auth is None else {"auth": auth}))
    # python-socketio raises a generic "failed to connect"; the reason arrives as connect_error.
    await wait_until(lambda: bool(person.refusals), what="the refusal reason")
    [reason] = person.refusals
    assert "password" in reason["message"] and "s3cret" not in json.dumps(reason)
    assert server.rooms.people() == 0


@pytest.mark.parametrize("auth", [{"token": "s3cret"}, {"password": "s3cret"}])
async def test_a_room_password_admits_the_right_token(
    auth: dict[str, str], start_server: StartServer, crowd: Crowd
):
    server = await start_server(room_password="s3cret")
    alice = crowd(server, "Alice")
    await alice.connect(auth=auth)
    assert (await alice.join())["name"] == "Alice"
    await alice.say("hello")
    await alice.wait_for("ai-end")


def origin_cases() -> Iterator[Any]:
    for transport in ("websocket", "polling"):
        for origin, allowed in [
            ("http://evil.example", False),
            ("null", False),
            ("http://127.0.0.1:1", False),  # same host, another port
            ("https://chat.example.com", True),  # listed in CORS_ORIGINS
            ("http://localhost:5173", False),  # a default, but not in this server's list
            ("SELF", True),  # the server's own origin
            (None, True),  # not a browser
        ]:
            yield pytest.param(transport, origin, allowed, id=f"{transport}-{origin}")


@pytest.mark.parametrize(("transport", "origin", "allowed"), list(origin_cases()))
async def test_browser_origins(
    transport: str, origin: str | None, allowed: bool, start_server: StartServer
):
    # (A polling client's clean disconnect waits for its pending long-poll: up to 25 s. The
    # test aborts it instead, and gives the server a short shutdown budget for that request.)
    server = await start_server(cors_origins=("https://chat.example.com",), shutdown_timeout=0.5)
    headers = {} if origin is None else {"Origin": server.url if origin == "SELF" else origin}
    client = socketio.AsyncClient(reconnection=False)
    try:
        if allowed:
            await client.connect(server.url, transports=[transport], headers=headers,
                                 wait_timeout=5)
            ack = await client.call("register", {"name": "Visitor"}, timeout=5)
            assert ack["ok"] is True
        else:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(server.url, transports=[transport], headers=headers,
                                     wait_timeout=5)
            assert server.rooms.people() == 0
    finally:
        if client.connected:
            await client.eio.disconnect(abort=True)


async def test_the_default_origins_include_the_dev_client(server: RunningServer):
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, transports=["websocket"],
                         headers={"Origin": "http://localhost:5173"}, wait_timeout=5)
    await client.disconnect()


# ----- reserved and malformed events -----


async def test_an_event_named_disconnect_is_not_a_disconnect(
    server: RunningServer, crowd: Crowd
):
    alice, mallory = await crowd.room(server, "Alice", "Mallory")
    seen = len(alice.events)
    await mallory.raw_emit("disconnect", "transport close")
    await asyncio.sleep(0.2)
    assert mallory.sio.connected
    assert alice.events[seen:] == []
    assert [u["name"] for u in server.room.users()] == ["Alice", "Mallory"]


async def test_an_event_named_connect_changes_nothing(
    start_server: StartServer, crowd: Crowd
):
    server = await start_server(room_password="s3cret")
    alice, mallory = crowd(server, "Alice"), crowd(server, "Mallory")
    for person in (alice, mallory):
        await person.connect(auth={"token": "s3cret"})
        await person.join()
    seen = len(alice.events)
    await mallory.raw_emit("connect", {"HTTP_ORIGIN": "x"}, {"token": "s3cret"})
    await mallory.raw_emit("connect")
    await asyncio.sleep(0.2)
    assert mallory.sio.connected and alice.events[seen:] == []
    assert (await mallory.call("stop")) == {"ok": True, "stopped": False}


@pytest.mark.parametrize("event", ["register", "message", "stop"])
async def test_extra_arguments_are_refused_with_an_error(
    event: str, server: RunningServer, crowd: Crowd
):
    [alice] = await crowd.room(server, "Alice")
    ack = await alice.call_raw(event, {"name": "X", "content": "x"}, "extra", timeout=1)
    assert ack["ok"] is False and ack["code"] == "invalid_payload"


async def test_packets_that_mean_nothing_are_ignored(server: RunningServer, crowd: Crowd):
    """Well-formed Socket.IO packets with nothing behind them (a number or null as event name,
    an event for a namespace nobody joined, acks nobody asked for): the sender stays
    connected, the others see nothing."""
    alice, mallory = await crowd.room(server, "Alice", "Mallory")
    seen = len(alice.events)
    for frame in ["2[1]", "2[null]", '2/nowhere,["message"]', "3[]", "31[1]",
                  '2["no-such-event",1]']:
        await mallory.sio.eio.send(frame)
    assert (await mallory.call("stop")) == {"ok": True, "stopped": False}
    await quiet_for(alice, seen)
    await mallory.say("still works")
    await alice.wait_for("ai-end")
    assert alice.answers()[-1]["content"] == "Echo: [Mallory] still works"


@pytest.mark.parametrize("frame", [
    "2[]", "2{}", '2"x"', "2", "9", "21[]", "4", '2[["message"]]', '2[{}]', '2["message"',
    "x" * 5000,
])
async def test_a_packet_that_cannot_be_decoded_closes_only_its_senders_connection(
    server: RunningServer, crowd: Crowd, frame: str, caplog: pytest.LogCaptureFixture
):
    """Engine.IO messages that are not Socket.IO packets python-socketio can act on close the
    sender's connection (as socket.io's Node server does on a parse error): the others see it
    leave, nothing is logged as an error, and the room goes on."""
    alice, mallory = await crowd.room(server, "Alice", "Mallory")
    await mallory.sio.eio.send(frame)
    await alice.wait_for("leave", where=lambda d: d["name"] == "Mallory")
    assert [u["name"] for u in server.room.users()] == ["Alice"]
    await alice.say("still works")
    await alice.wait_for("ai-end")
    assert alice.answers()[-1]["content"] == "Echo: [Alice] still works"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ----- property-based: arbitrary payloads to every handler -----

KNOWN_EVENTS = {"register", "message", "stop", "connect", "disconnect"}
MAX_MESSAGE = 2000
HUGE = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "🦊", " ", "\x00", "\n"]),
                 st.integers(1_000, 100_000))
SCALARS = (st.none() | st.booleans() | st.integers()
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.binary(max_size=40) | HUGE)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12,
)
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b"])
NAMES = st.one_of(
    st.text(max_size=40), HUGE, SURROGATES, JSON_VALUES,
    st.sampled_from(["Watcher", "watcher", " WATCHER ", "\tbad", "ok\u200b", "system", "Ai"]),
)
EXTRAS = st.dictionaries(st.sampled_from(["user_id", "role", "id", "created_at", "x", "name"]),
                         JSON_VALUES, max_size=4)
REGISTER_PAYLOADS = st.one_of(
    JSON_VALUES,
    st.builds(lambda name, extra: {**extra, "name": name}, NAMES, EXTRAS),
)
WHITESPACE = st.text(alphabet=st.sampled_from([" ", "\t", "\n", "\r", "\u3000", "\u2003",
                                               "\x0b", "\x0c", "\x85", "\u2029"]), max_size=50)
TOO_LONG = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "🦊", "é"]),
                     st.integers(MAX_MESSAGE + 1, 100_000))
INVALID_MESSAGES = st.one_of(
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    EXTRAS,  # no content at all
    st.builds(lambda c, extra: {**extra, "content": c},
              JSON_VALUES.filter(lambda v: not isinstance(v, str)), EXTRAS),
    st.builds(lambda c, extra: {**extra, "content": c}, WHITESPACE | TOO_LONG, EXTRAS),
)
VALID_CONTENT = st.one_of(
    st.text(min_size=1, max_size=200).filter(lambda s: bool(s.strip())),
    st.builds(lambda n: "y" * n, st.integers(1, MAX_MESSAGE)),
)
CLIENT_IDS = st.one_of(JSON_VALUES, st.from_regex(r"\A[A-Za-z0-9_\-.:]{1,64}\Z"),
                       st.sampled_from(["dup-id", "x" * 65, "bad id", ""]))

PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def expected_register(payload: Any) -> str:
    """The outcome the protocol prescribes for `register` (the name Watcher is taken)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return "invalid_payload"
    name = payload["name"].strip()
    if not name or len(name) > 32 or any(
        unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")
        for c in name
    ):
        return "invalid_name"
    # Look-alikes are the same nickname; "system", the assistant's name and handle are reserved.
    reserved = ("watcher", "system", "roundtable ai", "ai")
    if unicodedata.normalize("NFKC", name).casefold() in reserved:
        return "name_taken"
    return "ok"


def expected_message(payload: Any) -> str:
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), str):
        return "invalid_payload"
    if not payload["content"].strip():
        return "empty_message"
    if any("\ud800" <= c <= "\udfff" for c in payload["content"]):
        return "invalid_payload"  # lone surrogates are not text
    if len(payload["content"]) > MAX_MESSAGE:
        return "message_too_long"
    return "ok"


class Fuzz:
    """One server, a registered watcher, and an attacker socket, reused across examples."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.watcher = h.person("Watcher")
        h.run(self.watcher.join())
        self.attacker = h.person("Attacker")
        h.run(self.attacker.connect())

    def state(self) -> Any:
        room = self.h.server.room

        async def read() -> Any:
            return ([m.to_wire() for m in room.transcript], room.busy, room.queued(),
                    room.users(), len(self.h.upstream.model_requests()))

        return self.h.run(read())

    def barrier(self) -> None:
        """Everything the server sent the watcher so far has been received."""
        ack = self.h.run(self.watcher.call("stop"))
        assert ack == {"ok": True, "stopped": False}

    def fresh_attacker(self, register: bool = False) -> None:
        async def renew() -> None:
            await self.attacker.close()
            room = self.h.server.room
            await wait_until(lambda: all(u["name"] != "Attacker" for u in room.users()),
                             what="the old attacker to leave")
            self.attacker = await self.h.make("Attacker")
            await self.attacker.connect()
            if register:
                await self.attacker.join()

        self.h.run(renew())


@pytest.fixture
def fuzz() -> Iterator[Fuzz]:
    with running_room(rate_limit_per_minute=100_000, max_payload_bytes=5_000_000,
                      max_message_length=MAX_MESSAGE) as h:
        yield Fuzz(h)


@pytest.mark.timeout(180)
def test_register_with_arbitrary_payloads(fuzz: Fuzz):
    @PROPERTY
    @given(payload=REGISTER_PAYLOADS)
    def check(payload: Any) -> None:
        before = fuzz.state()
        seen = len(fuzz.watcher.events)
        ack = fuzz.h.run(fuzz.attacker.call_raw("register", payload))
        outcome = expected_register(payload)
        fuzz.barrier()
        new = fuzz.watcher.events[seen:]
        if outcome != "ok":
            assert ack["ok"] is False and ack["code"] == outcome, (payload, ack)
            assert new == []
            assert fuzz.state() == before
            return
        assert ack["ok"] is True and ack["name"] == payload["name"].strip()
        uid = payload.get("user_id")
        if is_safe_id(uid) and uid != fuzz.watcher.user_id:
            assert ack["user_id"] == uid
        else:
            assert ack["user_id"].startswith("u_")
        assert new == [("join", {"user_id": ack["user_id"], "name": ack["name"]})]
        fuzz.fresh_attacker()
        fuzz.h.run(fuzz.watcher.wait_for("leave", count=len(fuzz.watcher.of("join"))))
        transcript, busy, queued, users, requests = fuzz.state()
        assert (transcript, busy, queued, requests) == (before[0], False, 0, before[4])
        assert [u["name"] for u in users] == ["Watcher"]

    check()


@pytest.mark.timeout(180)
def test_invalid_messages_change_nothing(fuzz: Fuzz):
    fuzz.fresh_attacker(register=True)

    @PROPERTY
    @given(payload=INVALID_MESSAGES)
    def check(payload: Any) -> None:
        before = fuzz.state()
        seen = len(fuzz.watcher.events)
        ack = fuzz.h.run(fuzz.attacker.call_raw("message", payload))
        outcome = expected_message(payload)
        assert outcome != "ok"
        assert ack["ok"] is False and ack["code"] == outcome
        fuzz.barrier()
        assert fuzz.watcher.events[seen:] == []
        assert fuzz.state() == before

    check()
    errors = fuzz.attacker.of("error")
    assert errors and all(e["code"] in ("invalid_payload", "empty_message", "message_too_long")
                          for e in errors)


@pytest.mark.timeout(180)
def test_valid_messages_are_posted_as_their_sender_whatever_else_they_say(fuzz: Fuzz):
    fuzz.fresh_attacker(register=True)
    attacker = fuzz.attacker

    @settings(PROPERTY, max_examples=30)
    @given(content=VALID_CONTENT, extra=EXTRAS, client_id=CLIENT_IDS)
    def check(content: str, extra: dict[str, Any], client_id: Any) -> None:
        used = {m["id"] for m in fuzz.state()[0]}
        ends = len(fuzz.watcher.of("ai-end"))
        seen = len(fuzz.watcher.events)
        ack = fuzz.h.run(attacker.call("message", {**extra, "id": client_id,
                                                   "content": content}))
        assert ack["ok"] is True
        if is_safe_id(client_id) and client_id not in used:
            assert ack["id"] == client_id
        else:
            assert ack["id"] != client_id and ack["id"].startswith("m_")
        fuzz.h.run(fuzz.watcher.wait_for("ai-end", count=ends + 1))
        new = fuzz.watcher.events[seen:]
        [message] = [d for e, d in new if e == "message"]
        assert message["id"] == ack["id"] and message["content"] == content
        assert (message["name"], message["user_id"], message["role"]) == (
            "Attacker", attacker.user_id, "user")
        [answer] = [m for e, d in new if e == "message-list" for m in d]
        assert answer["content"] == f"Echo: [Attacker] {content}"
        assert answer["reply_to"] == ack["id"]

    check()


@pytest.mark.timeout(180)
def test_stop_with_arbitrary_payloads(fuzz: Fuzz):
    @PROPERTY
    @given(payload=st.one_of(st.just(()), JSON_VALUES.map(lambda v: (v,))),
           registered=st.booleans())
    def check(payload: tuple[Any, ...], registered: bool) -> None:
        fuzz.fresh_attacker(register=registered)
        before = fuzz.state()
        seen = len(fuzz.watcher.events)
        ack = fuzz.h.run(fuzz.attacker.call_raw("stop", *payload))
        if registered:
            assert ack == {"ok": True, "stopped": False}
        else:
            assert ack["ok"] is False and ack["code"] == "not_registered"
        fuzz.barrier()
        new = [(e, d) for e, d in fuzz.watcher.events[seen:] if e not in ("join", "leave")]
        assert new == []
        assert fuzz.state()[:3] == before[:3]

    check()


@pytest.mark.timeout(180)
def test_unknown_events_are_ignored(fuzz: Fuzz):
    fuzz.fresh_attacker(register=True)
    names = st.one_of(st.text(max_size=30).filter(lambda n: n not in KNOWN_EVENTS),
                      st.integers(), st.none(), st.sampled_from(["*", "error", "welcome",
                                                                  "message-list", "ai-start"]))

    @PROPERTY
    @given(event=names, args=st.lists(JSON_VALUES, max_size=3),
           ack_id=st.none() | st.integers(0, 10_000))
    def check(event: Any, args: list[Any], ack_id: int | None) -> None:
        before = fuzz.state()
        seen = len(fuzz.watcher.events)
        mine = len(fuzz.attacker.events)
        fuzz.h.run(fuzz.attacker.raw_emit(event, *args, ack_id=ack_id))
        assert fuzz.h.run(fuzz.attacker.call("stop")) == {"ok": True, "stopped": False}
        fuzz.barrier()
        assert fuzz.watcher.events[seen:] == [] and fuzz.attacker.events[mine:] == []
        assert fuzz.state() == before

    check()
    # Still a working room.
    fuzz.h.run(fuzz.attacker.say("after all that"))
    fuzz.h.run(fuzz.watcher.wait_for("ai-end"))
    assert fuzz.watcher.answers()[-1]["content"] == "Echo: [Attacker] after all that"
