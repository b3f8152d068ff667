"""Socket.IO transport: validate payloads, bind identity to the socket, hand over to the room."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import engineio.packet
import socketio
import socketio.packet

from .room import Room, RoomError

logger = logging.getLogger(__name__)

NAMESPACE = "/"


class SocketEmitter:
    """The room's Emitter over python-socketio.

    Each event is encoded once and put on every recipient's outgoing queue in one pass: no task
    per recipient and no yield to the event loop between recipients, so every connection sees
    events in exactly the order the room emitted them.
    """

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def emit(self, event: str, data: Any, to: Collection[str]) -> None:
        args = [event] if data is None else [event, data]
        pkt = self._sio.packet_class(socketio.packet.EVENT, namespace=NAMESPACE, data=args)
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        frames = [engineio.packet.Packet(engineio.packet.MESSAGE, data=p) for p in parts]
        manager = self._sio.manager
        for sid in to:
            eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
            if eio_sid is None:
                continue
            for frame in frames:
                await self._sio.eio.send_packet(eio_sid, frame)


def _refuse(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


class RoomHandlers:
    """Socket.IO event handlers for one room; `room_of()` returns the live room."""

    def __init__(self, sio: socketio.AsyncServer, room_of: Callable[[], Room]) -> None:
        self._sio = sio
        self._room_of = room_of

    def attach(self) -> None:
        """Register the handlers on the server."""
        self._sio.on("connect", self.connect)
        self._sio.on("disconnect", self.disconnect)
        self._sio.on("register", self.register)
        self._sio.on("message", self.message)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    async def disconnect(self, sid: str, *reason: Any) -> None:
        await self._room_of().leave(sid)

    async def register(self, sid: str, data: Any = None) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return await self._error(sid, "invalid_payload", 'register needs {"name": "..."}.')
        try:
            welcome = await self._room_of().register(sid, data.get("user_id"), data["name"])
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)
        return {"ok": True, **welcome}

    async def message(self, sid: str, data: Any = None) -> dict[str, Any]:
        room = self._room_of()
        if not room.is_registered(sid):
            return await self._error(sid, "not_registered", "Register with a nickname first.")
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            return await self._error(sid, "invalid_payload", 'message needs {"content": "..."}.')
        try:
            return await room.post(sid, data["content"], data.get("id"))
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)

    async def _error(self, sid: str, code: str, message: str) -> dict[str, Any]:
        logger.info("refused %s: %s", sid, code)
        await self._sio.emit("error", {"code": code, "message": message}, to=sid)
        return _refuse(code, message)
