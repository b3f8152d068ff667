"""Merging deltas in large rooms: fewer events, the same text, no delay for small rooms."""

from __future__ import annotations

import asyncio

from server.rooms import Room
from server.rooms.batching import BATCH_MIN_RECIPIENTS, PRESENCE_WINDOW, DeltaBatcher
from tests.test_room import Recorder, ScriptedProvider


async def test_first_delta_goes_at_once_then_a_burst_is_merged():
    sent: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def send(text: str) -> None:
        sent.append(text)

    batcher = DeltaBatcher(send, 0.05, lambda coro: tasks.append(asyncio.ensure_future(coro)))
    await batcher.add("a")
    assert sent == ["a"]
    for piece in "bcd":
        await batcher.add(piece)
    assert sent == ["a"]  # within the window: held
    await asyncio.sleep(0.08)
    assert sent == ["a", "bcd"]  # the timer sent them as one
    await batcher.add("e")
    await batcher.flush()
    assert "".join(sent) == "abcde"
    await asyncio.gather(*tasks)


async def test_no_window_means_every_delta_at_once():
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    batcher = DeltaBatcher(send, 0.0, lambda coro: asyncio.ensure_future(coro))
    for piece in "abc":
        await batcher.add(piece)
    assert sent == ["a", "b", "c"]


async def run_room(
    people: int, burst: int, recorder: Recorder | None = None
) -> tuple[Recorder, Room]:
    provider = ScriptedProvider()
    recorder = recorder or Recorder()
    room = Room(provider, await provider.open(), recorder)
    await room.start()
    for i in range(people):
        await room.register(f"s{i}", f"u{i}", f"P{i}")

    async def burst_run(thread_id, request):  # type: ignore[no-untyped-def]
        from server.providers.base import TextDelta

        for i in range(burst):
            yield TextDelta(f"{i} ")

    provider.run = burst_run  # type: ignore[method-assign]
    await room.post("s0", "go")
    for _ in range(400):
        await asyncio.sleep(0.01)
        if not room.busy and room.transcript:
            break
    return recorder, room


async def test_a_large_room_gets_fewer_delta_events_with_the_same_text():
    recorder, room = await run_room(BATCH_MIN_RECIPIENTS, burst=200)
    deltas = recorder.data("s1", "message-delta")
    text = "".join(f"{i} " for i in range(200))
    assert "".join(d["delta"] for d in deltas) == text == room.transcript[-1].content
    assert len(deltas) < 50  # an unpaced burst collapses into a few frame-sized events
    await room.close()


async def test_a_small_room_gets_every_delta():
    recorder, room = await run_room(3, burst=200)
    assert len(recorder.data("s1", "message-delta")) == 200
    await room.close()


class CountingRecorder(Recorder):
    """Also counts how many times the room handed the emitter a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.batched: list[list[str]] = []  # the event names of each batch

    async def deliver_many(self, events):  # type: ignore[no-untyped-def]
        self.batches.append(len(events))
        self.batched.append([event for event, _, _ in events])
        await super().deliver_many(events)


async def test_a_large_room_gets_an_answers_start_and_first_delta_in_one_write():
    recorder = CountingRecorder()
    _, room = await run_room(BATCH_MIN_RECIPIENTS, burst=3, recorder=recorder)
    assert ["message-start", "message-delta"] in recorder.batched
    names = recorder.events("s1")
    assert names[names.index("message-start") + 1] == "message-delta"
    assert "".join(d["delta"] for d in recorder.data("s1", "message-delta")) == "0 1 2 "
    await room.close()


async def test_a_small_room_gets_an_answers_start_at_once():
    recorder = CountingRecorder()
    _, room = await run_room(3, burst=3, recorder=recorder)
    assert recorder.batched == [] and "message-start" in recorder.events("s1")
    await room.close()


async def large_room(recorder: Recorder) -> Room:
    provider = ScriptedProvider()
    room = Room(provider, await provider.open(), recorder)
    await room.start()
    for i in range(BATCH_MIN_RECIPIENTS):
        await room.register(f"s{i}", f"u{i}", f"P{i}")
    await asyncio.sleep(PRESENCE_WINDOW * 2)  # let the room's own join storm go out
    return room


async def test_a_join_storm_in_a_large_room_arrives_whole_in_order_and_together():
    recorder = CountingRecorder()
    room = await large_room(recorder)
    recorder.sent.clear()
    recorder.batches.clear()
    welcomes = {}
    for i in range(30):  # thirty people arrive back to back
        welcomes[f"n{i}"] = await room.register(f"n{i}", f"nu{i}", f"New{i}")
    await room.post("s0", "hello everyone")  # anything else sends what is held first
    newcomers = [f"New{i}" for i in range(30)]
    # an earlier member: every arrival once, in order, and before the message
    events = [(e, d) for s, e, d in recorder.sent if s == "s1"]
    assert [d["name"] for e, d in events if e == "join"] == newcomers
    assert events[-1][0] == "message"
    # a newcomer: told only of those who came after it; the rest were in its welcome
    for i in range(30):
        joins = [d["name"] for d in recorder.data(f"n{i}", "join")]
        assert joins == newcomers[i + 1:]
        listed = [u["name"] for u in welcomes[f"n{i}"]["users"]]
        assert listed[-(i + 1):] == newcomers[: i + 1]
    # held, then together; the message that ended the wait went out in the same write
    assert sum(recorder.batches) == 31 and len(recorder.batches) < 30
    assert recorder.batched[-1][-1] == "message"
    await room.close()


async def test_a_join_then_leave_in_a_large_room_keeps_its_order_and_spares_the_leaver():
    recorder = Recorder()
    room = await large_room(recorder)
    recorder.sent.clear()
    await room.register("x", "ux", "Xavier")
    await room.leave("x")
    await room.register("y", "uy", "Yolanda")
    await asyncio.sleep(PRESENCE_WINDOW * 2)  # no other event: the window ends it
    assert [(e, d["name"]) for e, d in [(e, d) for s, e, d in recorder.sent if s == "s5"]] == [
        ("join", "Xavier"), ("leave", "Xavier"), ("join", "Yolanda")
    ]
    assert recorder.events("x") == ["welcome"]  # not told of its own arrival, nor of Yolanda
    assert recorder.data("y", "join") == [] and recorder.data("y", "leave") == []
    await room.close()


async def test_a_small_room_is_told_of_each_arrival_at_once():
    recorder = Recorder()
    provider = ScriptedProvider()
    room = Room(provider, await provider.open(), recorder)
    await room.start()
    await room.register("a", "ua", "Ann")
    await room.register("b", "ub", "Ben")
    assert recorder.data("a", "join") == [{"user_id": "ub", "name": "Ben"}]  # no waiting
    await room.close()
