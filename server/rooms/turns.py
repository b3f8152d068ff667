"""The turn engine: a FIFO queue of messages to answer, one answer at a time, and stop.

Each answer is a `Turn`, one object holding what the turn is (its message, its answer, whether
the answer was announced, who stopped it), instead of flags spread over the room. A `Note` is a
message that enters the thread without an answer (a room where the assistant answers only when
addressed); it waits in the same queue, so the thread keeps the room's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..logs import log_ids
from ..messages import Message, new_id, now_ms
from ..metrics import Metrics
from ..providers.base import Provider, RunRequest, ToolCall, ToolResult
from ..providers.errors import ProviderError, ProviderTimeout, summary
from ..tools import RoomView, ToolRegistry
from .batching import BATCH_MIN_RECIPIENTS, BATCH_WINDOW, DeltaBatcher
from .config import NO_REPLY
from .side_channel import SideChannel
from .transcript import Transcript

logger = logging.getLogger(__name__)


class ToolLoopError(ProviderError):
    """The model would not stop calling tools."""

    user_message = "The assistant gave up: it kept calling tools without answering."


@dataclass(frozen=True)
class TurnLimits:
    """How long and how far one answer may go, and how many may wait."""

    max_queued_turns: int = 50
    run_timeout: float = 60.0  # seconds without any sign of life from the provider
    tool_timeout: float = 10.0
    max_tool_rounds: int = 5


@dataclass(eq=False)
class Turn:
    """A user message and, once taken, its answer. `quiet` sids do not get the final
    message-list (they asked over HTTP and receive the answer in the response body). A turn
    that `may_pass` shows nothing until its text is clearly not `NO_REPLY`, and nothing at all
    if it is."""

    message: Message
    quiet: frozenset[str] = frozenset()
    mentioned: bool = False  # the message addressed the assistant
    may_pass: bool = False
    answer: Message | None = None
    started: bool = False  # ai-start went out
    announced: bool = False  # message-start went out
    held: str = ""  # text kept back while it may still be NO_REPLY
    stopped_by: str | None = None
    completed: bool = False
    began: float = 0.0  # loop time the run began
    deltas: DeltaBatcher | None = field(default=None, repr=False)

    def passes(self) -> bool:
        """Whether the text so far may still be the model's NO_REPLY."""
        return self.may_pass and NO_REPLY.startswith(self.held.strip())


@dataclass(eq=False)
class Note:
    """A message that enters the thread without a run."""

    message: Message


class RoomEmit(Protocol):
    """The room's emit: to everyone in the room but `skip`."""

    def __call__(
        self, event: str, data: Any, skip: Collection[str] = (), hold: bool = False
    ) -> Awaitable[None]: ...


class Journal(Protocol):
    """Told when the engine takes an item from its queue and when that item is done (a cluster
    records both in Redis, so another process can carry the queue on)."""

    def taken(self, item: Turn | Note) -> None: ...

    def finished(self, item: Turn | Note) -> None: ...


