"""Merging an answer's deltas when they arrive faster than a large room can take them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

# In a room this large, deltas that arrive within one frame time of the last one sent are
# merged: one event instead of several, each of which costs a delivery per person. Smaller
# rooms get every delta at once, with no added delay (docs/performance.md).
BATCH_MIN_RECIPIENTS = 100
BATCH_WINDOW = 0.016  # seconds


class DeltaBatcher:
    """Sends the first delta at once, then at most one merged delta per `window`."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        window: float,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._send = send
        self._window = window
        self._spawn = spawn
        self._unsent: list[str] = []
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    async def add(self, text: str) -> None:
        """Send `text` now, or merge it into the next send if one went out within `window`."""
        loop = asyncio.get_running_loop()
        self._unsent.append(text)
        due = self._last + self._window
        if loop.time() >= due:
            await self.flush()
        elif self._timer is None:
            self._timer = loop.call_at(due, lambda: self._spawn(self.flush()))

    async def flush(self) -> None:
        """Send whatever is waiting (the answer's end calls this before finishing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._unsent:
            return
        text = "".join(self._unsent)
        self._unsent.clear()
        self._last = asyncio.get_running_loop().time()
        await self._send(text)
