"""The room's one provider thread: created on demand, read back, deleted when the room empties."""

from __future__ import annotations

import asyncio
import logging

from ..messages import Message
from ..providers.base import Provider, SupportsHistory
from ..providers.errors import ProviderError

logger = logging.getLogger(__name__)


class RoomThread:
    """Owns the thread id; creation and deletion never overlap."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.id: str | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> str:
        """The thread's id, creating the thread if there is none."""
        async with self._lock:
            if self.id is None:
                self.id = await self.provider.create_thread()
                logger.info("created thread %s", self.id)
            return self.id

    async def prepare(self) -> None:
        """Create the thread ahead of the first message; a failure is retried at that message."""
        try:
            await self.ensure()
        except ProviderError as exc:
            logger.warning("could not create the thread yet (%s); will retry on first message", exc)

    async def delete(self) -> None:
        """Delete the thread (if any); failures are logged, never raised."""
        async with self._lock:
            thread_id = self.id
            if thread_id is None:
                return
            try:
                await self.provider.delete_thread(thread_id)
                logger.info("deleted thread %s", thread_id)
            except ProviderError:
                logger.exception("could not delete thread %s", thread_id)
            finally:
                self.id = None  # only once the provider is done with it

    async def read_back(self) -> list[Message] | None:
        """The thread's messages when the provider can list them; None otherwise or on error."""
        if self.id is None or not isinstance(self.provider, SupportsHistory):
            return None
        try:
            return await self.provider.history(self.id)
        except ProviderError as exc:
            logger.warning("could not read the thread back (%s); replaying our transcript", exc)
            return None
