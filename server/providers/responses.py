"""OpenAI Responses API + Conversations API: the Assistants API's successor, and the default.

The room's thread is a Conversation. Each turn is a streamed Response on that conversation
whose input is the user's message, its text starting with the speaker's name in brackets (the
model must tell several people apart). Function calls come back as `function_call` output
items; their outputs are the next Response's input, round after round, until the model answers
in text. A completed Response records its input and output in the conversation; when a turn
fails or is stopped, the provider records what the room keeps (the question, outputs owed to
pending calls, the partial answer) so the thread and the room's transcript stay the same.
Messages without a run are added as conversation items, 20 at a time (the API's limit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import openai

from ..messages import Message
from .base import AssistantProfile, RunEvent, RunRequest, TextDelta, ToolCall, ToolSpec
from .client import STREAM_ERRORS, OpenAISettings, check_reachable, make_client
from .errors import ProviderError, ProviderProtocolError, summary, translate
from .gate import ThreadGate

logger = logging.getLogger(__name__)

T = TypeVar("T")

# After a stopped or broken stream, the API may keep the conversation locked for a moment
# while it winds the old response down; the next request then gets `conversation_locked`.
LOCK_WAITS = (0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
ITEMS_PER_CREATE = 20  # "You may add up to 20 items at a time."


async def unlocked(call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`, waiting and retrying while the conversation is locked by a previous response."""
    for wait in LOCK_WAITS:
        try:
            return await call()
        except openai.BadRequestError as exc:
            if exc.code != "conversation_locked":
                raise
            logger.info("conversation still locked; retrying in %.1f s", wait)
            await asyncio.sleep(wait)
    return await call()


def attributed_text(message: Message) -> str:
    """How the model sees a user message: `[Alice] hello`."""
    return f"[{message.name}] {message.content}"


def _message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _outputs(calls: Sequence[ToolCall], output: str) -> list[dict[str, Any]]:
    return [_output(c.call_id, output) for c in calls]


def function_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs in the Responses API's flat `function` tool shape."""
    return [
        {"type": "function", "name": t.name, "description": t.description,
         "parameters": t.parameters, "strict": False}
        for t in tools
    ]


class ResponsesProvider:
    """Provider over `client.conversations` and `client.responses`."""

    def __init__(self, settings: OpenAISettings) -> None:
        self._settings = settings
        self._client = make_client(settings)
        self._gate = ThreadGate()

    async def open(self) -> AssistantProfile:
        await check_reachable(self._client, self._settings.model)
        return AssistantProfile(self._settings.assistant_name, self._settings.instructions)

    async def close(self) -> None:
        await self._client.close()

    async def create_thread(self) -> str:
        try:
            conversation = await self._client.conversations.create(
                metadata={"app": "roundtable"}
            )
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        return conversation.id

    async def delete_thread(self, thread_id: str) -> None:
        self._gate.forget(thread_id)
        try:
            await self._client.conversations.delete(thread_id)
        except openai.NotFoundError:
            logger.info("conversation %s was already gone", thread_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def append(self, thread_id: str, messages: Sequence[Message]) -> None:
        items = [_message("user", attributed_text(m)) for m in messages]
        async with self._gate.lock(thread_id):
            try:
                await self._add_items(thread_id, items)
            except openai.OpenAIError as exc:
                raise translate(exc) from exc

    async def _add_items(self, thread_id: str, items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), ITEMS_PER_CREATE):
            chunk = items[start:start + ITEMS_PER_CREATE]
            create = self._client.conversations.items.create
            await unlocked(partial(create, thread_id, items=chunk))  # type: ignore[arg-type]

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        # The user's message is the first response's `input` (the API requires one): the
        # conversation records a response's input and output only when it completes.
        pending: list[dict[str, Any]] = [_message("user", attributed_text(request.message))]
        partial: list[str] = []
        async with self._gate.lock(thread_id):
            try:
                while True:
                    calls: list[ToolCall] = []
                    partial = []
                    async for event in self._stream(thread_id, request, pending, calls):
                        partial.append(event.text)
                        yield event
                    pending, partial = [], []  # recorded by the completed response
                    if not calls:
                        return
                    pending = _outputs(calls, '{"error": "the answer was interrupted"}')
                    results = await request.call_tools(calls)
                    pending = [_output(r.call_id, r.output) for r in results]
            except BaseException:
                # An error or a stop: record what the room keeps (the question, outputs owed
                # to the model's calls, the partial answer), so thread and transcript agree.
                if partial:
                    pending.append(_message("assistant", "".join(partial)))
                await asyncio.shield(self._record(thread_id, pending))
                raise

    async def _record(self, thread_id: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        try:
            await self._add_items(thread_id, items)
        except openai.OpenAIError as exc:
            logger.warning("could not record the interrupted turn in %s: %s", thread_id,
                           summary(exc))
            logger.debug("provider detail: %s", exc)

    async def _stream(
        self,
        thread_id: str,
        request: RunRequest,
        input_items: list[dict[str, Any]],
        calls: list[ToolCall],
    ) -> AsyncIterator[RunEvent]:
        """One Response on `input`: yield text deltas, collect function calls into `calls`."""
        kwargs: dict[str, Any] = {
            "model": self._settings.model,
            "conversation": thread_id,
            "instructions": request.instructions,
            "input": input_items,
            "stream": True,
        }
        if request.tools:
            kwargs["tools"] = function_tools(request.tools)
        completed = streaming = False
        try:
            stream = await unlocked(lambda: self._client.responses.create(**kwargs))
            async with stream:
                async for event in stream:
                    streaming, kind = True, event.type
                    if kind == "response.output_text.delta":
                        yield TextDelta(event.delta)
                    elif kind == "response.output_item.done" and event.item.type == "function_call":
                        calls.append(ToolCall(event.item.call_id, event.item.name,
                                              event.item.arguments))
                    elif kind in ("response.completed", "response.incomplete"):
                        completed = True
                    elif kind == "response.failed":
                        error = event.response.error
                        raise ProviderError(error.message if error else "response failed")
                    elif kind == "error":
                        raise ProviderError(f"{event.code}: {event.message}")
        except openai.OpenAIError as exc:
            raise translate(exc, streaming) from exc
        except STREAM_ERRORS as exc:
            raise ProviderProtocolError(f"{type(exc).__name__}: {exc}") from exc
        if not completed:
            raise ProviderProtocolError("stream ended without response.completed")
