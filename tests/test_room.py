"""The room on its own: a recording emitter and a scripted provider, no sockets, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime
from typing import Any

import pytest

from server.providers.base import AssistantProfile, RunEvent, RunRequest, TextDelta
from server.providers.errors import ProviderUnavailable
from server.rooms import Fanout, Room, RoomError, RoomLimits, run_instructions


class Recorder(Fanout):
    """Emitter that records (recipient, event, data) in delivery order."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    async def deliver(self, event: str, data: Any, to: Collection[str]) -> None:
        for sid in to:
            self.sent.append((sid, event, data))

    def events(self, sid: str) -> list[str]:
        return [e for s, e, _ in self.sent if s == sid]

    def data(self, sid: str, event: str) -> list[Any]:
        return [d for s, e, d in self.sent if s == sid and e == event]


class ScriptedProvider:
    """Answers each turn with `reply(text)`; can be told to fail or to hold a turn open."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.deleted: list[str] = []
        self.requests: list[RunRequest] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False
        self.active = 0
        self.max_active = 0

    async def open(self) -> AssistantProfile:
        return AssistantProfile("Bot", "Be brief.")

    async def close(self) -> None:
        pass

    async def create_thread(self) -> str:
        self.threads.append(f"t{len(self.threads)}")
        return self.threads[-1]

    async def delete_thread(self, thread_id: str) -> None:
        self.deleted.append(thread_id)

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        self.requests.append(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.fail_next:
                self.fail_next = False
                yield TextDelta("partial ")
                raise ProviderUnavailable("boom")
            for word in ["Hi ", request.message.name, "!"]:
                if self.gate is not None:
                    await self.gate.wait()
                yield TextDelta(word)
        finally:
            self.active -= 1


@pytest.fixture
async def room() -> AsyncIterator[tuple[Room, Recorder, ScriptedProvider]]:
    provider = ScriptedProvider()
    recorder = Recorder()
    room = Room(provider, await provider.open(), recorder, RoomLimits(max_queued_turns=3))
    await room.start()
    yield room, recorder, provider
    await room.close()


async def settle(room: Room) -> None:
    for _ in range(200):
        await asyncio.sleep(0.005)
        if not room.busy and room.queued() == 0:
            return
    raise AssertionError("room did not settle")


async def test_turns_are_fifo_and_one_at_a_time(room: tuple[Room, Recorder, ScriptedProvider]):
    r, rec, provider = room
    await r.register("s1", "u1", "Ann")
    await r.register("s2", "u2", "Bob")
    await r.post("s1", "first")
    await r.post("s2", "second")
    await settle(r)
    assert provider.max_active == 1
    assert [m.content for m in r.transcript] == ["first", "Hi Ann!", "second", "Hi Bob!"]
    assert rec.events("s1").count("ai-start") == 2 == rec.events("s1").count("ai-end")


async def test_nicknames_are_unique_and_clean(room: tuple[Room, Recorder, ScriptedProvider]):
    r, _, _ = room
    await r.register("s1", "u1", "  Ann  ")
    assert r.users()[0]["name"] == "Ann"
    for bad, code in [("ANN", "name_taken"), ("", "invalid_name"), ("a\x07b", "invalid_name"),
                      ("x" * 33, "invalid_name")]:
        with pytest.raises(RoomError) as err:
            await r.register("s2", "u2", bad)
        assert err.value.code == code
    assert not r.is_registered("s2")


async def test_second_socket_of_same_person_is_one_presence(
    room: tuple[Room, Recorder, ScriptedProvider],
):
    r, rec, _ = room
    await r.register("s1", "u1", "Ann")
    await r.register("s9", "u9", "Zed")
    await r.register("s2", "u1", "Ann")  # a second tab, same identity
    assert len(r.users()) == 2
    assert rec.data("s9", "join") == []  # a second tab is not a new arrival
    assert rec.data("s1", "join") == [{"user_id": "u9", "name": "Zed"}]
    await r.leave("s1")
    assert rec.data("s9", "leave") == []
    await r.leave("s2")
    assert rec.data("s9", "leave") == [{"user_id": "u1", "name": "Ann"}]


async def test_provider_failure_keeps_partial_and_releases_lock(
    room: tuple[Room, Recorder, ScriptedProvider],
):
    r, rec, provider = room
    await r.register("s1", "u1", "Ann")
    provider.fail_next = True
    await r.post("s1", "hello")
    await settle(r)
    assert rec.events("s1")[-1] == "ai-end"
    notice = [m for m in rec.data("s1", "message") if m["role"] == "system"]
    assert notice and "unavailable" in notice[0]["content"]
    answer = r.transcript[-1]
    assert answer.content == "partial " and answer.incomplete
    await r.post("s1", "again")
    await settle(r)
    assert r.transcript[-1].content == "Hi Ann!" and not r.transcript[-1].incomplete


async def test_last_leave_cancels_run_and_deletes_thread(
    room: tuple[Room, Recorder, ScriptedProvider],
):
    r, _, provider = room
    provider.gate = asyncio.Event()
    await r.register("s1", "u1", "Ann")
    await r.post("s1", "hello")
    for _ in range(100):
        if provider.active:
            break
        await asyncio.sleep(0.005)
    await r.leave("s1")
    assert provider.active == 0
    assert provider.deleted == provider.threads == ["t0"]
    assert r.thread_id is None and r.transcript == [] and not r.busy


async def test_queue_limit_refuses_without_side_effects(
    room: tuple[Room, Recorder, ScriptedProvider],
):
    r, rec, provider = room
    provider.gate = asyncio.Event()
    await r.register("s1", "u1", "Ann")
    await r.register("s2", "u2", "Bob")
    for i in range(4):  # one running + three queued
        await r.post("s1", f"m{i}")
        await asyncio.sleep(0.01)
    before = len(rec.data("s2", "message"))
    with pytest.raises(RoomError) as err:
        await r.post("s1", "one too many")
    assert err.value.code == "busy_queue_full"
    assert len(rec.data("s2", "message")) == before
    provider.gate.set()
    await settle(r)


def test_instructions_name_the_sender_and_date():
    today = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    text = run_instructions("Be kind.", "Alice", today)
    assert text.startswith("Be kind.")
    assert "Please address the user as Alice." in text
    assert "2026-11-21" in text and "Saturday" in text


async def test_reserved_and_look_alike_nicknames(room: tuple[Room, Recorder, ScriptedProvider]):
    r, _, _ = room
    await r.register("s1", "u1", "Zoë")  # composed
    for name, code in [("Zoe\u0308", "name_taken"), ("ＺＯË", "name_taken"),
                       ("System", "name_taken"), ("bot", "name_taken"),
                       ("line\u2028break", "invalid_name")]:
        with pytest.raises(RoomError) as err:
            await r.register("s2", "u2", name)
        assert err.value.code == code, name
