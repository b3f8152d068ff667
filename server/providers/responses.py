"""OpenAI Responses API + Conversations API: the Assistants API's successor, and the default.

The room's thread is a Conversation. Each user message is added to it as an item whose text
starts with the speaker's name in brackets (the model must tell several people apart); each
turn is a streamed Response on that conversation. Function calls come back as `function_call`
output items; their outputs go into the next Response as `function_call_output` input items,
round after round, until the model answers in text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from ..messages import Message
from .base import AssistantProfile, RunEvent, RunRequest, TextDelta, ToolCall, ToolSpec
from .client import STREAM_ERRORS, OpenAISettings, make_client
from .errors import ProviderError, ProviderProtocolError, translate

logger = logging.getLogger(__name__)


def attributed_text(message: Message) -> str:
    """How the model sees a user message: `[Alice] hello`."""
    return f"[{message.name}] {message.content}"


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

    async def open(self) -> AssistantProfile:
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
        try:
            await self._client.conversations.delete(thread_id)
        except openai.NotFoundError:
            logger.info("conversation %s was already gone", thread_id)
        except openai.OpenAIError as exc:
            raise translate(exc) from exc

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": attributed_text(request.message)}],
        }
        try:
            await self._client.conversations.items.create(thread_id, items=[item])  # type: ignore[list-item]
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        pending: list[dict[str, Any]] = []
        while True:
            calls: list[ToolCall] = []
            async for event in self._stream(thread_id, request, pending, calls):
                yield event
            if not calls:
                return
            results = await request.call_tools(calls)
            pending = [
                {"type": "function_call_output", "call_id": r.call_id, "output": r.output}
                for r in results
            ]

    async def _stream(
        self,
        thread_id: str,
        request: RunRequest,
        tool_outputs: list[dict[str, Any]],
        calls: list[ToolCall],
    ) -> AsyncIterator[RunEvent]:
        """One Response: yield text deltas, collect function calls into `calls`."""
        kwargs: dict[str, Any] = {
            "model": self._settings.model,
            "conversation": thread_id,
            "instructions": request.instructions,
            "stream": True,
        }
        if tool_outputs:
            kwargs["input"] = tool_outputs
        if request.tools:
            kwargs["tools"] = function_tools(request.tools)
        completed = streaming = False
        try:
            stream = await self._client.responses.create(**kwargs)
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
