"""Reading a room's thread as each provider's upstream (or the chat provider) holds it."""

from __future__ import annotations

from typing import Any

from server.app import PROVIDER_KEY
from server.providers.chat import ChatProvider
from tests.conftest import RunningServer
from tests.fake_upstream import FakeUpstream

LLM_APIS = ["responses", "assistants", "chat"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or ():
        if part.get("type") == "text":
            parts.append(part["text"]["value"] if isinstance(part["text"], dict) else part["text"])
        else:
            parts.append(part.get("text", ""))
    return "".join(parts)


def thread_texts(
    upstream: FakeUpstream, server: RunningServer, room: str | None = None
) -> list[str]:
    """The thread's user and assistant texts, oldest first, as the model sees them (of the
    default room, or of the open room named `room`)."""
    api = server.settings.llm_api
    found = server.room if room is None else server.rooms.get(room)
    assert found is not None, f"room {room!r} is not open"
    thread_id = found.thread_id
    assert thread_id is not None
    if api == "responses":
        items = upstream.conversations[thread_id]
        return [_text(i["content"]) for i in items if i.get("type") == "message"]
    if api == "assistants":
        return [_text(m["content"]) for m in upstream.threads[thread_id]]
    provider = server.app[PROVIDER_KEY]
    assert isinstance(provider, ChatProvider)
    return [m["content"] for m in provider.thread(thread_id)
            if m["role"] in ("user", "assistant") and m.get("content")]


def instructions_of(body: dict[str, Any]) -> str:
    """The per-run instructions in a model request of any of the three APIs."""
    if "messages" in body:
        system = body["messages"][0]
        assert system["role"] == "system"
        return str(system["content"])
    return str(body["instructions"])


def live_threads(upstream: FakeUpstream, api: str) -> dict[str, Any]:
    return upstream.conversations if api == "responses" else upstream.threads


def deleted_threads(upstream: FakeUpstream, api: str) -> list[str]:
    return upstream.deleted_conversations if api == "responses" else upstream.deleted_threads
