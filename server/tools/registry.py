"""The registry of enabled tools: executes the model's calls, turning every failure into an
error output for the model."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..providers.base import ToolCall, ToolResult, ToolSpec
from .schema import ArgumentError, RoomView, Tool, ToolError, check_arguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one call: `output` is what the model receives (JSON text)."""

    call_id: str
    name: str
    ok: bool
    output: str

    @property
    def result(self) -> ToolResult:
        return ToolResult(self.call_id, self.output)


class ToolRegistry:
    """The tools offered to the model, by name; executes the model's calls safely."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self._tools:
                raise ToolError(f"tool {t.name!r}: defined twice")
            self._tools[t.name] = t

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def names(self) -> list[str]:
        return list(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    async def execute(
        self,
        call: ToolCall,
        room: RoomView,
        timeout: float,  # noqa: ASYNC109 - a limit per call, applied here with asyncio.timeout
    ) -> ToolOutcome:
        """Run one call; every failure becomes an error output (only cancellation raises)."""
        found = self._tools.get(call.name)
        if found is None:
            available = ", ".join(self._tools) or "none"
            return _failed(call, f"unknown tool {call.name!r}; available: {available}")
        try:
            args = check_arguments(call.arguments, found.parameters)
        except ArgumentError as exc:
            return _failed(call, f"invalid arguments for tool {call.name!r}: {exc}")
        if found.needs_room:
            args["room"] = room
        started = time.monotonic()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await found.fn(**args)
        except TimeoutError as exc:
            if deadline.expired():
                return _failed(call, f"tool {call.name!r} timed out after {timeout:g} s")
            logger.exception("tool call %s (%s) raised", call.call_id, call.name)  # not ours
            return _failed(call, _raised(call.name, exc), logged=True)
        except Exception as exc:
            logger.exception("tool call %s (%s) raised", call.call_id, call.name)
            return _failed(call, _raised(call.name, exc), logged=True)
        elapsed = time.monotonic() - started
        logger.debug("tool call %s (%s) finished in %.2f s", call.call_id, call.name, elapsed)
        try:
            output = result if isinstance(result, str) else json.dumps(result, default=str)
        except (TypeError, ValueError) as exc:  # e.g. a circular structure
            return _failed(call, f"tool {call.name!r} returned a result that is not JSON: {exc}")
        return ToolOutcome(call.call_id, call.name, True, output)


def _raised(name: str, exc: BaseException) -> str:
    detail = f": {exc}" if str(exc) else ""
    return f"tool {name!r} failed: {type(exc).__name__}{detail}"


def _failed(call: ToolCall, error: str, logged: bool = False) -> ToolOutcome:
    if not logged:
        logger.warning("tool call %s (%s) failed: %s", call.call_id, call.name, error)
    return ToolOutcome(call.call_id, call.name, False, json.dumps({"error": error}))
