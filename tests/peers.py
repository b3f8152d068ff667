"""A scripted chat participant: a real python-socketio AsyncClient that records every event."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio


class Peer:
    """One person in the room, as a real Socket.IO client over loopback."""

    def __init__(
        self, url: str, name: str | None = None, user_id: str | None = None,
        room: str | None = None, password: str | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.user_id = user_id
        self.room = room  # None: the register payload names no room (the default room)
        self.password = password
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None))
        self._changed.set()

    async def connect(self, **kwargs: Any) -> Peer:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=5, **kwargs)
        return self

    async def join(self) -> dict[str, Any]:
        """Connect (if needed), register, and return the `welcome` payload."""
        if not self.sio.connected:
            await self.connect()
        payload: dict[str, Any] = {"name": self.name}
        if self.user_id is not None:
            payload["user_id"] = self.user_id
        if self.room is not None:
            payload["room"] = self.room
        if self.password is not None:
            payload["password"] = self.password
        await self.sio.emit("register", payload)
        welcome = await self.wait_for("welcome")
        self.user_id = welcome["user_id"]
        return welcome

    async def call(self, event: str, data: Any = None, timeout: float = 5) -> Any:
        """Emit with an acknowledgement and return the server's ack payload."""
        return await self.sio.call(event, data, timeout=timeout)

    async def say(self, content: str, **extra: Any) -> None:
        await self.sio.emit("message", {"content": content, **extra})

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()

    # ----- reading what arrived -----
    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def wait_for(
        self, event: str, count: int = 1, timeout: float = 10, where: Any = None
    ) -> Any:
        """Wait until `count` events named `event` (matching `where`) arrived; return the last."""
        async def reached() -> Any:
            while True:
                found = [d for d in self.of(event) if where is None or where(d)]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(reached(), timeout)

    def streamed(self, message_id: str) -> str:
        """The deltas this peer received for one assistant message, joined."""
        return "".join(d["delta"] for d in self.of("message-delta") if d["id"] == message_id)

    def answers(self) -> list[dict[str, Any]]:
        """Final assistant messages received live (from `message-list` after a turn)."""
        return [m for batch in self.of("message-list") for m in batch if m["role"] == "assistant"]
