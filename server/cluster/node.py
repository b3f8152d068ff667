"""This process as one node of the cluster: its Redis connection, its liveness key, its reader,
and the clean-up after nodes that died."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from ..messages import new_id
from ..rooms.emitter import Fanout
from . import scripts
from .relay import Relay
from .scripts import GENERATION_KEY, NODES_KEY, ROOMS_KEY, RoomKeys, node_key, node_rooms_key

logger = logging.getLogger(__name__)

DeleteThread = Callable[[str], Awaitable[None]]
POOL_SIZE = 32  # Redis connections per process (one is the reader's, blocked in XREAD)
POOL_WAIT = 10.0  # seconds a command waits for a free connection before it fails


class Scripts:
    """The room scripts, registered once per connection pool."""

    def __init__(self, redis: Redis) -> None:
        self.bind = redis.register_script(scripts.BIND)
        self.unbind = redis.register_script(scripts.UNBIND)
        self.accept = redis.register_script(scripts.ACCEPT)
        self.claim = redis.register_script(scripts.CLAIM)
        self.stop = redis.register_script(scripts.STOP)
        self.set_reply = redis.register_script(scripts.SET_REPLY)
        self.acquire = redis.register_script(scripts.ACQUIRE)
        self.renew = redis.register_script(scripts.RENEW)
        self.release = redis.register_script(scripts.RELEASE)


class ClusterNode:
    """One process of the cluster. `healthy` is whether Redis answers; `lease` is how long a
    room's owner (and this node's liveness key) lasts without being renewed, in seconds."""

    def __init__(self, url: str, lease: float, fanout: Fanout) -> None:
        self.id = new_id("n")
        self.lease = lease
        # A blocking pool: a burst of registrations waits for a connection instead of failing
        # (and starving the heartbeat, which would make this process look dead).
        self.redis = _client(url, POOL_SIZE)
        self._beat_redis = _client(url, 1)  # the heartbeat never waits behind the rooms
        self.scripts = Scripts(self.redis)
        self.relay = Relay(self.redis, self.id, fanout, self._reader_health)
        self._beating = False  # the last heartbeat reached Redis
        self._reading = True  # the reader is not retrying
        self._up = asyncio.Event()  # set while healthy
        self.delete_thread: DeleteThread = _keep_thread
        # What to do when this process's view of the cluster can no longer be trusted (Redis
        # lost its data, or this process was taken for dead): the app re-syncs its clients.
        # `on_reset(lost)`: `lost` when Redis lost its data (the rooms' owners here seed it
        # again with what they hold).
        self.on_reset: Callable[[bool], Awaitable[None]] = _nothing
        self._generation: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_ms(self) -> int:
        return int(self.lease * 1000)

    @property
    def generation(self) -> str:
        """The Redis lifetime this process knows (see GENERATION_KEY)."""
        return self._generation or ""

    def conn(self, sid: str) -> str:
        """A connection as the cluster names it: this node's id and the sid."""
        return f"{self.id}/{sid}"

    async def start(self) -> None:
        """Start the reader and the heartbeat (both keep trying while Redis is away)."""
        await self._beat()
        self.relay.start()
        self._task = asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")
        logger.info("cluster node %s started (lease %ss)", self.id, self.lease)

    async def close(self) -> None:
        """Stop reading and beating; the node's key goes, so no one waits for its lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.relay.close()
        with contextlib.suppress(RedisError):
            await self.redis.delete(node_key(self.id), node_rooms_key(self.id))
            await self.redis.srem(NODES_KEY, self.id)
        await self.redis.aclose()
        await self._beat_redis.aclose()

    @property
    def healthy(self) -> bool:
        """Whether Redis answers (the heartbeat and the reader both reach it)."""
        return self._beating and self._reading

    def _reader_health(self, ok: bool) -> None:
        self._reading = ok
        self._noticed()

    def _noticed(self) -> None:
        if self.healthy:
            self._up.set()
        else:
            self._up.clear()

    async def wait_healthy(self) -> None:
        """Until Redis answers."""
        await self._up.wait()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            await self._beat()

    async def _beat(self) -> None:
        """Renew this node's key; notice a Redis that lost its data; bury dead nodes."""
        try:
            async with self._beat_redis.pipeline(transaction=True) as pipe:
                pipe.set(node_key(self.id), "1", px=self.lease_ms, get=True)
                pipe.sadd(NODES_KEY, self.id)
                pipe.set(GENERATION_KEY, new_id("g"), nx=True)
                pipe.get(GENERATION_KEY)
                alive, *_, generation = await pipe.execute()
        except RedisError as exc:
            if self._beating:
                logger.warning("Redis is not answering (%s)", exc)
            self._beating = False
            self._noticed()
            return
        if not self._beating:
            logger.info("Redis is answering")
        self._beating = True
        self._noticed()
        known, self._generation = self._generation, generation
        if known is not None and generation != known:
            logger.warning("Redis lost its data (restarted); the rooms here re-sync")
            await self.on_reset(True)
        elif known is not None and alive is None:
            # Paused or cut off past the lease: other processes have forgotten this one's
            # connections and may run its rooms. Its clients reconnect and get a fresh snapshot.
            logger.warning("this process was taken for dead; its connections re-sync")
            await self.on_reset(False)
        try:
            await self._bury_dead()
        except RedisError as exc:
            logger.warning("could not clean up after stopped nodes: %s", exc)

    async def _bury_dead(self) -> None:
        nodes: set[Any] = await self.redis.smembers(NODES_KEY)
        for node in nodes - {self.id}:
            if await self.redis.exists(node_key(node)):
                continue
            rooms: set[Any] = await self.redis.smembers(node_rooms_key(node))
            for room in rooms:
                await self.forget_node_in(room, node)
            await self.redis.delete(node_rooms_key(node))
            await self.redis.srem(NODES_KEY, node)
            logger.info("cleaned up after node %s (it stopped renewing; %d room(s))",
                        node, len(rooms))

    async def rooms(self) -> dict[str, tuple[int, bool]]:
        """Every room with someone in it, anywhere: its people and whether it is busy (nothing
        while Redis does not answer)."""
        try:
            members: set[Any] = await self.redis.smembers(ROOMS_KEY)
            names = sorted(str(name) for name in members)
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hlen(RoomKeys(name).key("people"))
                    pipe.hexists(RoomKeys(name).key("state"), "busy")
                found = await pipe.execute()
        except RedisError:
            return {}
        return {name: (int(found[2 * i]), bool(found[2 * i + 1])) for i, name in enumerate(names)}

    async def forget_node_in(self, room: str, node: str) -> None:
        """The connections a node had in a room are gone."""
        keys = RoomKeys(room)
        conns: list[Any] = await self.redis.hkeys(keys.key("conns"))
        for conn in conns:
            if conn.startswith(f"{node}/"):
                await self.unbind(room, conn)

    async def unbind(self, room: str, conn: str,
                     emptied: Callable[[], Awaitable[None]] | None = None) -> str:
        """Forget one connection: "gone" (unknown), "stays" (the person has another), "left"
        (the person left) or "empty" (the room's last person left: `emptied` runs, so the
        room's answer stops, then the thread is deleted)."""
        result = await self.scripts.unbind(keys=RoomKeys(room).all, args=[conn, room])
        if result[0] != "empty":
            return str(result[0])
        logger.info("room %s is empty across the cluster", room)
        if emptied is not None:
            await emptied()
        if result[1]:
            await self.delete_thread(result[1])
        return "empty"


def _client(url: str, connections: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=POOL_WAIT, decode_responses=True,
        protocol=2, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=1,
    )
    return Redis.from_pool(pool)  # closed with the client


async def _keep_thread(thread_id: str) -> None:
    """Until the provider is open there is no thread to delete."""


async def _nothing(lost: bool) -> None:
    """Until the app says what a re-sync is."""
