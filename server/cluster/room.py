"""One room as this process sees it in a cluster: its own connections, requests turned into
Redis scripts, and (while it holds the room's lease) the room's owner.

The same requests and answers as rooms/room.py's `Room`, so the registry, the handlers and the
HTTP routes do not know which one they talk to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from ..messages import Message, is_safe_id, new_id, now_ms
from ..metrics import Metrics
from ..providers.base import AssistantProfile, Provider
from ..rooms.config import RoomConfig
from ..rooms.reply import SWITCHED, Mentions
from ..rooms.room import RoomLimits, check_content, check_reply_mode, turn_instructions
from ..rooms.roster import RoomError, check_name, name_key
from ..rooms.side_channel import SideChannel
from ..rooms.turns import Turn
from ..tools import ToolRegistry
from .node import ClusterNode
from .owner import Owner
from .scripts import RoomKeys, node_rooms_key

logger = logging.getLogger(__name__)

UNAVAILABLE = "The server cannot reach its cluster store right now; try again in a moment."


def unavailable() -> RoomError:
    return RoomError("unavailable", UNAVAILABLE)


class ClusterRoom:
    """A room whose people, queue and history live in Redis; any process may serve it."""

    def __init__(
        self, node: ClusterNode, provider: Provider, profile: AssistantProfile,
        limits: RoomLimits, tools: ToolRegistry, config: RoomConfig, reply: str, handle: str,
        metrics: Metrics, clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.default_reply = config.reply or reply
        self.reply = self.default_reply
        self.handle = handle
        self.profile = profile
        self.limits = limits
        self.keys = RoomKeys(self.name)
        self._node = node
        self._provider = provider
        self._tools = tools
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now().astimezone())
        self._mentions = Mentions(handle, profile.name)
        self._reserved = {name_key(n) for n in ("system", profile.name, handle)}
        self._sids: dict[str, tuple[str, str]] = {}  # sid here -> (user id, nickname)
        self._users: dict[str, dict[str, Any]] = {}  # everyone in the room, by user id
        self._decoded: dict[str, dict[str, Any]] = {}  # a person's JSON in Redis -> the person
        self._busy = False
        self._side = SideChannel()
        self._answering: dict[str, str] = {}  # answer id -> the message it answers
        self._listening: dict[str, AsyncIterator[str]] = {}  # /stream asks, by message id
        self.owner: Owner | None = None
        self._held: Owner | None = None  # the last owner here (what it holds outlives its lease)
        self._lease: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()  # owners fenced out, winding down
        self._closing = False

    # ----- state -----
    @property
    def thread_id(self) -> str | None:
        return None if self.owner is None else self.owner.thread.id

    @property
    def busy(self) -> bool:
        return self._busy

    def users(self) -> list[dict[str, Any]]:
        return sorted(self._users.values(), key=lambda u: (u["since"], u["user_id"]))

    def people(self) -> list[tuple[str, int]]:
        return [(u["name"], u["since"]) for u in self.users()]

    def headcount(self) -> int:
        """People in the room across the cluster."""
        return len(self._users)

    def audience(self) -> int:
        return len(self._users)

    def is_registered(self, sid: str) -> bool:
        return sid in self._sids

    def queued(self) -> int:
        return 0 if self.owner is None else self.owner.engine.queued()

    def __len__(self) -> int:
        """Connections to this room on this process (the registry closes it at zero)."""
        return len(self._sids)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "listed": self.config.listed,
                "password": bool(self.config.password), "reply": self.reply,
                "reply_locked": self.config.reply is not None}

    def instructions(self, turn: Turn) -> str:
        return turn_instructions(self.profile, self.config, self.reply, turn, self._clock())

    # ----- what the room's own events say -----
    def observe(self, event: str, data: Any) -> None:
        if event == "join":
            self._users.setdefault(data["user_id"], {**data, "since": now_ms()})
        elif event == "leave":
            self._users.pop(data["user_id"], None)
        elif event == "ai-start":
            self._busy = True
        elif event == "ai-end":
            self._busy = False
        elif event == "room-settings":
            self.reply = data["reply"]
        elif event == "message-start" and data.get("reply_to"):
            self._answering[data["id"]] = data["reply_to"]
        elif event == "message-delta":
            asked = self._answering.get(data["id"])
            if asked is not None:
                self._side.feed(asked, data["delta"])
        elif event == "~done":
            self._side.release(data["id"])
            self._answering = {a: m for a, m in self._answering.items() if m != data["id"]}
        elif event == "~empty":
            self._users.clear()

    # ----- lifecycle -----
    async def start(self) -> None:
        self._node.relay.watch(self.name, self)
        self._lease = asyncio.create_task(self._hold_lease(), name=f"lease-{self.name}")

    async def _hold_lease(self) -> None:
        """Own the room when no process does; renew while owning; let go when fenced."""
        node, keys = self._node, self.keys.all
        while not self._closing:
            try:
                if self.owner is None:
                    token = await node.scripts.acquire(
                        keys=keys, args=[node.id, node.lease_ms, node.generation])
                    if token:
                        await self._take_over(token)
                elif not await node.scripts.renew(keys=keys,
                                                  args=[self.owner.token, node.lease_ms]):
                    self.owner.writer.fence()
            except RedisError as exc:
                logger.debug("lease of room %s: %s", self.name, exc)
            await asyncio.sleep(node.lease / 3)

    async def _take_over(self, token: str) -> None:
        owner = Owner(self._node.redis, self, token, self._provider, self.profile.name,
                      self._tools, self, self.limits.turns(), self._metrics, self._fenced)
        self.owner = self._held = owner
        try:
            inpos = await owner.take_over()
        except BaseException:
            self.owner = None
            await owner.close()
            raise
        self._node.relay.own(self.name, inpos, owner.inbound)
        self._metrics.rooms_acquired.inc()
        logger.info("this process now runs room %s (%s)", self.name, token)

    def _fenced(self) -> None:
        owner = self.owner
        if owner is None:
            return
        self._metrics.leases_lost.inc()
        self.owner = None
        self._node.relay.disown(self.name)
        task = asyncio.get_running_loop().create_task(owner.close())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def close(self) -> None:
        """This process has no one left in the room (or stops): hand the room over. An answer
        in flight is ended as cut short; whoever owns the room next carries its queue on."""
        self._closing = True
        if self._lease is not None:
            self._lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease
        owner, self.owner = self.owner, None
        self._node.relay.disown(self.name)
        if owner is not None:
            await owner.close()
            with contextlib.suppress(RedisError):
                await self._node.scripts.release(keys=self.keys.all, args=[owner.token])
        for sid in list(self._sids):
            await self._unbind(sid)
        await asyncio.gather(*self._ending, return_exceptions=True)
        self._node.relay.drop(self.name)

    async def _emptied(self) -> None:
        """No one is left anywhere: the answer and the queue go before the thread does."""
        owner, self.owner, self._held = self.owner, None, None
        if owner is not None:
            self._node.relay.disown(self.name)
            await owner.close()

    async def reseed(self) -> None:
        """Redis lost its data: if this process ran the room last, it writes back what it holds
        (the history, the thread, the reply mode, the messages waiting) before its clients
        re-sync; the answer in flight ends, kept as cut short."""
        owner, self.owner, self._held = self.owner or self._held, None, None
        if owner is None:
            return
        self._node.relay.disown(self.name)
        owner.writer.fence()
        await owner.close()  # the answer in flight enters the transcript, incomplete
        node = self._node
        token = await node.scripts.acquire(keys=self.keys.all,
                                           args=[node.id, node.lease_ms, node.generation])
        if not token:
            logger.warning("another process took room %s first; its history starts again",
                           self.name)
            return
        await owner.seed(token, self.reply)
        await node.scripts.release(keys=self.keys.all, args=[token])
        logger.info("wrote room %s back to Redis (%d messages, %d waiting)", self.name,
                    len(owner.transcript), len(owner.engine.pending()))

    def pause(self) -> asyncio.Task[None] | None:
        return None if self.owner is None else self.owner.pause()

    # ----- requests -----
    async def register(self, sid: str, user_id: object, name: str) -> dict[str, Any]:
        name = check_name(name, self.limits.max_name_length)
        if name_key(name) in self._reserved:
            raise RoomError("name_taken", f"The nickname {name!r} is reserved; choose another.")
        if not self._node.healthy:
            raise unavailable()
        wanted = user_id if is_safe_id(user_id) else ""
        try:
            return await self._node.relay.serialized(lambda: self._bind(sid, wanted, name))
        except RedisError as exc:
            logger.warning("could not register in room %s: %s", self.name, exc)
            raise unavailable() from None

    async def _bind(self, sid: str, wanted: str, name: str) -> dict[str, Any]:
        """In the reader's task: bind, send the snapshot, then the live events after it."""
        node = self._node
        most = self.config.max_participants or self.limits.max_participants
        await node.redis.sadd(node_rooms_key(node.id), self.name)
        result = await node.scripts.bind(keys=self.keys.all, args=[
            node.conn(sid), wanted, new_id("u"), name, name_key(name), now_ms(), most, sid,
            self.default_reply, self.name])
        if result[0] != "ok":
            raise _refusal(result[0], name)
        _, uid, first, at, users, history, busy, answer, text, reply, waiting = result
        self._sids[sid] = (uid, name)
        self._users = self._people(users)
        self._busy, self.reply = bool(busy), reply
        welcome = {"user_id": uid, "name": name, "users": self.users(),
                   "assistant": {"name": self.profile.name, "handle": self.handle,
                                 "model": self.profile.model, "demo": self.profile.demo},
                   "busy": self._busy, "room": self.info()}
        send = node.relay.send
        await send(sid, "welcome", welcome)
        if history:
            await send(sid, "message-list", [json.loads(m) for m in history])
        if busy:
            await send(sid, "ai-start", None)
        if answer:
            await send(sid, "message-start", {**json.loads(answer), "content": text})
        for message in waiting:
            await send(sid, "message", json.loads(message))
        node.relay.admit(self.name, sid, at)
        if first == "1":
            logger.info("%s joined room %s (%d here)", name, self.name, len(self._users))
        return welcome

    async def post(self, sid: str, content: str, client_id: object = None) -> dict[str, Any]:
        uid, name = self._person(sid)
        return await self._accept(uid, name, content, client_id, [sid], [])

    async def post_as(
        self, user_id: str, content: str, client_id: object = None
    ) -> tuple[dict[str, Any], AsyncIterator[str]]:
        """A message from an online person by id (/stream); none of the person's sockets, on
        any process, is sent the message or the final answer (the HTTP body carries both)."""
        person = self._users.get(user_id)
        if person is None:
            raise RoomError("not_registered", "This user_id is not in the room; register first.")
        try:
            conns: dict[Any, Any] = await self._node.redis.hgetall(self.keys.key("conns"))
        except RedisError:
            raise unavailable() from None
        theirs = [conn.partition("/")[2] for conn, uid in conns.items() if uid == user_id]
        ack = await self._accept(user_id, person["name"], content, client_id, theirs, theirs,
                                 listen=True)
        return ack, self._deltas(ack["id"])

    def _deltas(self, message_id: str) -> AsyncIterator[str]:
        return self._listening.pop(message_id)

    async def _accept(self, uid: str, name: str, content: str, client_id: object,
                      skip: list[str], quiet: list[str], listen: bool = False) -> dict[str, Any]:
        check_content(content, self.limits.max_message_length)
        node = self._node
        if not node.healthy:
            raise unavailable()
        try:
            message_id = new_id("m")
            if is_safe_id(client_id) and await node.scripts.claim(keys=self.keys.all,
                                                                  args=[client_id]):
                message_id = client_id
            message = Message(message_id, uid, name, "user", content, now_ms())
            if listen:
                self._listening[message_id] = self._side.listen(message_id)
            mentioned = self._mentions.found_in(content)
            result = await node.scripts.accept(keys=self.keys.all, args=[
                json.dumps(message.to_wire()), "1" if mentioned else "0", self.default_reply,
                self.limits.max_queued_turns, json.dumps(skip), json.dumps(quiet)])
        except RedisError as exc:
            logger.warning("could not accept a message in room %s: %s", self.name, exc)
            raise unavailable() from None
        if result[0] != "ok":
            self._side.release(message_id)
            raise RoomError("busy_queue_full", "Too many messages are waiting; try again soon.")
        return {"ok": True, "id": message.id, "created_at": message.created_at,
                "queued": int(result[1])}

    async def stop(self, sid: str) -> bool:
        _, name = self._person(sid)
        try:
            running = await self._node.scripts.stop(keys=self.keys.all, args=[name])
        except RedisError:
            raise unavailable() from None
        if running:
            logger.info("%s stopped the answer in room %s", name, self.name)
        return bool(running)

    async def set_reply(self, sid: str, mode: object) -> dict[str, Any]:
        _, name = self._person(sid)
        mode = check_reply_mode(self.config, mode)
        notice = Message.system(f"{name} set the assistant to {SWITCHED[mode]}.")
        try:
            await self._node.scripts.set_reply(keys=self.keys.all, args=[
                mode, self.default_reply, json.dumps({"reply": mode, "by": name}),
                json.dumps(notice.to_wire())])
        except RedisError:
            raise unavailable() from None
        self.reply = mode
        return {"ok": True, "reply": mode}

    async def notify(self, notice: Message) -> None:
        """A system notice to everyone in the room."""
        with contextlib.suppress(RedisError):
            await self._node.redis.xadd(self.keys.out, {"e": "message",
                                                        "d": json.dumps(notice.to_wire())})

    async def leave(self, sid: str) -> bool:
        """Forget a connection; True when this process has no one left in the room."""
        if sid in self._sids:
            await self._unbind(sid)
        return not self._sids

    async def _unbind(self, sid: str) -> None:
        _, name = self._sids.pop(sid, ("", "?"))
        node = self._node
        try:
            if await node.unbind(self.name, node.conn(sid), self._emptied) in ("left", "empty"):
                logger.info("%s left room %s", name, self.name)
        except RedisError as exc:  # the node's clean-up forgets it once this process stops
            logger.warning("could not unbind a connection in room %s: %s", self.name, exc)

    def _people(self, wires: list[str]) -> dict[str, dict[str, Any]]:
        """Everyone in the room from their JSON, decoding only the people not seen before (a
        newcomer's snapshot lists everyone: in a large room, thousands per arrival)."""
        known, self._decoded = self._decoded, {}
        for wire in wires:
            self._decoded[wire] = known.get(wire) or json.loads(wire)
        return {person["user_id"]: person for person in self._decoded.values()}

    def _person(self, sid: str) -> tuple[str, str]:
        found = self._sids.get(sid)
        if found is None:
            raise RoomError("not_registered", "Register with a nickname first.")
        return found


def _refusal(code: str, name: str) -> RoomError:
    messages = {
        "already_registered": "This connection is already registered.",
        "name_taken": f"The nickname {name!r} is taken; choose another.",
        "room_full": "The room is full; try again later.",
    }
    return RoomError(code, messages.get(code, code))
