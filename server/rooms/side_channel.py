"""The `/stream` side channel: an answer's text also streamed to the HTTP request that asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class SideChannel:
    """Listeners by the id of the user message whose answer they wait for."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[asyncio.Queue[str | None]]] = {}

    def listen(self, message_id: str) -> AsyncIterator[str]:
        """The answer's text deltas for `message_id`, ending when its turn ends."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._listeners.setdefault(message_id, []).append(queue)
        return _drain(queue)

    def feed(self, message_id: str, text: str) -> None:
        for queue in self._listeners.get(message_id, ()):
            queue.put_nowait(text)

    def release(self, message_id: str) -> None:
        """End the streams waiting on `message_id`."""
        for queue in self._listeners.pop(message_id, ()):
            queue.put_nowait(None)


async def _drain(queue: asyncio.Queue[str | None]) -> AsyncIterator[str]:
    """Yield queued text until the end marker."""
    while (item := await queue.get()) is not None:
        yield item
