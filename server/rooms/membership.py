"""Who is in a room and who hears it: the roster, the emitter's index, join and leave notices."""

from __future__ import annotations

import logging
from typing import Any

from .emitter import Emitter
from .roster import Person, Roster

logger = logging.getLogger(__name__)


class Membership:
    """The room's people (a person may have several connections) and its live connections."""

    def __init__(self, room: str, roster: Roster, emitter: Emitter) -> None:
        self.room = room
        self.roster = roster
        self._emitter = emitter

    def __len__(self) -> int:
        return len(self.roster)

    def bind(self, sid: str, user_id: object, name: str) -> Person:
        """Bind a connection to a person (refusals raise RoomError); it hears nothing yet."""
        return self.roster.bind(sid, user_id, name)

    def bound(self, sid: str) -> bool:
        return sid in self.roster

    async def go_live(self, sid: str, person: Person) -> None:
        """The connection has its snapshot: from now on it hears the room. The person's first
        connection is announced to the others."""
        self._emitter.join(self.room, sid)
        if len(person.sids) == 1:
            notice = {"user_id": person.user_id, "name": person.name}
            await self._emitter.emit(self.room, "join", notice, skip=(sid,), hold=True)
            logger.info("%s joined room %s (%d here)", person.name, self.room, len(self.roster))

    async def drop(self, sid: str) -> Person | None:
        """Forget a connection; when it was a person's last, tell the others and return them."""
        self._emitter.leave(self.room, sid)
        person = self.roster.unbind(sid)
        if person is None:
            return None
        logger.info("%s left room %s (%d here)", person.name, self.room, len(self.roster))
        notice = {"user_id": person.user_id, "name": person.name}
        await self._emitter.emit(self.room, "leave", notice, hold=True)
        return person

    def users(self) -> list[dict[str, Any]]:
        return self.roster.users()
