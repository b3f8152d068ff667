"""LLM provider modules, one per API, all behind `base.Provider`."""

from __future__ import annotations

from .base import Provider
from .client import OpenAISettings
from .store import ThreadStore

__all__ = ["API_NAMES", "OpenAISettings", "Provider", "create_provider"]

API_NAMES = ("responses", "assistants", "chat")


def create_provider(
    api: str, settings: OpenAISettings, store: ThreadStore | None = None
) -> Provider:
    """The provider for `LLM_API` (imported lazily so each module's deps stay optional);
    `store` keeps the thread state the API does not (Redis in a cluster)."""
    if api == "responses":
        from .responses import ResponsesProvider

        return ResponsesProvider(settings)
    if api == "assistants":
        from .assistants import AssistantsProvider

        return AssistantsProvider(settings, store)
    if api == "chat":
        from .chat import ChatProvider

        return ChatProvider(settings, store)
    raise ValueError(f"unknown LLM_API {api!r}; expected one of {', '.join(API_NAMES)}")
