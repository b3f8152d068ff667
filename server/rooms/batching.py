"""Fewer, larger writes for large rooms: an answer's deltas merged when they arrive faster than
one frame time, and join/leave notices held briefly and sent together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine
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


# In a room this large, join/leave notices wait up to this long and go out together: when
# hundreds of people arrive at once, each person gets a few writes instead of one per arrival.
PRESENCE_WINDOW = 0.05  # seconds

HeldEvent = tuple[str, Any, Collection[str]]


class HeldEvents:
    """Events that may wait up to `window` and then go out together, in order.

    Whoever emits anything else must `flush()` first, so nothing overtakes a held event.
    """

    def __init__(
        self,
        emit_many: Callable[[list[HeldEvent]], Awaitable[None]],
        window: float,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._emit_many = emit_many
        self._window = window
        self._spawn = spawn
        self._held: list[HeldEvent] = []
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, event: str, data: Any, to: Collection[str]) -> None:
        """Keep the event (for these recipients) until the window ends or a flush."""
        self._held.append((event, data, to))
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._window, lambda: self._spawn(self.flush()))

    @property
    def pending(self) -> bool:
        """Whether anything is held."""
        return bool(self._held)

    async def flush(self) -> None:
        """Send everything held, in the order it was held."""
        self.cancel()
        if self._held:
            held, self._held = self._held, []
            await self._emit_many(held)

    def cancel(self) -> None:
        """Stop the timer (the held events stay until the next flush)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
