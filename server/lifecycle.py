"""The server's life: the provider opened (and retried until it opens), the rooms, readiness,
and the drain at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .messages import Message
from .providers import Provider
from .providers.base import AssistantProfile
from .providers.errors import ProviderError
from .rooms import RoomError, RoomRegistry

logger = logging.getLogger(__name__)

OPEN_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between attempts to open the provider
DRAIN_NOTICE = "The server is restarting; this answer was cut short. Send it again in a moment."


class Service:
    """Owns the provider and, once it is open, the room registry.

    `ready` is what `/readyz` reports: the provider is open and the server is not draining.
    Until then `accepting()` refuses new people and messages with `unavailable`."""

    def __init__(
        self, provider: Provider, make_registry: Callable[[AssistantProfile], RoomRegistry],
        store_ok: Callable[[], bool] | None = None,
        directory: Callable[[], Awaitable[dict[str, tuple[int, bool]]]] | None = None,
    ) -> None:
        self.provider = provider
        self._store_ok = store_ok  # with REDIS_URL: whether Redis answers
        self._directory = directory  # with REDIS_URL: the rooms open anywhere
        self._make_registry = make_registry
        self.registry: RoomRegistry | None = None
        self.reason = "the provider is not open yet"
        self.draining = False
        self._opener: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.registry is not None and not self.draining and self.store_ok

    @property
    def store_ok(self) -> bool:
        return self._store_ok is None or self._store_ok()

    async def elsewhere(self) -> dict[str, tuple[int, bool]]:
        """Rooms open anywhere in the cluster (nothing with one process)."""
        return {} if self._directory is None else await self._directory()

    def checks(self) -> dict[str, str]:
        """What `/readyz` reports besides its status."""
        found = {"provider": "open" if self.registry is not None else "not open"}
        if self._store_ok is not None:
            found["redis"] = "ok" if self._store_ok() else "unreachable"
        return found

    async def start(self) -> None:
        """Open the provider; if it cannot be opened now, keep trying in the background."""
        if not await self._try_open():
            self._opener = asyncio.create_task(self._keep_opening(), name="provider-open")

    async def _try_open(self) -> bool:
        try:
            profile = await self.provider.open()
        except ProviderError as exc:
            self.reason = f"the provider cannot be opened: {exc.user_message}"
            logger.warning("could not open the provider (%s: %s); retrying",
                           type(exc).__name__, exc)
            return False
        self.registry = self._make_registry(profile)
        self.reason = ""
        logger.info("provider open: assistant %r", profile.name)
        return True

    async def _keep_opening(self) -> None:
        attempt = 0
        while True:
            await asyncio.sleep(OPEN_BACKOFF[min(attempt, len(OPEN_BACKOFF) - 1)])
            attempt += 1
            if await self._try_open():
                return

    def accepting(self) -> RoomRegistry:
        """The registry, for a new person or message; `unavailable` when not ready."""
        if self.draining:
            raise RoomError("unavailable", "The server is restarting; try again in a moment.")
        if self.registry is None:
            raise RoomError("unavailable", "The assistant is not available right now "
                                           f"({self.reason}); try again in a moment.")
        if not self.store_ok:
            raise RoomError("unavailable", "The server cannot reach Redis, which the cluster's "
                                           "rooms live in; try again in a moment.")
        return self.registry

    async def drain(self, budget: float) -> None:
        """Stop taking people, messages and queued turns, and let the answers in flight finish
        for up to `budget` seconds; rooms still answering then are told it is cut short."""
        self.draining = True
        self.reason = "the server is shutting down"
        registry = self.registry
        if registry is None:
            return
        # In a cluster, only the answers this process runs (rooms it owns) are its to end.
        answers = {room: task for room in registry.open_rooms()
                   if (task := room.pause()) is not None}
        if answers:
            logger.info("waiting up to %ss for %d answer(s) to finish", budget, len(answers))
            await asyncio.wait(answers.values(), timeout=budget)
        for room, task in answers.items():
            if not task.done():
                await room.notify(Message.system(DRAIN_NOTICE))

    async def close_rooms(self, budget: float) -> None:
        """Stop opening the provider; close every room (deleting each thread) within
        `budget` seconds."""
        self.draining = True
        if self._opener is not None:
            self._opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opener
        if self.registry is not None:
            try:
                await asyncio.wait_for(self.registry.close(), budget)
            except TimeoutError:
                logger.warning("room clean-up took longer than %ss; giving up", budget)
