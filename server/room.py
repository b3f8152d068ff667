"""The shared room: participants, the one AI thread, the turn queue and the AI lock.

Knows nothing of sockets or HTTP: it talks to clients through an `Emitter` and to the model
through a `Provider`. Participants are addressed by an opaque connection id (`sid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .batching import (
    BATCH_MIN_RECIPIENTS,
    BATCH_WINDOW,
    PRESENCE_WINDOW,
    DeltaBatcher,
    HeldEvent,
    HeldEvents,
)
from .messages import Message, is_safe_id, new_id, now_ms
from .providers.base import AssistantProfile, Provider, RunRequest, ToolCall, ToolResult
from .providers.errors import ProviderError, ProviderTimeout
from .roster import Person, RoomError, Roster
from .thread import RoomThread
from .tools import ToolRegistry

logger = logging.getLogger(__name__)

# Notices that may wait a moment in a large room (see batching.PRESENCE_WINDOW).
PRESENCE_EVENTS = frozenset({"join", "leave"})

ROOM_NOTE = (
    "Several people share this conversation. Each user message begins with the speaker's "
    "name in square brackets, like [Alice]; do not begin your reply with a name in brackets."
)


class Emitter(Protocol):
    """Delivers events to connections.

    Contract: `emit` enqueues the event for every recipient and returns without yielding to
    the event loop in between, so events reach each connection in the order they were emitted.
    """

    async def emit(self, event: str, data: Any, to: Collection[str]) -> None: ...

    async def emit_many(self, events: Sequence[HeldEvent]) -> None:
        """Several events, in order, under the same contract."""
        ...


class ToolLoopError(ProviderError):
    """The model would not stop calling tools."""

    user_message = "The assistant gave up: it kept calling tools without answering."


@dataclass(frozen=True)
class RoomLimits:
    """Validation and run limits (see docs/protocol.md and docs/reliability.md)."""

    max_name_length: int = 32
    max_message_length: int = 8000
    max_queued_turns: int = 50
    max_participants: int = 2000
    run_timeout: float = 60.0  # seconds without any sign of life from the provider
    tool_timeout: float = 10.0
    max_tool_rounds: int = 5


@dataclass(frozen=True)
class Turn:
    """A user message waiting for its answer; `quiet` sids do not get the final message-list
    (they asked over HTTP and receive the answer in the response body instead)."""

    message: Message
    quiet: frozenset[str] = frozenset()


def run_instructions(base: str, nickname: str, today: datetime) -> str:
    """Per-run instructions: the base, the room note, who to address, and today's date."""
    date = today.strftime("%A, %d %B %Y")
    clock = today.strftime("%H:%M %Z").strip()
    return (
        f"{base}\n\n{ROOM_NOTE}\nPlease address the user as {nickname}.\n"
        f"Today is {date} ({today.date().isoformat()}, {clock})."
    )


