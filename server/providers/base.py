"""The provider interface: what the room needs from any LLM API, and nothing more.

A provider owns one kind of upstream thread (a Responses conversation, an Assistants thread, or
a transcript it keeps itself for Chat Completions). The room calls `create_thread` once, then
`run` once per turn; `run` adds the user's message to the thread, streams the answer as
`TextDelta` events, executes tool calls through `RunRequest.call_tools`, and returns when the
answer is complete. Cancelling the task that iterates `run` cancels the upstream run. Messages
the assistant does not answer enter the thread with `append`, so a later run has read them.
Thread state a provider keeps itself goes through a `store.ThreadStore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..messages import Message


@dataclass(frozen=True)
class AssistantProfile:
    """The assistant as the room presents it: its name and base instructions, and (when known)
    the model's name and whether it is the bundled demo model."""

    name: str
    instructions: str
    model: str = ""
    demo: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """A function tool offered to the model: name, description and JSON schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One function call requested by the model; `arguments` is the raw JSON text."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    """The output returned to the model for one call."""

    call_id: str
    output: str


CallTools = Callable[[Sequence[ToolCall]], Awaitable[list[ToolResult]]]


async def _no_tools(calls: Sequence[ToolCall]) -> list[ToolResult]:
    return [ToolResult(c.call_id, '{"error": "no tools are available"}') for c in calls]


@dataclass(frozen=True)
class RunRequest:
    """Everything one turn needs: the new user message, per-run instructions and tools."""

    message: Message
    instructions: str
    tools: Sequence[ToolSpec] = ()
    call_tools: CallTools = field(default=_no_tools)
    answer_id: str = ""  # the room's id for the answer, for providers that can label it
    answer_created_at: int = 0


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's answer, in order."""

    text: str


RunEvent = TextDelta


class Provider(Protocol):
    """One LLM API behind the room. Implementations live in `server/providers/<api>.py`."""

    async def open(self) -> AssistantProfile:
        """Connect and return the assistant's profile; called once at start-up."""
        ...

    async def close(self) -> None:
        """Release everything `open` acquired (e.g. delete an assistant it created)."""
        ...

    async def create_thread(self) -> str:
        """Create the room's one thread and return its id."""
        ...

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread (cancelling any run still active on it)."""
        ...

    async def append(self, thread_id: str, messages: Sequence[Message]) -> None:
        """Add user messages to the thread without a run, attributed like a run's message.

        A run in progress on the thread is waited for, so the messages enter the thread after
        its answer, in order; call it off any path that must not wait for an answer."""
        ...

    def run(self, thread_id: str, request: RunRequest) -> AsyncIterator[RunEvent]:
        """Add `request.message` to the thread and stream the answer."""
        ...


@runtime_checkable
class SupportsHistory(Protocol):
    """A provider whose thread can be read back (e.g. Assistants: all pages, oldest first)."""

    async def history(self, thread_id: str) -> list[Message]:
        """The thread's messages as the room shows them: raw text, live ids, oldest first."""
        ...


@runtime_checkable
class SupportsCancel(Protocol):
    """Providers whose API can cancel a run another process started (Assistants)."""

    async def cancel_active(self, thread_id: str) -> bool:
        """Cancel the run left open on the thread; False if there was none."""
        ...