class TurnEngine:
    """Takes turns one at a time, first in first out, and streams each answer to the room."""

    def __init__(
        self,
        provider: Provider,
        transcript: Transcript,
        emit: RoomEmit,
        assistant_name: str,
        instructions: Callable[[Turn], str],
        audience: Callable[[], int],
        tools: ToolRegistry,
        view: RoomView,
        side: SideChannel,
        limits: TurnLimits,
        metrics: Metrics | None = None,
        journal: Journal | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._journal = journal
        self._provider = provider
        self._transcript = transcript
        self._emit = emit
        self._name = assistant_name
        self._instructions = instructions
        self._audience = audience
        self._tools = tools
        self._view = view
        self._side = side
        self._limits = limits
        self._queued: deque[Turn | Note] = deque()
        self._wake = asyncio.Event()
        self.current: Turn | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._paused = False

    @property
    def busy(self) -> bool:
        """Whether the room sees the assistant answering (between ai-start and ai-end)."""
        return self.current is not None and self.current.started

    @property
    def running(self) -> bool:
        """Whether a run is in progress, shown yet or not."""
        return self.current is not None

    def queued(self) -> int:
        """Turns waiting for an answer (notes do not count)."""
        return sum(isinstance(item, Turn) for item in self._queued)

    def waiting(self) -> list[Message]:
        """Messages accepted but not yet in the thread, in order."""
        return [item.message for item in self._queued]

    def pending(self) -> list[Turn | Note]:
        """The queue itself, in order (a cluster hands it on when its store lost it)."""
        return list(self._queued)

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="turn-worker")

    async def close(self) -> None:
        """Stop the worker, any answer and every timer."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, item: Turn | Note) -> int:
        """Queue a turn or a note (the room checks MAX_QUEUED_TURNS first); return how many
        turns are waiting."""
        self._queued.append(item)
        self._wake.set()
        return self.queued()

    def stop(self, by: str) -> bool:
        """Cancel the answer in progress; False if there is none."""
        turn, task = self.current, self._task
        if turn is None or task is None or task.done():
            return False
        turn.stopped_by = by
        task.cancel()
        return True

    def pause(self) -> asyncio.Task[None] | None:
        """Take no more turns from the queue (shutting down); return the answer in flight."""
        self._paused = True
        task = self._task
        return task if task is not None and not task.done() else None

    async def reset(self) -> None:
        """Drop every queued turn and cancel the answer (the room emptied)."""
        while self._queued:
            self._side.release(self._queued.popleft().message.id)
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    # ----- the worker -----
    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            if self._paused or not self._queued:
                self._wake.clear()
                continue
            item = self._queued.popleft()
            if isinstance(item, Note):
                notes = [item, *self._more_notes()]
                for note in notes:
                    self._journaled("taken", note)
                await self._note(notes)
                for note in notes:
                    self._journaled("finished", note)
                continue
            turn = item
            self._journaled("taken", turn)
            task = asyncio.create_task(self._take(turn), name=f"turn-{turn.message.id}")
            self._task = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait({task})
                raise
            finally:
                self._task = None
                self._journaled("finished", turn)

    def _journaled(self, what: str, item: Turn | Note) -> None:
        if self._journal is not None:
            getattr(self._journal, what)(item)

    def _more_notes(self) -> list[Note]:
        """The notes waiting right behind one: they enter the thread together."""
        notes: list[Note] = []
        while self._queued and isinstance(head := self._queued[0], Note):
            notes.append(head)
            self._queued.popleft()
        return notes

    async def _note(self, notes: list[Note]) -> None:
        """Messages enter the thread without a run (and the transcript, whatever happens)."""
        messages = [note.message for note in notes]
        for message in messages:
            self._transcript.add(message)
            self._side.release(message.id)  # a /stream request for it gets an empty answer
        try:
            thread_id = await self._transcript.thread.ensure()
            await self._provider.append(thread_id, messages)
        except ProviderError as exc:
            logger.warning("%d message(s) did not reach the thread: %s", len(messages),
                           summary(exc))
            logger.debug("provider detail: %s", exc)

    async def _take(self, turn: Turn) -> None:
        with log_ids(turn=turn.message.id):
            await self._take_turn(turn)

    async def _take_turn(self, turn: Turn) -> None:
        message = turn.message
        answer = Message(new_id("a"), None, self._name, "assistant", "", now_ms(),
                         reply_to=message.id)
        self._transcript.reserve(answer.id)  # announced in message-start: no client may take it
        window = BATCH_WINDOW if self._audience() >= BATCH_MIN_RECIPIENTS else 0.0
        turn.answer = answer
        turn.deltas = DeltaBatcher(lambda text: self._send_delta(answer, text), window, self.spawn)
        self.current = turn
        turn.began = asyncio.get_running_loop().time()
        self._metrics.turns_started.inc()
        if not turn.may_pass:
            await self._start(turn)
        try:
            thread_id = await self._transcript.thread.ensure()
            self._transcript.add(message)
            await self._run(thread_id, turn)
            turn.completed = True
            self._metrics.turns_completed.inc()
        except ProviderError as exc:
            # The provider's detail may quote the request (people's messages): debug only.
            logger.warning("turn %s failed: %s", message.id, summary(exc))
            logger.debug("turn %s: provider detail: %s", message.id, exc)
            self._metrics.turns_failed.labels(kind=type(exc).__name__).inc()
            turn.held = ""  # nothing more of it will be shown
            await self._emit("message", Message.system(exc.user_message).to_wire())
        except asyncio.CancelledError:
            logger.info("turn %s cancelled", message.id)
            if turn.stopped_by is not None:
                self._metrics.turns_stopped.inc()
                notice = f"{turn.stopped_by} stopped the answer."
                await self._emit("message", Message.system(notice).to_wire())
            raise
        except Exception:
            logger.exception("turn %s failed unexpectedly", message.id)
            self._metrics.turns_failed.labels(kind="internal").inc()
            await self._emit("message", Message.system(ProviderError.user_message).to_wire())
        finally:
            await self._finish(turn)

    async def _run(self, thread_id: str, turn: Turn) -> None:
        """Stream one run; give up when the provider shows no sign of life for `run_timeout`
        seconds (tools running do not count: they have their own timeout)."""
        loop = asyncio.get_running_loop()
        idle = self._limits.run_timeout
        answer = turn.answer
        assert answer is not None
        rounds = 0

        async def call_tools(calls: Sequence[ToolCall]) -> list[ToolResult]:
            nonlocal rounds
            rounds += 1
            limit = self._limits.max_tool_rounds
            if rounds > limit + 1:
                raise ToolLoopError(f"still calling tools after {rounds - 1} rounds")
            if rounds > limit:
                note = f"tool round limit ({limit}) reached; answer now without calling tools"
                return [ToolResult(c.call_id, json.dumps({"error": note})) for c in calls]
            deadline.reschedule(None)
            results = await asyncio.gather(*(self._call_tool(answer.id, c) for c in calls))
            deadline.reschedule(loop.time() + idle)
            return list(results)

        request = RunRequest(
            turn.message, self._instructions(turn), self._tools.specs(),
            call_tools, answer_id=answer.id, answer_created_at=answer.created_at,
        )
        try:
            async with asyncio.timeout(idle) as deadline:
                async for event in self._provider.run(thread_id, request):
                    deadline.reschedule(loop.time() + idle)
                    await self._stream(turn, event.text)
        except TimeoutError:
            raise ProviderTimeout(f"no response from the provider for {idle:g} s") from None

    async def _call_tool(self, answer_id: str, call: ToolCall) -> ToolResult:
        """Run one tool call, telling the room when it starts and how it ended."""
        if self.current is not None:
            await self._start(self.current)  # a model that uses tools is answering
        status = {"message_id": answer_id, "call_id": call.call_id, "name": call.name}
        await self._emit("tool-call", {**status, "status": "started"})
        outcome = await self._tools.execute(call, self._view, self._limits.tool_timeout)
        tool = call.name if call.name in self._tools else "unknown"  # a bounded label
        self._metrics.tool_calls.labels(tool=tool, outcome="ok" if outcome.ok else "failed").inc()
        await self._emit("tool-call", {**status, "status": "finished" if outcome.ok else "failed"})
        return outcome.result

    async def _start(self, turn: Turn) -> None:
        """ai-start, once per turn: the room sees that the assistant is answering."""
        if not turn.started:
            turn.started = True
            await self._emit("ai-start", None)

    async def _stream(self, turn: Turn, text: str) -> None:
        if not text or turn.answer is None or turn.deltas is None:
            return
        if not turn.started:
            turn.held += text
            if turn.passes():
                return  # it may still be NO_REPLY: show nothing yet
            text, turn.held = turn.held, ""
            await self._start(turn)
        if not turn.announced:
            turn.announced = True
            self._metrics.first_delta.observe(asyncio.get_running_loop().time() - turn.began)
            # in a large room it goes out with the first delta: one write per person, not two
            await self._emit("message-start", turn.answer.to_wire(), hold=True)
        self._side.feed(turn.message.id, text)
        await turn.deltas.add(text)

    async def _send_delta(self, answer: Message, text: str) -> None:
        """`answer.content` is always exactly what the room has been sent (a newcomer's
        snapshot), so it grows here, as the merged delta goes out."""
        answer.content += text
        self._metrics.deltas_sent.inc()
        await self._emit("message-delta", {"id": answer.id, "delta": text})

    async def _finish(self, turn: Turn) -> None:
        """Record the answer (kept even when cut short) and release the lock. A turn whose
        whole answer was NO_REPLY ends without a word to anyone."""
        if turn.held and turn.held.strip() != NO_REPLY:
            text, turn.held = turn.held, ""  # it ended before it was clearly not NO_REPLY
            await self._start(turn)
            await self._stream(turn, text)
        if turn.deltas is not None:
            await turn.deltas.flush()
        answer = turn.answer
        self.current = None
        self._metrics.answer_duration.observe(asyncio.get_running_loop().time() - turn.began)
        self._side.release(turn.message.id)
        if answer is not None and answer.content:
            answer.incomplete = not turn.completed
            self._transcript.add(answer)
            await self._emit("message-list", [answer.to_wire()], skip=turn.quiet)
        if turn.started:
            await self._emit("ai-end", None)
        elif turn.held:
            logger.info("turn %s: the assistant chose not to answer", turn.message.id)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

