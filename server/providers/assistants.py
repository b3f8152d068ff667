"""Assistants API v2: the original app's API, for servers that still speak it.

As in the original: the assistant (`OPENAI_ASSISTANT_ID`) gives the room its name and base
instructions, or one is created from the settings and deleted at shutdown. The room's thread is
an Assistants thread; user messages carry `metadata {id, user_id, name}`; each turn is a streamed
run whose `requires_action` steps are answered with `submit_tool_outputs` (streamed) until the run
completes. A run that ends any other way is cancelled upstream, so the thread never stays locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from ..messages import Message
from .base import AssistantProfile, RunEvent, RunRequest, TextDelta, ToolCall, ToolSpec
from .client import STREAM_ERRORS, OpenAISettings, make_client
from .errors import ProviderError, ProviderProtocolError, translate
from .responses import attributed_text

logger = logging.getLogger(__name__)

# The SDK marks the whole Assistants API deprecated; choosing LLM_API=assistants is deliberate.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)

TERMINAL = {"completed", "cancelled", "failed", "expired", "incomplete"}
CANCEL_WAIT = 5.0
HISTORY_PAGE = 100


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

    def __init__(self, settings: OpenAISettings) -> None:
        self._settings = settings
        self._client = make_client(settings)
        self._assistant_id = settings.assistant_id
        self._created_assistant = False
        self._profile = AssistantProfile(settings.assistant_name, settings.instructions)
        self._active: dict[str, str] = {}  # thread id -> run id still open upstream

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
        run_id = self._active.pop(thread_id, None)
        if run_id is not None:
            await self._cancel(thread_id, run_id)
        try:
            await self._client.beta.threads.delete(thread_id)
        except openai.NotFoundError:
            logger.info("thread %s was already gone", thread_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        message = request.message
        metadata = {"id": message.id, "user_id": message.user_id or "", "name": message.name,
                    "created_at": str(message.created_at)}
        threads = self._client.beta.threads
        step = _Step()
        written: list[str] = []  # assistant messages this turn wrote to the thread
        try:
            await threads.messages.create(
                thread_id, role="user", content=attributed_text(message), metadata=metadata
            )
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
                stream = await threads.runs.submit_tool_outputs(
                    step.run_id or "", thread_id=thread_id, stream=True,
                    tool_outputs=[{"tool_call_id": r.call_id, "output": r.output} for r in results],
                )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        finally:
            run_id = self._active.pop(thread_id, None)
            if run_id is not None:  # ended early (error, cancel): never leave the thread locked
                await asyncio.shield(self._cancel(thread_id, run_id))
            if step.status != "completed":  # the partial answer replays as incomplete
                await asyncio.shield(self._label(thread_id, written, request, incomplete=True))
        if step.status != "completed":
            raise ProviderError(f"run ended with status {step.status}")
        await self._label(thread_id, written, request)

    async def _read(self, stream: Any, thread_id: str, step: _Step) -> AsyncIterator[RunEvent]:
        """Yield text from one streamed segment; record how it ended in `step`."""
        try:
            async with stream:
                async for event in stream:
                    kind, data = event.event, event.data
                    step.streaming = True
                    if kind == "thread.run.created":
                        self._active[thread_id] = data.id
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
                        self._active.pop(thread_id, None)
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
                logger.warning("could not label message %s: %s", message_id, exc)

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
        return _merge_turns(out)

    def _to_message(self, item: Any) -> Message:
        meta = item.metadata or {}
        text = "".join(p.text.value for p in item.content if p.type == "text")
        created = int(meta.get("created_at") or item.created_at * 1000)
        if item.role == "user":
            name = meta.get("name", "")
            prefix = f"[{name}] "
            content = text[len(prefix):] if text.startswith(prefix) else text
            return Message(meta.get("id", item.id), meta.get("user_id") or None, name, "user",
                           content, created)
        incomplete = meta.get("incomplete") == "true" or item.status == "incomplete"
        return Message(meta.get("id", item.id), None, self._profile.name, "assistant", text,
                       created, incomplete=incomplete, reply_to=meta.get("reply_to"))


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