class Room:
    """One shared conversation with one assistant."""

    def __init__(
        self,
        provider: Provider,
        profile: AssistantProfile,
        emitter: Emitter,
        limits: RoomLimits | None = None,
        clock: Callable[[], datetime] | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.provider = provider
        self.tools = tools or ToolRegistry()
        self.profile = profile
        self.limits = limits or RoomLimits()
        self._emitter = emitter
        self._clock = clock or (lambda: datetime.now().astimezone())
        self._roster = Roster(
            self.limits.max_name_length, self.limits.max_participants, (profile.name,)
        )
        # registered sids that receive room traffic, in the order they joined: the fan-out
        # writes in that order, as socket.io's rooms do (docs/performance.md)
        self._live: dict[str, None] = {}
        self._transcript: list[Message] = []
        self._version = 0  # bumped on every transcript change
        self._ids: set[str] = set()
        self._queue: asyncio.Queue[Turn] = asyncio.Queue()
        self._waiting: dict[str, Message] = {}  # queued messages, not yet in the thread
        self._listeners: dict[str, list[asyncio.Queue[str | None]]] = {}
        self._thread = RoomThread(provider)
        self._answer: Message | None = None  # the assistant message being streamed
        self._announced = False
        self._deltas = DeltaBatcher(self._no_delta, 0.0, self._spawn)
        self._presence = HeldEvents(emitter.emit_many, PRESENCE_WINDOW, self._spawn)
        self._busy = False
        self._current: asyncio.Task[None] | None = None
        self._stopped_by: str | None = None
        self._preparing = False
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ----- state, for the socket layer and tests -----
    @property
    def thread_id(self) -> str | None:
        return self._thread.id

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def transcript(self) -> list[Message]:
        return list(self._transcript)

    def users(self) -> list[dict[str, Any]]:
        return self._roster.users()

    def people(self) -> list[tuple[str, int]]:
        """Who is here, oldest first (the `RoomView` that tools see)."""
        return self._roster.people()

    def is_registered(self, sid: str) -> bool:
        return sid in self._roster

    def queued(self) -> int:
        return self._queue.qsize()

    # ----- lifecycle -----
    async def start(self) -> None:
        """Start the turn worker."""
        self._worker = asyncio.create_task(self._work(), name="room-worker")

    async def close(self) -> None:
        """Stop the worker and any run, then delete the thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._presence.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._thread.delete()

    # ----- requests -----
    async def register(self, sid: str, user_id: object, name: str) -> dict[str, Any]:
        """Bind `sid` to a nickname; return the `welcome` payload (already sent to `sid`)."""
        person = self._roster.bind(sid, user_id, name)
        history = await self._history()
        if sid not in self._roster:  # gone while the history was read
            raise RoomError("not_registered", "The connection closed during registration.")
        welcome = {
            "user_id": person.user_id,
            "name": person.name,
            "users": self.users(),
            "assistant": {"name": self.profile.name, "model": self.profile.model,
                          "demo": self.profile.demo},
            "busy": self._busy,
        }
        await self._emitter.emit("welcome", welcome, [sid])
        if history:
            await self._emitter.emit("message-list", history, [sid])
        if self._busy:
            await self._emitter.emit("ai-start", None, [sid])
            if self._announced and self._answer is not None:
                await self._emitter.emit("message-start", self._answer.to_wire(), [sid])
        for waiting in self._waiting.values():  # shown live to those present when sent
            await self._emitter.emit("message", waiting.to_wire(), [sid])
        self._live[sid] = None
        if len(person.sids) == 1:
            await self._emit("join", {"user_id": person.user_id, "name": person.name}, skip={sid})
            logger.info("%s joined (%d online)", person.name, len(self._roster))
        if self._thread.id is None and not self._preparing:
            self._preparing = True  # one creation in flight, however many people arrive
            self._spawn(self._prepare_thread())
        return welcome

    async def post(self, sid: str, content: str, client_id: object = None) -> dict[str, Any]:
        """Accept a user's message from socket `sid`: show it to the others, queue its turn."""
        return await self._accept(self._roster.of(sid), content, client_id, {sid})

    async def post_as(
        self, user_id: str, content: str, client_id: object = None
    ) -> tuple[dict[str, Any], AsyncIterator[str]]:
        """Accept a message from an online person by id (the HTTP stream); also return the
        answer's text deltas. None of the person's own sockets is sent the message or the
        final answer: their client shows both from the HTTP exchange."""
        person = self._roster.by_id(user_id)
        if person is None:
            raise RoomError("not_registered", "This user_id is not in the room; register first.")
        quiet = frozenset(person.sids)
        listener: asyncio.Queue[str | None] = asyncio.Queue()
        ack = await self._accept(person, content, client_id, quiet, listener)
        return ack, _drain(listener)

    async def _accept(
        self,
        person: Person,
        content: str,
        client_id: object,
        skip: Collection[str],
        listener: asyncio.Queue[str | None] | None = None,
    ) -> dict[str, Any]:
        if not content.strip():
            raise RoomError("empty_message", "The message is empty.")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise RoomError("invalid_payload", "The message is not valid Unicode text.") from None
        if len(content) > self.limits.max_message_length:
            raise RoomError(
                "message_too_long",
                f"The message is longer than {self.limits.max_message_length} characters.",
            )
        if self._queue.qsize() >= self.limits.max_queued_turns:
            raise RoomError("busy_queue_full", "Too many messages are waiting; try again soon.")
        msg_id = client_id if is_safe_id(client_id) and client_id not in self._ids else None
        message = Message(
            msg_id or new_id("m"), person.user_id, person.name, "user", content, now_ms()
        )
        self._ids.add(message.id)
        await self._emit("message", message.to_wire(), skip=skip)
        if listener is not None:
            self._listeners[message.id] = [listener]
        self._waiting[message.id] = message
        self._queue.put_nowait(Turn(message, frozenset(skip) if listener else frozenset()))
        return {"ok": True, "id": message.id, "created_at": message.created_at,
                "queued": self._queue.qsize()}

    async def stop(self, sid: str) -> bool:
        """Stop the answer in progress (any participant may); False if there was none."""
        person = self._roster.of(sid)
        if self._current is None or self._current.done():
            return False
        self._stopped_by = person.name
        self._current.cancel()
        logger.info("%s stopped the answer", person.name)
        return True

    async def leave(self, sid: str) -> None:
        """Forget a connection; when a person's last one goes, tell the others."""
        self._live.pop(sid, None)
        person = self._roster.unbind(sid)
        if person is None:
            return
        logger.info("%s left (%d online)", person.name, len(self._roster))
        await self._emit("leave", {"user_id": person.user_id, "name": person.name})
        if not len(self._roster):
            await self._reset()

    async def _emit(
        self, event: str, data: Any, skip: Collection[str] = (), with_next: bool = False
    ) -> None:
        """Send to everyone in the room but `skip`. In a large room join/leave notices (and an
        event sent `with_next`) are held for a moment and sent together; anything else goes
        out with what is held, in the same write to each person, so no event overtakes
        another."""
        to = [s for s in self._live if s not in skip] if skip else list(self._live)
        if not to:
            return
        if (event in PRESENCE_EVENTS or with_next) and len(self._live) >= BATCH_MIN_RECIPIENTS:
            self._presence.hold(event, data, to)
            return
        if self._presence.pending:
            self._presence.hold(event, data, to)
            await self._presence.flush()
            return
        await self._emitter.emit(event, data, to)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare_thread(self) -> None:
        try:
            await self._thread.prepare()
        finally:
            self._preparing = False

    async def _history(self) -> list[dict[str, Any]]:
        """The history for a newcomer: read back from the thread when the provider can and the
        room is idle; the room's own transcript otherwise (or if the thread changed meanwhile)."""
        ours = [m.to_wire() for m in self._transcript]
        if not ours or self._busy:
            return ours
        version = self._version
        theirs = await self._thread.read_back()
        if theirs is None or version != self._version:
            return ours
        return [m.to_wire() for m in theirs]

    async def _reset(self) -> None:
        """The room is empty: drop queued turns, cancel the run, delete the thread."""
        while not self._queue.empty():
            self._release(self._queue.get_nowait().message.id)
        self._waiting.clear()
        if self._current is not None:
            self._current.cancel()
            await asyncio.wait({self._current})
        self._transcript.clear()
        self._version += 1
        self._ids.clear()
        await self._thread.delete()

    # ----- turns -----
    async def _work(self) -> None:
        """Take turns one at a time, first in first out."""
        while True:
            turn = await self._queue.get()
            task = asyncio.create_task(self._take_turn(turn), name=f"turn-{turn.message.id}")
            self._current = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait({task})
                raise
            finally:
                self._current = None

    async def _take_turn(self, turn: Turn) -> None:
        message = turn.message
        self._waiting.pop(message.id, None)
        answer = Message(
            new_id("a"), None, self.profile.name, "assistant", "", now_ms(), reply_to=message.id
        )
        self._ids.add(answer.id)  # announced in message-start: no client may take it
        self._answer, self._announced, self._busy = answer, False, True
        window = BATCH_WINDOW if len(self._live) >= BATCH_MIN_RECIPIENTS else 0.0
        self._deltas = DeltaBatcher(
            lambda text: self._send_delta(answer, text), window, self._spawn
        )
        await self._emit("ai-start", None)
        completed = False
        try:
            thread_id = await self._thread.ensure()
            self._transcript.append(message)
            self._version += 1
            await self._run(thread_id, message, answer)
            completed = True
        except ProviderError as exc:
            logger.warning("turn %s failed: %s: %s", message.id, type(exc).__name__, exc)
            await self._emit("message", Message.system(exc.user_message).to_wire())
        except asyncio.CancelledError:
            logger.info("turn %s cancelled", message.id)
            if self._stopped_by is not None:
                notice = f"{self._stopped_by} stopped the answer."
                await self._emit("message", Message.system(notice).to_wire())
            raise
        except Exception:
            logger.exception("turn %s failed unexpectedly", message.id)
            await self._emit("message", Message.system(ProviderError.user_message).to_wire())
        finally:
            self._stopped_by = None
            await self._finish(answer, completed, turn.quiet)

    async def _run(self, thread_id: str, message: Message, answer: Message) -> None:
        """Stream one run; give up when the provider shows no sign of life for `run_timeout`
        seconds (tools running do not count: they have their own timeout)."""
        loop = asyncio.get_running_loop()
        idle = self.limits.run_timeout
        rounds = 0

        async def call_tools(calls: Sequence[ToolCall]) -> list[ToolResult]:
            nonlocal rounds
            rounds += 1
            if rounds > self.limits.max_tool_rounds + 1:
                raise ToolLoopError(f"still calling tools after {rounds - 1} rounds")
            if rounds > self.limits.max_tool_rounds:
                note = (f"tool round limit ({self.limits.max_tool_rounds}) reached; "
                        "answer now without calling tools")
                return [ToolResult(c.call_id, json.dumps({"error": note})) for c in calls]
            deadline.reschedule(None)
            results = await asyncio.gather(*(self._call_tool(answer.id, c) for c in calls))
            deadline.reschedule(loop.time() + idle)
            return list(results)

        request = RunRequest(
            message, self._instructions(message.name), self.tools.specs(), call_tools,
            answer_id=answer.id, answer_created_at=answer.created_at,
        )
        try:
            async with asyncio.timeout(idle) as deadline:
                async for event in self.provider.run(thread_id, request):
                    deadline.reschedule(loop.time() + idle)
                    await self._stream(answer, event.text)
        except TimeoutError:
            raise ProviderTimeout(f"no response from the provider for {idle:g} s") from None

    async def _call_tool(self, answer_id: str, call: ToolCall) -> ToolResult:
        """Run one tool call, telling the room when it starts and how it ended."""
        status = {"message_id": answer_id, "call_id": call.call_id, "name": call.name}
        await self._emit("tool-call", {**status, "status": "started"})
        outcome = await self.tools.execute(call, self, self.limits.tool_timeout)
        await self._emit("tool-call", {**status, "status": "finished" if outcome.ok else "failed"})
        return outcome.result

    @staticmethod
    async def _no_delta(text: str) -> None:
        """No answer is streaming."""

    def _instructions(self, nickname: str) -> str:
        return run_instructions(self.profile.instructions, nickname, self._clock())

    async def _stream(self, answer: Message, text: str) -> None:
        if not text:
            return
        if not self._announced:
            self._announced = True
            # in a large room it goes out with the first delta: one write per person, not two
            await self._emit("message-start", answer.to_wire(), with_next=True)
        for listener in self._listeners.get(answer.reply_to or "", ()):
            listener.put_nowait(text)
        await self._deltas.add(text)

    async def _send_delta(self, answer: Message, text: str) -> None:
        """`answer.content` is always exactly what the room has been sent (a newcomer's
        snapshot), so it grows here, as the merged delta goes out."""
        answer.content += text
        await self._emit("message-delta", {"id": answer.id, "delta": text})

    async def _finish(self, answer: Message, completed: bool, quiet: Collection[str]) -> None:
        """Record the answer (kept even when cut short) and release the lock."""
        await self._deltas.flush()
        self._answer, self._busy = None, False
        self._release(answer.reply_to or "")
        if answer.content:
            answer.incomplete = not completed
            self._transcript.append(answer)
            self._version += 1
            await self._emit("message-list", [answer.to_wire()], skip=quiet)
        await self._emit("ai-end", None)

    def _release(self, message_id: str) -> None:
        """End the HTTP answer streams waiting on `message_id`."""
        for listener in self._listeners.pop(message_id, ()):
            listener.put_nowait(None)


async def _drain(queue: asyncio.Queue[str | None]) -> AsyncIterator[str]:
    """Yield queued text until the end marker."""
    while (item := await queue.get()) is not None:
        yield item
