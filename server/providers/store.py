"""Where a provider keeps the thread state the upstream API does not keep for it.

Chat Completions has no server-side thread, so its transcript lives here; Assistants records the
run still open on each thread, so any process can cancel it or wait for it. Values are plain JSON
(the in-memory store round-trips them through `json` so a value that a Redis store could not
hold fails here first). A key holds either one value or a list of values (a list `set`, or
`append`); `get` returns what the key holds, a fresh copy, or None.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

JSONValue = Any  # dict / list / str / int / float / bool / None, nested


class ThreadStore(Protocol):
    """Per-thread keys holding JSON values; `delete(thread_id)` forgets the whole thread."""

    async def get(self, thread_id: str, key: str) -> JSONValue | None:
        """The value or list stored at `key` (a copy), or None if there is none."""
        ...

    async def set(self, thread_id: str, key: str, value: JSONValue) -> None:
        """Store `value` at `key`, replacing whatever was there."""
        ...

    async def append(self, thread_id: str, key: str, values: Sequence[JSONValue]) -> None:
        """Add `values` to the end of the list at `key` (created empty if missing)."""
        ...

    async def delete(self, thread_id: str, key: str | None = None) -> None:
        """Forget `key`, or every key of the thread when `key` is None."""
        ...


class InMemoryThreadStore:
    """A `ThreadStore` in this process's memory (one process, nothing survives a restart)."""

    def __init__(self) -> None:
        self._threads: dict[str, dict[str, str | list[str]]] = {}

    async def get(self, thread_id: str, key: str) -> JSONValue | None:
        return self.peek(thread_id, key)

    def peek(self, thread_id: str, key: str) -> JSONValue | None:
        """`get` without awaiting, for callers that know the store is this one."""
        stored = self._threads.get(thread_id, {}).get(key)
        if stored is None:
            return None
        if isinstance(stored, list):
            return [json.loads(item) for item in stored]
        return json.loads(stored)

    async def set(self, thread_id: str, key: str, value: JSONValue) -> None:
        stored: str | list[str] = (
            [json.dumps(item) for item in value] if isinstance(value, list) else json.dumps(value)
        )
        self._threads.setdefault(thread_id, {})[key] = stored

    async def append(self, thread_id: str, key: str, values: Sequence[JSONValue]) -> None:
        keys = self._threads.setdefault(thread_id, {})
        stored = keys.setdefault(key, [])
        if not isinstance(stored, list):
            raise TypeError(f"key {key!r} of thread {thread_id!r} holds a value, not a list")
        stored.extend(json.dumps(value) for value in values)

    async def delete(self, thread_id: str, key: str | None = None) -> None:
        if key is None:
            self._threads.pop(thread_id, None)
            return
        keys = self._threads.get(thread_id)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._threads[thread_id]

    def thread_ids(self) -> list[str]:
        """Threads that hold at least one key (to check that deleted threads leave nothing)."""
        return list(self._threads)
