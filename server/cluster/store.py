"""The providers' `ThreadStore` in Redis, so that any process can carry a thread on (the Chat
Completions transcript, the Assistants run still open)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from ..providers.store import JSONValue

# An empty list is stored as the string "[]" (Redis has no empty list); appending replaces it.
_APPEND = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then redis.call('DEL', KEYS[1]) end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
"""


class RedisThreadStore:
    """`rt:thread:{id}:{key}` holds a JSON string or a list of them; `…:keys` lists the keys."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._append = redis.register_script(_APPEND)

    @staticmethod
    def _key(thread_id: str, key: str) -> str:
        return f"rt:thread:{{{thread_id}}}:{key}"

    async def get(self, thread_id: str, key: str) -> JSONValue | None:
        name = self._key(thread_id, key)
        kind = await self._redis.type(name)
        if kind == "list":
            items: list[Any] = await self._redis.lrange(name, 0, -1)
            return [json.loads(item) for item in items]
        if kind == "string":
            value = await self._redis.get(name)
            return None if value is None else json.loads(value)
        return None

    async def set(self, thread_id: str, key: str, value: JSONValue) -> None:
        name = self._key(thread_id, key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            if isinstance(value, list):
                if value:
                    pipe.rpush(name, *(json.dumps(item) for item in value))
                else:  # an empty list is remembered as one
                    pipe.set(name, "[]")
            else:
                pipe.set(name, json.dumps(value))
            pipe.sadd(self._key(thread_id, "keys"), key)
            await pipe.execute()

    async def append(self, thread_id: str, key: str, values: Sequence[JSONValue]) -> None:
        if values:
            await self._append(keys=[self._key(thread_id, key), self._key(thread_id, "keys")],
                               args=[key, *(json.dumps(value) for value in values)])

    async def delete(self, thread_id: str, key: str | None = None) -> None:
        keys_key = self._key(thread_id, "keys")
        if key is not None:
            await self._redis.delete(self._key(thread_id, key))
            await self._redis.srem(keys_key, key)
            return
        names: set[Any] = await self._redis.smembers(keys_key)
        await self._redis.delete(keys_key, *(self._key(thread_id, n) for n in names))
