"""Merging deltas in large rooms: fewer events, the same text, no delay for small rooms."""

from __future__ import annotations

import asyncio

from server.batching import BATCH_MIN_RECIPIENTS, DeltaBatcher
from server.room import Room
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


async def run_room(people: int, burst: int) -> tuple[Recorder, Room]:
    provider = ScriptedProvider()
    recorder = Recorder()
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
