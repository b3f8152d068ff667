"""The room's transcript: the one source of truth for what a newcomer is shown as history."""

from __future__ import annotations

from typing import Any

from ..messages import Message, is_safe_id, new_id
from .config import NO_REPLY
from .thread import RoomThread


class Transcript:
    """Messages in thread order, the ids ever used in the room, and a version that changes with
    every entry (so a read-back that raced a change is not trusted)."""

    def __init__(self, thread: RoomThread) -> None:
        self.thread = thread
        self._messages: list[Message] = []
        self._ids: set[str] = set()
        self.version = 0

    def __iter__(self) -> Any:
        return iter(list(self._messages))

    def __len__(self) -> int:
        return len(self._messages)

    def claim_id(self, wanted: object, prefix: str) -> str:
        """`wanted` when it is a safe id not yet used in the room, else a fresh one."""
        message_id = wanted if is_safe_id(wanted) and wanted not in self._ids else new_id(prefix)
        self._ids.add(message_id)
        return message_id

    def reserve(self, message_id: str) -> None:
        """No client may take this id (it is about to be announced)."""
        self._ids.add(message_id)

    def add(self, message: Message) -> None:
        """A message entered the thread."""
        self._messages.append(message)
        self._ids.add(message.id)
        self.version += 1

    def clear(self) -> None:
        self._messages.clear()
        self._ids.clear()
        self.version += 1

    async def history(self, live: bool) -> list[dict[str, Any]]:
        """The history for a newcomer: read back from the thread when the provider can and no
        answer is `live`; our own transcript otherwise (or if it changed meanwhile)."""
        ours = [m.to_wire() for m in self._messages]
        if not ours or live:
            return ours
        version = self.version
        theirs = await self.thread.read_back()
        if theirs is None or version != self.version:
            return ours
        # an answer that chose silence is in the thread, but was never shown
        return [m.to_wire() for m in theirs
                if not (m.role == "assistant" and m.content.strip() == NO_REPLY)]
