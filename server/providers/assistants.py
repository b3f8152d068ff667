"""Assistants API v2: the original app's API, for servers that still speak it.

As in the original: the assistant (`OPENAI_ASSISTANT_ID`) gives the room its name and base
instructions, or one is created from the settings and deleted at shutdown. The room's thread is
an Assistants thread; user messages carry `metadata {id, user_id, name}`; each turn is a streamed
run whose `requires_action` steps are answered with `submit_tool_outputs` (streamed) until the run
completes. A run that ends any other way is cancelled upstream, so the thread never stays locked.

`append` adds user messages without a run. The API refuses a message while a run is active
(HTTP 400), so it waits for this process's run on the thread to end (the messages then follow
its answer), and while the API still refuses (a run started elsewhere, or one winding down after
a cancel) it retries for up to `ADD_WAIT` seconds. The run still open on each thread is kept in
a `ThreadStore`, so with a shared store any process can find and cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

from ..messages import Message
from .base import AssistantProfile, RunEvent, RunRequest, TextDelta, ToolCall, ToolSpec
from .client import STREAM_ERRORS, OpenAISettings, make_client
from .errors import ProviderError, ProviderProtocolError, summary, translate
from .gate import ThreadGate
from .responses import attributed_text
from .store import InMemoryThreadStore, ThreadStore

logger = logging.getLogger(__name__)

# The SDK marks the whole Assistants API deprecated; choosing LLM_API=assistants is deliberate.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)

TERMINAL = {"completed", "cancelled", "failed", "expired", "incomplete"}
CANCEL_WAIT = 5.0
HISTORY_PAGE = 100
ADD_WAIT = 120.0  # seconds `append` waits for a run it did not start to end
ACTIVE_RUN = "active_run"  # the store key of the run still open on a thread
ATTRIBUTION = re.compile(r"\[([^\]\n]{1,100})\] ")  # "[Alice] " at the start of a user message


def chat_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs in the nested `{"type": "function", "function": {...}}` shape."""
    return [
        {"type": "function",
         "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


class _Step:
    """What one streamed segment of a run ended with; message ids go to `written`."""

    def __init__(self, written: list[str] | None = None) -> None:
        self.run_id: str | None = None
        self.status: str | None = None
        self.calls: list[ToolCall] = []
        self.message_ids: list[str] = [] if written is None else written
        self.streaming = False


class AssistantsProvider:
    """Provider over `client.beta.assistants` / `threads` / `runs`."""

    def __init__(self, settings: OpenAISettings, store: ThreadStore | None = None) -> None:
        self._settings = settings
        self._client = make_client(settings)
        self._assistant_id = settings.assistant_id
        self._created_assistant = False
        self._profile = AssistantProfile(settings.assistant_name, settings.instructions)
        self._store: ThreadStore = store if store is not None else InMemoryThreadStore()
        self._gate = ThreadGate()

    async def open(self) -> AssistantProfile:
        beta = self._client.beta
        try:
            if self._assistant_id:
                found = await beta.assistants.retrieve(self._assistant_id)
                self._profile = AssistantProfile(
                    found.name or self._settings.assistant_name, found.instructions or ""
                )
            else:
                created = await beta.assistants.create(
                    model=self._settings.model,
                    name=self._settings.assistant_name,
                    instructions=self._settings.instructions,
                )
                self._assistant_id, self._created_assistant = created.id, True
                logger.info("created assistant %s", created.id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return self._profile

    async def close(self) -> None:
        if self._created_assistant:
            try:
                await self._client.beta.assistants.delete(self._assistant_id)
                logger.info("deleted assistant %s", self._assistant_id)
            except openai.OpenAIError:
                logger.exception("could not delete assistant %s", self._assistant_id)
        await self._client.close()

    async def create_thread(self) -> str:
        try:
            thread = await self._client.beta.threads.create(metadata={"app": "roundtable"})
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return thread.id

    async def delete_thread(self, thread_id: str) -> None:
        run_id = await self._pop_active(thread_id)
        if run_id is not None:
            await self._cancel(thread_id, run_id)
        self._gate.forget(thread_id)
        await self._store.delete(thread_id)
        try:
            await self._client.beta.threads.delete(thread_id)
        except openai.NotFoundError:
            logger.info("thread %s was already gone", thread_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def cancel_active(self, thread_id: str) -> bool:
        """Cancel the run left open on the thread (by a process that stopped mid-answer);
        False if there was none."""
        run_id = await self._pop_active(thread_id)
        if run_id is None:
            return False
        await self._cancel(thread_id, run_id)
        logger.info("cancelled run %s left open on thread %s", run_id, thread_id)
        return True

    async def append(self, thread_id: str, messages: Sequence[Message]) -> None:
        async with self._gate.lock(thread_id):
            for message in messages:
                try:
                    await self._add_when_idle(thread_id, message)
                except openai.OpenAIError as exc:
                    raise translate(exc) from exc

    async def _add_when_idle(self, thread_id: str, message: Message) -> None:
        """Add a user message, retrying while the API refuses it because a run is active."""
        loop = asyncio.get_running_loop()
        deadline, wait = loop.time() + ADD_WAIT, 0.1
        while True:
            try:
                await self._add(thread_id, message)
                return
            except openai.BadRequestError as exc:
                if "while a run" not in str(exc) or loop.time() + wait > deadline:
                    raise
            logger.info("thread %s has an active run; adding the message in %.1f s",
                        thread_id, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)

    async def _add(self, thread_id: str, message: Message) -> None:
        """Add a user message attributed to its speaker, with our ids in its metadata."""
        metadata = {"id": message.id, "user_id": message.user_id or "", "name": message.name,
                    "created_at": str(message.created_at)}
        await self._client.beta.threads.messages.create(
            thread_id, role="user", content=attributed_text(message), metadata=metadata
        )

    async def _pop_active(self, thread_id: str) -> str | None:
        """The run still open on the thread, if any, forgotten as it is returned."""
        run_id = await self._store.get(thread_id, ACTIVE_RUN)
        await self._store.delete(thread_id, ACTIVE_RUN)
        return run_id if isinstance(run_id, str) else None

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        async with self._gate.lock(thread_id):  # appends wait for the answer
            threads = self._client.beta.threads
            step = _Step()
            written: list[str] = []  # assistant messages this turn wrote to the thread
            try:
                await self._add(thread_id, request.message)
                kwargs: dict[str, Any] = {"assistant_id": self._assistant_id,
                                          "instructions": request.instructions, "stream": True}
                if request.tools:
                    kwargs["tools"] = chat_tools(request.tools)
                stream = await threads.runs.create(thread_id, **kwargs)
                while True:
                    step = _Step(written)
                    async for event in self._read(stream, thread_id, step):
                        yield event
                    if step.status != "requires_action":
                        break
                    results = await request.call_tools(step.calls)
                    outputs: list[ToolOutput] = [
                        {"tool_call_id": r.call_id, "output": r.output} for r in results
                    ]
                    stream = await threads.runs.submit_tool_outputs(
                        step.run_id or "", thread_id=thread_id, stream=True, tool_outputs=outputs
                    )
            except openai.OpenAIError as exc:
                raise translate(exc) from exc
            finally:
                await asyncio.shield(self._wind_down(thread_id, request, step, written))
            if step.status != "completed":
                raise ProviderError(f"run ended with status {step.status}")
            await self._label(thread_id, written, request)

    async def _wind_down(
        self, thread_id: str, request: RunRequest, step: _Step, written: list[str]
    ) -> None:
        """After a run: cancel it if it ended early, so the thread never stays locked, and mark
        a partial answer incomplete, so it replays as one."""
        run_id = await self._pop_active(thread_id)
        if run_id is not None:
            await self._cancel(thread_id, run_id)
        if step.status != "completed":
            await self._label(thread_id, written, request, incomplete=True)

    async def _read(self, stream: Any, thread_id: str, step: _Step) -> AsyncIterator[RunEvent]:
        """Yield text from one streamed segment; record how it ended in `step`."""
        try:
            async with stream:
                async for event in stream:
                    kind, data = event.event, event.data
                    step.streaming = True
                    if kind == "thread.run.created":
                        await self._store.set(thread_id, ACTIVE_RUN, data.id)
                    if kind == "thread.message.delta":
                        for part in data.delta.content or ():
                            if part.type == "text" and part.text and part.text.value:
                                yield TextDelta(part.text.value)
                    elif kind == "thread.message.created":
                        step.message_ids.append(data.id)
                    elif kind == "thread.run.requires_action":
                        step.run_id, step.status = data.id, "requires_action"
                        step.calls = [
                            ToolCall(c.id, c.function.name, c.function.arguments)
                            for c in data.required_action.submit_tool_outputs.tool_calls
                        ]
                    elif kind.startswith("thread.run.") and not kind.startswith(
                        "thread.run.step."
                    ) and data.status in TERMINAL:
                        step.run_id, step.status = data.id, data.status
                        await self._store.delete(thread_id, ACTIVE_RUN)
                        if data.status == "failed" and data.last_error:
                            raise ProviderError(data.last_error.message)
                    elif kind == "error":
                        raise ProviderError(getattr(data, "message", "stream error"))
        except openai.OpenAIError as exc:
            raise translate(exc, step.streaming) from exc
        except STREAM_ERRORS as exc:
            raise ProviderProtocolError(f"{type(exc).__name__}: {exc}") from exc
        if step.status is None:
            raise ProviderProtocolError("run stream ended without a final status")

    async def _cancel(self, thread_id: str, run_id: str) -> None:
        """Cancel a run and wait (bounded) until the API no longer counts it as active."""
        runs = self._client.beta.threads.runs
        with contextlib.suppress(openai.OpenAIError):
            await runs.cancel(run_id, thread_id=thread_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_WAIT
        while loop.time() < deadline:
            try:
                run = await runs.retrieve(run_id, thread_id=thread_id)
            except openai.OpenAIError:
                return
            if run.status in TERMINAL:
                logger.info("run %s is %s", run_id, run.status)
                return
            await asyncio.sleep(0.1)
        logger.warning("run %s still not cancelled after %ss", run_id, CANCEL_WAIT)

    async def _label(
        self, thread_id: str, message_ids: list[str], request: RunRequest, incomplete: bool = False
    ) -> None:
        """Tag the run's messages with the room's answer id, so replay keeps the live id."""
        metadata = {"id": request.answer_id, "created_at": str(request.answer_created_at),
                    "reply_to": request.message.id}
        if incomplete:
            metadata["incomplete"] = "true"
        for message_id in message_ids:
            try:
                await self._client.beta.threads.messages.update(
                    message_id, thread_id=thread_id, metadata=metadata
                )
            except openai.OpenAIError as exc:
                logger.warning("could not label message %s: %s", message_id, summary(exc))
                logger.debug("provider detail: %s", exc)

    async def history(self, thread_id: str) -> list[Message]:
        """The thread's messages, all pages, oldest first, as the room shows them."""
        out: list[Message] = []
        try:
            pages = self._client.beta.threads.messages.list(
                thread_id, order="asc", limit=HISTORY_PAGE
            )
            async for item in pages:
                out.append(self._to_message(item))
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return _merge_turns(_ascending(out))

    def _to_message(self, item: Any) -> Message:
        """One thread message as the room shows it: our ids and times from its metadata when
        the server kept them, else the thread's own (second-precision) time and ids."""
        meta = item.metadata or {}
        text = "".join(p.text.value for p in item.content if p.type == "text")
        created = int(meta.get("created_at") or item.created_at * 1000)
        if item.role == "user":
            said = ATTRIBUTION.match(text)
            name = meta.get("name") or (said.group(1) if said else "")
            prefix = f"[{name}] "
            content = text[len(prefix):] if text.startswith(prefix) else text
            return Message(meta.get("id", item.id), meta.get("user_id") or None, name, "user",
                           content, created)
        incomplete = meta.get("incomplete") == "true" or item.status == "incomplete"
        # Unlabelled, the messages of one turn (around tool calls) share their run's id.
        answer_id = meta.get("id") or item.run_id or item.id
        return Message(answer_id, None, self._profile.name, "assistant", text,
                       created, incomplete=incomplete, reply_to=meta.get("reply_to"))


def _ascending(messages: list[Message]) -> list[Message]:
    """Thread order, with `created_at` never going back. Our metadata times are milliseconds,
    the thread's own are whole seconds: where the server did not keep our metadata (or refused
    the labels of answers), an answer would otherwise look older than its question."""
    latest = 0
    for message in messages:
        latest = message.created_at = max(latest, message.created_at)
    return messages


def _merge_turns(messages: list[Message]) -> list[Message]:
    """One turn may write several assistant messages (around tool calls): join them."""
    merged: list[Message] = []
    for message in messages:
        last = merged[-1] if merged else None
        if last is not None and last.role == "assistant" == message.role and last.id == message.id:
            last.content += message.content
        else:
            merged.append(message)
    return merged
