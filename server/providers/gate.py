"""The order of writes to a thread in one process: a run's answer, then what was said meanwhile."""

from __future__ import annotations

import asyncio


class ThreadGate:
    """One lock per thread. A run holds it until its answer is in the thread; `append` takes it,
    so a message said while the assistant answers enters the thread after that answer (as in
    the room), and never while an Assistants run still refuses new messages."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, thread_id: str) -> asyncio.Lock:
        """The thread's lock (created on first use)."""
        return self._locks.setdefault(thread_id, asyncio.Lock())

    def forget(self, thread_id: str) -> None:
        """Drop a deleted thread's lock."""
        self._locks.pop(thread_id, None)
