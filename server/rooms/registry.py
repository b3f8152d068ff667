"""The room registry: rooms by name, opened on first registration and closed when empty, and
the room each connection registered in."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..logs import log_ids
from ..messages import Message
from .config import RoomConfig, room_name
from .roster import RoomError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryPolicy:
    """Which rooms may open: the default room, configured ones, and (unless `ad_hoc` is off)
    any valid name, up to `max_rooms` open at once."""

    default_room: str = "main"
    max_rooms: int = 200
    ad_hoc: bool = True
    configured: dict[str, RoomConfig] = field(default_factory=dict)

    def config(self, name: str) -> RoomConfig:
        """The room's configuration (`unknown_room` if it may not be opened)."""
        found = self.configured.get(name)
        if found is not None:
            return found
        if not self.ad_hoc and name != self.default_room:
            raise RoomError("unknown_room", f"There is no room {name!r} on this server.")
        return RoomConfig(name)


class Room(Protocol):
    """A room as the registry, the handlers and the HTTP routes use it: rooms/room.py's `Room`
    (one process), or cluster/room.py's `ClusterRoom` (its state in Redis)."""

    name: str
    config: RoomConfig

    @property
    def busy(self) -> bool: ...

    def __len__(self) -> int:
        """This process's connections to the room (the registry closes it at zero)."""
        ...

    def headcount(self) -> int:
        """The people in the room."""
        ...

    def queued(self) -> int: ...

    def users(self) -> list[dict[str, Any]]: ...

    def is_registered(self, sid: str) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, sid: str, user_id: object, name: str) -> dict[str, Any]: ...

    async def post(self, sid: str, content: str, client_id: object = None) -> dict[str, Any]: ...

    async def post_as(
        self, user_id: str, content: str, client_id: object = None
    ) -> tuple[dict[str, Any], AsyncIterator[str]]: ...

    async def stop(self, sid: str) -> bool: ...

    async def set_reply(self, sid: str, mode: object) -> dict[str, Any]: ...

    def pause(self) -> asyncio.Task[None] | None: ...

    async def notify(self, notice: Message) -> None: ...

    async def leave(self, sid: str) -> bool: ...


class RoomRegistry:
    """Owns every open room; `make_room` builds one (not yet started) from its config."""

    def __init__(self, make_room: Callable[[RoomConfig], Room], policy: RegistryPolicy) -> None:
        self._make_room = make_room
        self.policy = policy
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, Room] = {}  # sid -> the room it registered in
        self._closing: set[asyncio.Task[None]] = set()

    # ----- lookups -----
    def get(self, name: str) -> Room | None:
        """The open room of that name, if any."""
        return self._rooms.get(name)

    def of(self, sid: str) -> Room | None:
        """The room `sid` registered in, if any."""
        return self._room_of.get(sid)

    def open_rooms(self) -> list[Room]:
        return list(self._rooms.values())

    def waiting(self) -> int:
        """Turns queued in every room."""
        return sum(room.queued() for room in self._rooms.values())

    def people(self) -> int:
        """Everyone in every room."""
        return sum(room.headcount() for room in self._rooms.values())

    def listing(
        self, elsewhere: dict[str, tuple[int, bool]] | None = None
    ) -> list[dict[str, Any]]:
        """Listed rooms, open or configured: the default first, then by name. `elsewhere`:
        rooms open on other processes of a cluster, with their people and whether busy."""
        elsewhere = elsewhere or {}
        names = {n for n, c in self.policy.configured.items() if c.listed}
        names |= {n for n, r in self._rooms.items() if r.config.listed}
        names |= {n for n in elsewhere if self.policy.config(n).listed}
        names.add(self.policy.default_room)
        order = sorted(names, key=lambda n: (n != self.policy.default_room, n))
        return [self._entry(name, elsewhere.get(name, (0, False))) for name in order]

    def _entry(self, name: str, elsewhere: tuple[int, bool]) -> dict[str, Any]:
        room = self._rooms.get(name)
        people, busy = (room.headcount(), room.busy) if room else elsewhere
        return {"name": name, "people": people, "busy": busy}

    # ----- requests -----
    async def register(
        self, sid: str, user_id: object, nickname: str, room: object = None,
        password: object = None,
    ) -> dict[str, Any]:
        """Register `sid` in a room (opening it if needed); return the welcome."""
        if sid in self._room_of:
            raise RoomError("already_registered", "This connection is already registered.")
        name = self.policy.default_room if room is None else room_name(room)
        with log_ids(room=name):
            return await self._register(sid, user_id, nickname, name, password)

    async def _register(
        self, sid: str, user_id: object, nickname: str, name: str, password: object
    ) -> dict[str, Any]:
        config = self.policy.config(name)
        _check_password(config, password)
        target = self._rooms.get(name)  # not `or`: a room still empty here is falsy
        if target is None:
            target = await self._open(config)
        self._room_of[sid] = target
        try:
            return await target.register(sid, user_id, nickname)
        except BaseException:
            if self._room_of.get(sid) is target:
                del self._room_of[sid]
            self._close_if_empty(target)
            raise

    async def leave(self, sid: str) -> None:
        """The connection is gone; a room whose last person left is closed."""
        room = self._room_of.pop(sid, None)
        if room is None:
            return
        with log_ids(room=room.name):
            if await room.leave(sid):
                self._close_if_empty(room)

    async def close(self) -> None:
        """Close every room (deleting each thread), and wait for rooms already closing."""
        rooms, self._rooms = list(self._rooms.values()), {}
        self._room_of.clear()
        await asyncio.gather(*(room.close() for room in rooms), *self._closing,
                             return_exceptions=True)

    async def _open(self, config: RoomConfig) -> Room:
        if len(self._rooms) >= self.policy.max_rooms:
            raise RoomError("room_limit", "Too many rooms are open on this server; try later.")
        room = self._make_room(config)
        self._rooms[config.name] = room
        with log_ids(room=config.name, connection=None):  # the room's own tasks: no connection
            await room.start()
        logger.info("opened room %s (%d open)", config.name, len(self._rooms))
        return room

    def _close_if_empty(self, room: Room) -> None:
        if len(room) or self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        logger.info("closing room %s (%d open)", room.name, len(self._rooms))
        with log_ids(room=room.name, connection=None):
            task = asyncio.create_task(room.close(), name=f"close-{room.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _check_password(config: RoomConfig, given: object) -> None:
    if not config.password:
        return
    if not isinstance(given, str) or not given:
        raise RoomError("wrong_password", f"The room {config.name!r} needs a password.")
    if not hmac.compare_digest(given.encode(errors="surrogatepass"), config.password.encode()):
        raise RoomError("wrong_password", f"Wrong password for the room {config.name!r}.")
