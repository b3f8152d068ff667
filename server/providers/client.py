"""The one place that builds an `openai.AsyncOpenAI` client for any provider module."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from .errors import translate

# A key is required by the SDK even when an OpenAI-compatible server needs none; this
# placeholder is sent instead, so no real credential is ever invented or logged.
NO_KEY = "not-needed"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """HTTP transport errors that can escape the SDK while a stream is being read."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()

# Everything that can go wrong while reading a stream, beyond the SDK's own errors: a cut
# connection, or an event whose JSON does not parse.
STREAM_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, *TRANSPORT_ERRORS)


@dataclass(frozen=True)
class OpenAISettings:
    """What a provider needs from the settings (kept apart so providers never see the rest)."""

    api_key: str
    base_url: str
    model: str
    assistant_name: str
    instructions: str
    request_timeout: float = 60.0
    max_retries: int = 2
    assistant_id: str = ""
    context_budget: int = 16000
    on_retry: Callable[[], None] | None = None  # told of every request the SDK retries


def make_client(settings: OpenAISettings) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client for these settings; the SDK retries safe failures with backoff."""
    http_client = None
    on_retry = settings.on_retry
    if on_retry is not None:

        async def count_retries(request: Any) -> None:
            # the SDK numbers its attempts in this header: "0" first, then 1, 2, ...
            if request.headers.get("x-stainless-retry-count", "0") != "0":
                on_retry()

        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_retries]})
    return openai.AsyncOpenAI(
        api_key=settings.api_key or NO_KEY,
        base_url=settings.base_url or None,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
        http_client=http_client,
    )


async def check_reachable(client: openai.AsyncOpenAI, model: str) -> None:
    """Raise a ProviderError unless the server answers (a readiness check at open): an
    unreachable server or a refused key fail; a model the server does not list is fine."""
    try:
        await client.models.retrieve(model)
    except openai.NotFoundError:
        pass
    except openai.OpenAIError as exc:
        raise translate(exc, False) from exc
