"""The seam between a room and its audience: events addressed to a room, minus some connections.

A room never lists its recipients. It says *what* to send *to which room* (and whom to skip);
an `Emitter` decides *how*: `Fanout` keeps each room's connections in join order and hands
every event to a `deliver` that the transport implements (direct websocket writes, see
server/transport/emitter.py); presence notices in a large room are held for a moment and
written together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, Protocol

from .batching import BATCH_MIN_RECIPIENTS, PRESENCE_WINDOW, HeldEvent, HeldEvents


class Emitter(Protocol):
    """Delivers a room's events to the connections that joined it.

    Contract: `emit` hands the event to every recipient without yielding to the event loop in
    between, so events reach each connection in the order the room emitted them.
    """

    def join(self, room: str, sid: str) -> None:
        """From now on `sid` receives the room's events."""
        ...

    def leave(self, room: str, sid: str) -> None:
        """`sid` receives nothing more from the room."""
        ...

    def audience(self, room: str) -> int:
        """How many connections receive the room's events."""
        ...

    async def emit(
        self, room: str, event: str, data: Any, skip: Collection[str] = (), hold: bool = False
    ) -> None:
        """Send to every connection of `room` but `skip`. `hold`: in a large room the event may
        wait a moment and go out together with the next ones (presence notices)."""
        ...

    async def send(self, sid: str, event: str, data: Any) -> None:
        """Send to one connection, joined or not (a newcomer's welcome and history)."""
        ...

    async def close(self) -> None:
        """Send what is held and stop the timers (at shutdown)."""
        ...


class Fanout:
    """An Emitter over per-room indexes of connection ids; subclasses deliver to lists of ids.

    Events held in a large room keep the audience they had when emitted: a connection that
    joins meanwhile does not get them (its welcome already says who is here)."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, None]] = {}  # room -> its sids, in join order
        self._room_of: dict[str, str] = {}
        self._held: dict[str, HeldEvents] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ----- to implement -----
    async def deliver(self, event: str, data: Any, to: Collection[str]) -> None:
        """Hand one event to each of `to`, in order, without yielding in between."""
        raise NotImplementedError

    async def deliver_many(self, events: Sequence[HeldEvent]) -> None:
        """Several events, in order, under the same contract."""
        for event, data, to in events:
            await self.deliver(event, data, to)

    # ----- the Emitter -----
    def join(self, room: str, sid: str) -> None:
        self._rooms.setdefault(room, {})[sid] = None
        self._room_of[sid] = room

    def leave(self, room: str, sid: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._rooms[room]
                held = self._held.get(room)
                if held is not None and not held.pending:
                    del self._held[room]
        if self._room_of.get(sid) == room:
            del self._room_of[sid]

    def forget(self, sid: str) -> None:
        """The connection is gone: out of its room at once, before the room hears of it."""
        room = self._room_of.get(sid)
        if room is not None:
            self.leave(room, sid)

    def audience(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    async def emit(
        self, room: str, event: str, data: Any, skip: Collection[str] = (), hold: bool = False
    ) -> None:
        members = self._rooms.get(room)
        if not members:
            return
        # no copy of the room on the hot path: `deliver` does not yield while it iterates
        to: Collection[str] = [s for s in members if s not in skip] if skip else members
        if not to:
            return
        held = self._held.get(room)
        if hold and len(members) >= BATCH_MIN_RECIPIENTS:
            if held is None:
                held = HeldEvents(self.deliver_many, PRESENCE_WINDOW, self._spawn)
                self._held[room] = held
            held.hold(event, data, list(to))  # the audience as it is now
            return
        if held is not None and held.pending:
            held.hold(event, data, list(to))  # after what is held, in the same write
            await held.flush()
            return
        await self.deliver(event, data, to)

    async def send(self, sid: str, event: str, data: Any) -> None:
        await self.deliver(event, data, (sid,))

    async def close(self) -> None:
        for held in self._held.values():
            await held.flush()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
