"""The room's owner: the one process that runs its turns, while it holds the room's lease.

It runs today's `TurnEngine` unchanged. What the engine emits, adds to the thread, takes from
the queue and finishes becomes one ordered list of operations that `Writer` hands to Redis in
the WRITE script, which first checks the owner's fencing token: a process that lost its lease
(paused past it, or cut off from Redis) writes nothing more into the room.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..messages import Message
from ..metrics import Metrics
from ..providers.base import Provider, SupportsCancel
from ..providers.errors import ProviderError
from ..rooms.side_channel import SideChannel
from ..rooms.thread import RoomThread
from ..rooms.transcript import Transcript
from ..rooms.turns import Note, Turn, TurnEngine, TurnLimits
from ..tools import RoomView, ToolRegistry
from .relay import Entry
from .scripts import TAKEOVER_STATE, WRITE, RoomKeys

logger = logging.getLogger(__name__)

TAKEOVER_NOTICE = ("The assistant's server stopped while it was answering; the answer was cut "
                   "short. It carries on with the next message.")
RETRY = (0.05, 0.1, 0.25, 0.5, 1.0)


def queued_fields(item: Turn | Note) -> tuple[str, str, str, str, str]:
    """A queued item as the inbound stream holds it: message, kind, mentioned, may pass,
    quiet sids."""
    if isinstance(item, Note):
        return json.dumps(item.message.to_wire()), "note", "0", "0", ""
    quiet = json.dumps(sorted(item.quiet)) if item.quiet else ""
    return (json.dumps(item.message.to_wire()), "turn", "1" if item.mentioned else "0",
            "1" if item.may_pass else "0", quiet)


class Writer:
    """The owner's writes, in order, each batch one WRITE (numbered, so a batch retried after a
    lost reply is not applied twice)."""

    def __init__(self, redis: Redis, keys: RoomKeys, token: str,
                 on_fenced: Callable[[], None]) -> None:
        self._script = redis.register_script(WRITE)
        self._keys = keys.all
        self._token = token
        self._ops: list[str] = []
        self._lock = asyncio.Lock()
        self._on_fenced = on_fenced
        self.fenced = False
        self._batch = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, *op: str) -> None:
        if not self.fenced:
            self._ops.extend(op)

    def soon(self) -> None:
        """Write what is queued without the caller waiting (a sync hook's operations)."""
        task = asyncio.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        async with self._lock:
            if self.fenced or not self._ops:
                return
            ops, self._ops = self._ops, []
            self._batch += 1
            failures = 0
            while not self.fenced:
                try:
                    done = await self._script(keys=self._keys,
                                              args=[self._token, self._batch, *ops])
                except RedisError as exc:
                    if not failures:
                        logger.warning("cannot write to Redis (%s); retrying", exc)
                    await asyncio.sleep(RETRY[min(failures, len(RETRY) - 1)])
                    failures += 1
                    continue
                if int(done) == -1:
                    self.fence()
                return

    def fence(self) -> None:
        if not self.fenced:
            self.fenced = True
            self._ops.clear()
            logger.warning("lost the lease of room %s; writing nothing more to it",
                           self._keys[0])
            self._on_fenced()

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class OwnedRoom(Protocol):
    """What the owner needs of its room."""

    name: str
    reply: str

    def instructions(self, turn: Turn) -> str: ...

    def audience(self) -> int: ...

    def people(self) -> list[tuple[str, int]]: ...


class JournaledTranscript(Transcript):
    """The room's transcript; every message that enters the thread also enters Redis."""

    writer: Writer | None = None

    def add(self, message: Message) -> None:
        if any(known.id == message.id for known in self._recent()):
            return  # a turn taken again after its owner stopped: its message is in already
        super().add(message)
        if self.writer is not None:
            self.writer.add("H", json.dumps(message.to_wire()))
            self.writer.soon()


    def _recent(self) -> list[Message]:
        return self._messages[-3:]


class JournaledThread(RoomThread):
    """The room's thread; its id is recorded in Redis when it is created."""

    writer: Writer | None = None

    async def ensure(self) -> str:
        known = self.id
        thread_id = await super().ensure()
        if thread_id != known and self.writer is not None:
            self.writer.add("R", thread_id)
            await self.writer.flush()
        return thread_id


class Owner:
    """Runs one room's turns for as long as this process holds `token`."""

    def __init__(
        self, redis: Redis, room: OwnedRoom, token: str, provider: Provider,
        assistant: str, tools: ToolRegistry, view: RoomView, limits: TurnLimits,
        metrics: Metrics, on_fenced: Callable[[], None],
    ) -> None:
        self.room = room
        self.token = token
        self.keys = RoomKeys(room.name)
        self._redis = redis
        self._provider = provider
        self._metrics = metrics
        self.writer = Writer(redis, self.keys, token, on_fenced)
        self.thread = JournaledThread(provider)
        self.transcript = JournaledTranscript(self.thread)
        self._inbound_ids: dict[str, str] = {}  # message id -> its inbound stream id
        self.engine = TurnEngine(
            provider, self.transcript, self.emit, assistant, room.instructions, room.audience,
            tools, view, SideChannel(), limits, metrics, journal=self,
        )

    # ----- the engine's outlets -----
    async def emit(
        self, event: str, data: Any, skip: Collection[str] = (), hold: bool = False
    ) -> None:
        payload = "" if data is None else json.dumps(data)
        if event == "message-delta":
            self.writer.add("D", data["delta"], payload)
        else:
            self.writer.add("E", event, payload, json.dumps(list(skip)) if skip else "",
                            "1" if hold else "0")
        await self.writer.flush()

    def taken(self, item: Turn | Note) -> None:
        inbound = self._inbound_ids.get(item.message.id)
        if inbound is not None:
            self.writer.add("T", inbound, "1" if isinstance(item, Turn) else "0")
            self.writer.soon()

    def finished(self, item: Turn | Note) -> None:
        self._inbound_ids.pop(item.message.id, None)
        self.writer.add("F", item.message.id)
        self.writer.soon()

    # ----- taking over, and the inbound stream -----
    async def take_over(self) -> str:
        """Load the room from Redis, end an answer its previous owner left open, queue what
        waits, and start the worker; return the inbound id to read on from."""
        (thread, _reply, busy, answer, text, history, _people, queued,
         inpos) = await self._redis.register_script(TAKEOVER_STATE)(keys=self.keys.all)
        self.thread.id = thread or None
        for raw in history:
            Transcript.add(self.transcript, Message.from_wire(json.loads(raw)))
        self.transcript.writer = self.writer
        self.thread.writer = self.writer
        if busy or answer:
            await self._end_orphan(answer, text)
        self.writer.add("F", "")
        for entry_id, data, kind, mentioned, may_pass, quiet in queued:
            self._submit(entry_id, data, kind, mentioned, may_pass, quiet)
        await self.writer.flush()
        self.engine.start()
        return str(inpos)

    async def _end_orphan(self, answer: str, text: str) -> None:
        """The previous owner stopped mid-answer: the room gets a notice, the answer so far
        (kept, incomplete) and ai-end; the upstream run is cancelled where the API can."""
        if self.thread.id is not None:
            if isinstance(self._provider, SupportsCancel):
                try:
                    await self._provider.cancel_active(self.thread.id)
                except ProviderError as exc:
                    logger.warning("could not cancel the previous owner's run: %s", exc)
        self._metrics.answers_taken_over.inc()
        await self.emit("message", Message.system(TAKEOVER_NOTICE).to_wire())
        if answer and text:
            message = Message.from_wire(json.loads(answer))
            message.content, message.incomplete = text, True
            self.transcript.add(message)
            await self.emit("message-list", [message.to_wire()])
        await self.emit("ai-end", None)
        logger.info("ended the answer the previous owner of room %s left open", self.room.name)

    def inbound(self, entries: list[Entry]) -> None:
        """Messages and stops sent through any process."""
        for entry_id, fields in entries:
            kind = fields.get("k")
            if kind == "stop":
                self.engine.stop(fields.get("by", "someone"))
            elif kind == "msg":
                self._submit(entry_id, fields["d"], fields["t"], fields["m"], fields["p"],
                             fields.get("q", ""))

    def _submit(self, entry_id: str, data: str, kind: str, mentioned: str, may_pass: str,
                quiet: str) -> None:
        message = Message.from_wire(json.loads(data))
        self._inbound_ids[message.id] = entry_id
        if kind == "turn":
            asker = frozenset(json.loads(quiet)) if quiet else frozenset()
            self.engine.submit(Turn(message, asker, mentioned == "1", may_pass == "1"))
        else:
            self.engine.submit(Note(message))

    # ----- the end -----
    def pause(self) -> asyncio.Task[None] | None:
        return self.engine.pause()

    async def close(self) -> None:
        """Stop the worker (an answer in flight ends as cut short) and write what is left."""
        await self.engine.close()
        await self.writer.flush()
        await self.writer.close()

    async def seed(self, token: str, reply: str) -> None:
        """Write what this (closed) owner holds into a Redis that lost it, under `token`: the
        history, the thread, the reply mode and the queue."""
        seed = Writer(self._redis, self.keys, token, lambda: None)
        for message in self.transcript:
            seed.add("H", json.dumps(message.to_wire()))
        if self.thread.id is not None:
            seed.add("R", self.thread.id)
        seed.add("P", reply)
        for item in self.engine.pending():
            seed.add("Q", *queued_fields(item))
        await seed.flush()

    async def reset(self) -> None:
        """The room emptied: drop the queue and the answer; the thread is deleted elsewhere."""
        await self.engine.reset()
        self.transcript.clear()
        self.thread.id = None
