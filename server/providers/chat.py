"""Chat Completions: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LiteLLM, OpenAI).

The server keeps the thread itself: a list of chat messages per thread id in a `ThreadStore`
(in memory unless one is given), each user message prefixed with its speaker's name; `append`
adds messages that get no answer. The per-run instructions go in the system message. Streamed
`tool_calls` are assembled by index (several in parallel, several rounds) and answered with
`tool` messages until the model finishes with `stop`. A thread that outgrows the budget is
trimmed oldest-first before it is sent, never sent whole for the server to refuse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from ..messages import Message, new_id
from .assistants import chat_tools
from .base import AssistantProfile, RunEvent, RunRequest, TextDelta, ToolCall
from .client import STREAM_ERRORS, OpenAISettings, check_reachable, make_client
from .errors import ProviderError, ProviderProtocolError, translate
from .gate import ThreadGate
from .responses import attributed_text
from .store import InMemoryThreadStore, ThreadStore

logger = logging.getLogger(__name__)

ChatMessage = dict[str, Any]
MESSAGES = "messages"  # the store key of a thread's chat messages


def estimate_tokens(message: ChatMessage) -> int:
    """A cheap, conservative token estimate (~4 characters a token, plus framing)."""
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return size // 4 + 8


def trim(thread: list[ChatMessage], budget: int) -> list[ChatMessage]:
    """The newest messages that fit `budget`, starting at a user message (tool pairs kept)."""
    kept: list[ChatMessage] = []
    total = 0
    for message in reversed(thread):
        total += estimate_tokens(message)
        if total > budget and kept:
            break
        kept.append(message)
    kept.reverse()
    while len(kept) > 1 and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


class _Assembler:
    """Collects one streamed completion: text, tool calls by index, finish reason."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.recorded = False

    def add_calls(self, deltas: Any) -> None:
        for delta in deltas:
            slot = self.calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                slot["id"] = delta.id
            if delta.function is not None:
                slot["name"] += delta.function.name or ""
                slot["arguments"] += delta.function.arguments or ""

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"])
                for i, c in sorted(self.calls.items())]

    def as_message(self) -> ChatMessage:
        self.recorded = True
        message: ChatMessage = {"role": "assistant", "content": self.text or None}
        if self.calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls()
            ]
        return message


class ChatProvider:
    """Provider over `client.chat.completions`, keeping each thread's messages in a store."""

    def __init__(self, settings: OpenAISettings, store: ThreadStore | None = None) -> None:
        self._settings = settings
        self._client = make_client(settings)
        self._store: ThreadStore = store if store is not None else InMemoryThreadStore()
        self._gate = ThreadGate()

    async def open(self) -> AssistantProfile:
        await check_reachable(self._client, self._settings.model)
        return AssistantProfile(self._settings.assistant_name, self._settings.instructions)

    async def close(self) -> None:
        await self._client.close()

    async def create_thread(self) -> str:
        # Random, not counted: several processes may share one store.
        thread_id = new_id("chat_thread")
        await self._store.set(thread_id, MESSAGES, [])
        return thread_id

    async def delete_thread(self, thread_id: str) -> None:
        self._gate.forget(thread_id)
        await self._store.delete(thread_id)

    def thread(self, thread_id: str) -> list[ChatMessage]:
        """The messages kept for a thread (a copy), when this process's memory keeps them."""
        if not isinstance(self._store, InMemoryThreadStore):
            raise TypeError("thread() reads an in-memory store; read the ThreadStore instead")
        return list(self._store.peek(thread_id, MESSAGES) or [])

    async def _messages(self, thread_id: str) -> list[ChatMessage]:
        return list(await self._store.get(thread_id, MESSAGES) or [])

    async def append(self, thread_id: str, messages: Sequence[Message]) -> None:
        said = [{"role": "user", "content": attributed_text(m)} for m in messages]
        async with self._gate.lock(thread_id):
            await self._store.append(thread_id, MESSAGES, said)

    async def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        async with self._gate.lock(thread_id):
            question = {"role": "user", "content": attributed_text(request.message)}
            await self._store.append(thread_id, MESSAGES, [question])
            thread = await self._messages(thread_id)
            turn: list[ChatMessage] = []
            part = _Assembler()
            try:
                while True:
                    part = _Assembler()
                    async for event in self._stream(thread + turn, request, part):
                        yield event
                    turn.append(part.as_message())
                    if part.finish != "tool_calls" or not part.calls:
                        return
                    for result in await request.call_tools(part.tool_calls()):
                        turn.append({"role": "tool", "tool_call_id": result.call_id,
                                     "content": result.output})
            finally:
                await asyncio.shield(self._store.append(thread_id, MESSAGES, _kept(turn, part)))

    async def _stream(
        self, messages: list[ChatMessage], request: RunRequest, part: _Assembler
    ) -> AsyncIterator[RunEvent]:
        system = {"role": "system", "content": request.instructions}
        kwargs: dict[str, Any] = {
            "model": self._settings.model,
            # The SDK walks every message of a typed `messages` argument before each request
            # (about 0.3 ms a message, so time to first token grew with the room's history);
            # our messages are plain JSON already, so they go in the body as they are.
            "messages": [],
            "extra_body": {"messages": [system, *trim(messages, self._settings.context_budget)]},
            "stream": True,
        }
        if request.tools:
            kwargs["tools"] = chat_tools(request.tools)
        streaming = False
        try:
            stream = await self._client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    streaming = True
                    for choice in chunk.choices[:1]:
                        if choice.delta.content:
                            part.text += choice.delta.content
                            yield TextDelta(choice.delta.content)
                        if choice.delta.tool_calls:
                            part.add_calls(choice.delta.tool_calls)
                        if choice.finish_reason:
                            part.finish = choice.finish_reason
        except openai.OpenAIError as exc:
            raise translate(exc, streaming) from exc
        except STREAM_ERRORS as exc:
            raise ProviderProtocolError(f"{type(exc).__name__}: {exc}") from exc
        if part.finish is None:
            raise ProviderProtocolError("stream ended without a finish_reason")
        if part.finish not in ("stop", "tool_calls", "length"):
            raise ProviderError(f"completion finished with {part.finish!r}")


def _kept(turn: list[ChatMessage], last: _Assembler) -> list[ChatMessage]:
    """What the thread keeps of a turn: its messages, plus text that was cut short."""
    kept = list(turn)
    if not last.recorded and last.text:
        kept.append({"role": "assistant", "content": last.text})
    # A tool call without its results would make the next request invalid: drop it.
    while kept and kept[-1].get("tool_calls"):
        kept.pop()
    return kept
