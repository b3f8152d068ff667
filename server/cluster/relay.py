"""Each process's one reader of Redis: the outbound streams of the rooms it has people in (fanned
out to its own connections through the room Emitter), the inbound streams of the rooms it owns,
and the jobs that must not interleave with either (a newcomer's snapshot)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..rooms.emitter import Fanout
from .scripts import RoomKeys, wake_key

logger = logging.getLogger(__name__)

T = TypeVar("T")
BLOCK_MS = 2000  # one XREAD waits this long at most (the wake stream ends it sooner)
READ_COUNT = 1000  # entries per stream per read
RETRY = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between attempts while Redis cannot be read

Fields = dict[str, str]
Entry = tuple[str, Fields]


def stream_id(value: str) -> tuple[int, int]:
    """A stream id as a pair that compares in stream order."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Watcher(Protocol):
    """What a local room learns from its own events (busy, who is here, /stream listeners)."""

    def observe(self, event: str, data: Any) -> None: ...


class Relay:
    """One task reads every stream this process needs with one blocking XREAD."""

    def __init__(self, redis: Redis, node: str, fanout: Fanout,
                 on_health: Callable[[bool], None]) -> None:
        self._redis = redis
        self._fanout = fanout
        self._wake = wake_key(node)
        self._wake_pos = "$"
        self._out: dict[str, str] = {}  # room -> last outbound id delivered
        self._in: dict[str, str] = {}  # owned room -> last inbound id handed over
        self._inbound: dict[str, Callable[[list[Entry]], None]] = {}
        self._watchers: dict[str, Watcher] = {}
        self._pending: dict[str, list[tuple[tuple[int, int], str]]] = {}  # newcomers, from S
        self._jobs: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = deque()
        self._on_health = on_health
        self._task: asyncio.Task[None] | None = None
        self._waking: set[asyncio.Task[None]] = set()

    # ----- what this process reads -----
    def watch(self, room: str, watcher: Watcher) -> None:
        self._watchers[room] = watcher

    def drop(self, room: str) -> None:
        """The room has no one here any more."""
        self._out.pop(room, None)
        self._pending.pop(room, None)
        self._watchers.pop(room, None)

    def own(self, room: str, after: str, handler: Callable[[list[Entry]], None]) -> None:
        """Hand the room's inbound entries after `after` to `handler` (this process owns it)."""
        self._in[room] = after
        self._inbound[room] = handler
        self._poke()

    def disown(self, room: str) -> None:
        self._in.pop(room, None)
        self._inbound.pop(room, None)

    def admit(self, room: str, sid: str, at: str) -> None:
        """`sid` has the room's snapshot at outbound id `at`: it hears every event after it.
        Only called from a job, so the reader is not between reading and delivering."""
        pos = self._out.get(room)
        if pos is None:
            self._out[room] = at
            pos = at
        if stream_id(at) <= stream_id(pos):
            self._fanout.join(room, sid)
        else:
            self._pending.setdefault(room, []).append((stream_id(at), sid))

    async def send(self, sid: str, event: str, data: Any) -> None:
        """One event to one connection of this process (a newcomer's snapshot)."""
        await self._fanout.send(sid, event, data)

    async def serialized(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run `job` in the reader's task, between two reads."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        self._poke()
        return await future

    def _poke(self) -> None:
        """End the read in progress so the reader sees what changed."""
        if self._task is not None and not self._waking:  # one wake in flight is enough
            task = asyncio.get_running_loop().create_task(self._send_wake())
            self._waking.add(task)
            task.add_done_callback(self._waking.discard)

    async def _send_wake(self) -> None:
        try:
            await self._redis.xadd(self._wake, {"w": "1"}, maxlen=10, approximate=True)
        except RedisError:
            pass  # the reader is retrying anyway

    # ----- the reader -----
    def start(self) -> None:
        self._task = asyncio.create_task(self._read_forever(), name="cluster-relay")

    async def close(self) -> None:
        task = self._task
        while task is not None and not task.done():  # a read blocked in redis-py may need
            task.cancel()                            # more than one cancel to end
            await asyncio.wait({task}, timeout=1.0)
        for _, future in self._jobs:
            future.cancel()
        await asyncio.gather(*self._waking, return_exceptions=True)

    async def _read_forever(self) -> None:
        failures = 0
        while True:
            try:
                if failures:  # answering again? say so now, not after a read that may block
                    await self._redis.ping()
                    logger.info("reading Redis again")
                    self._on_health(True)
                    failures = 0
                await self._read_once()
            except RedisError as exc:
                if not failures:
                    logger.warning("cannot read Redis (%s); retrying", exc)
                    self._on_health(False)
                await asyncio.sleep(RETRY[min(failures, len(RETRY) - 1)])
                failures += 1
            except Exception:
                logger.exception("the cluster reader failed; restarting it")
                await asyncio.sleep(1.0)
            await self._run_jobs()

    async def _read_once(self) -> None:
        streams: dict[Any, Any] = {self._wake: self._wake_pos}
        streams.update({RoomKeys(room).out: pos for room, pos in self._out.items()})
        streams.update({RoomKeys(room).inbound: pos for room, pos in self._in.items()})
        block = 0 if self._jobs else BLOCK_MS
        reply: Any = await self._redis.xread(streams, count=READ_COUNT, block=block or None)
        for name, entries in reply or ():
            await self._dispatch(name, entries)

    async def _dispatch(self, name: str, entries: list[Entry]) -> None:
        if name == self._wake:
            self._wake_pos = entries[-1][0]
            return
        room, _, kind = name[len("rt:{"):].rpartition("}:")
        if kind == "in":
            if room in self._in and entries:
                self._in[room] = entries[-1][0]
                self._inbound[room](entries)
            return
        if room in self._out:
            await self._deliver(room, entries)

    async def _deliver(self, room: str, entries: list[Entry]) -> None:
        """Each event once, in stream order, to this process's connections in the room."""
        pending = self._pending.get(room)
        watcher = self._watchers.get(room)
        fanout = self._fanout
        for entry_id, fields in entries:
            self._out[room] = entry_id
            if pending:
                self._join_until(room, pending, stream_id(entry_id), inclusive=False)
            event = fields["e"]
            raw = fields.get("d", "")
            data = json.loads(raw) if raw else None
            if watcher is not None:
                watcher.observe(event, data)
            if event.startswith("~"):  # for the rooms' own bookkeeping only
                continue
            skip = json.loads(fields["x"]) if "x" in fields else ()
            await fanout.emit(room, event, data, skip, fields.get("h") == "1")
        if pending and entries:
            self._join_until(room, pending, stream_id(entries[-1][0]), inclusive=True)

    def _join_until(self, room: str, pending: list[tuple[tuple[int, int], str]],
                    before: tuple[int, int], inclusive: bool) -> None:
        ready = [item for item in pending if item[0] < before or (inclusive and item[0] == before)]
        for item in ready:
            pending.remove(item)
            self._fanout.join(room, item[1])

    async def _run_jobs(self) -> None:
        while self._jobs:
            job, future = self._jobs.popleft()
            if future.done():
                continue
            try:
                future.set_result(await job())
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as exc:  # the caller gets it
                future.set_exception(exc)
