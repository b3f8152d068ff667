"""LocalModelServer: the local model as an owned child, and what the Chat Completions
provider needs to talk to it."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import secrets
import socket
import sys
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import model_file
from .child import API_KEY_ENV
from .errors import LocalModelError
from .model_file import BUNDLED_DESCRIPTION, INSTALL_HINT
from .supervisor import StartError, Supervisor, Timing

if TYPE_CHECKING:
    from ..config import Settings
    from ..providers import OpenAISettings

logger = logging.getLogger(__name__)
child_logger = logging.getLogger(__name__.rsplit(".", 1)[0] + ".child")

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
RUNTIME_MODULE = "xllamacpp"
# Tokens the prompt needs beyond the history (system message, template framing).
PROMPT_OVERHEAD_TOKENS = 512


def runtime_missing() -> str | None:
    """What is missing to run the model server here, or None."""
    if importlib.util.find_spec(RUNTIME_MODULE) is None:
        return f"the local model server needs {RUNTIME_MODULE!r}: {INSTALL_HINT}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server on a loopback port, owned by this process.

    `async with LocalModelServer(...)` (or `start()` / `stop()`); `provider_settings()` points a
    Chat Completions provider at it; `description` and `bundled` say which model it serves."""

    def __init__(
        self,
        model_path: str | Path = "",
        *,
        context: int = 2048,
        max_tokens: int = 256,
        temperature: float = 0.2,
        repeat_penalty: float = 1.1,
        host: str = "127.0.0.1",
        port: int = 0,
        reason: str = "LLM_API=local",
        **timing: Any,
    ) -> None:
        self.model_setting = str(model_path)
        self.model_path: Path | None = None
        self.context = context
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self.host = host
        self.port = port
        self.reason = reason
        self.api_key = secrets.token_urlsafe(24)  # the same across restarts
        self.child = Supervisor(
            "local model server", self.command, lambda: f"http://{self.host}:{self.port}/health",
            env={API_KEY_ENV: self.api_key, "PYTHONPATH": str(PACKAGE_ROOT)},
            timing=Timing(**timing), output=child_logger,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> LocalModelServer:
        configured = bool(settings.openai_api_key or settings.openai_base_url)
        reason = "LLM_API=local" if configured else "no OPENAI_API_KEY / OPENAI_BASE_URL set"
        return cls(
            settings.local_model_path,
            context=settings.local_context,
            max_tokens=settings.local_max_tokens,
            temperature=settings.local_temperature,
            repeat_penalty=settings.local_repeat_penalty,
            stop_timeout=max(settings.shutdown_timeout, 1.0),
            reason=reason,
            **options,
        )

    # ----- what clients need -----
    @property
    def bundled(self) -> bool:
        """Whether this serves the bundled demo model (no LOCAL_MODEL_PATH)."""
        return not self.model_setting.strip()

    @property
    def model_name(self) -> str:
        """The name the child serves the model under (its file name)."""
        return self.model_path.name if self.model_path else "local"

    @property
    def description(self) -> str:
        """The model as people should see it named."""
        if self.bundled:
            return BUNDLED_DESCRIPTION
        return self.model_path.stem if self.model_path else "local model"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.child.pid

    @property
    def running(self) -> bool:
        return self.child.running

    @property
    def restarts(self) -> int:
        return self.child.restarts

    def history_budget(self) -> int:
        """Tokens of history that fit the context beside the answer and the prompt's framing."""
        return max(256, self.context - self.max_tokens - PROMPT_OVERHEAD_TOKENS)

    def provider_settings(self, base: OpenAISettings) -> OpenAISettings:
        """`base` pointed at this server, its history budget fitted into the context window."""
        return replace(base, api_key=self.api_key, base_url=self.base_url, model=self.model_name,
                       context_budget=min(base.context_budget, self.history_budget()))

    def command(self) -> list[str]:
        """The child's command line (the model must be resolved)."""
        assert self.model_path is not None
        return [
            sys.executable, "-m", "server.local.child",
            "--model", str(self.model_path), "--alias", self.model_name,
            "--host", self.host, "--port", str(self.port), "--context", str(self.context),
            "--max-tokens", str(self.max_tokens), "--temperature", str(self.temperature),
            "--repeat-penalty", str(self.repeat_penalty),
        ]

    # ----- life cycle -----
    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Resolve the model, start the child and wait until it answers; raise LocalModelError
        (after cleaning up) if it cannot start."""
        missing = runtime_missing()
        if missing:
            raise LocalModelError(missing)
        self.model_path = await asyncio.to_thread(model_file.resolve_model_path,
                                                  self.model_setting)
        shown = f"{BUNDLED_DESCRIPTION}, {self.model_path}" if self.bundled else self.model_path
        logger.info(
            "Using the local model %s (%s). To use OpenAI, set OPENAI_API_KEY in .env; for "
            "another server set OPENAI_BASE_URL (see README).", shown, self.reason,
        )
        if self.port == 0:
            self.port = free_port(self.host)
        logger.info("loading local model %s …", self.model_name)
        try:
            took = await self.child.start()
        except StartError as exc:
            raise LocalModelError(str(exc)) from exc
        logger.info("local model ready in %.1f s: %s at %s (pid %s)", took, self.model_name,
                    self.base_url, self.pid)

    async def stop(self) -> None:
        """Stop the child (SIGTERM to its group, SIGKILL after the stop timeout)."""
        await self.child.stop()
