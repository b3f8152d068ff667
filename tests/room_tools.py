"""Operator tools used by the room's tool tests (loaded with TOOLS_MODULE=tests.room_tools)."""

from __future__ import annotations

import asyncio


async def explode(reason: str = "boom") -> str:
    """A tool that always raises, to show the room survives it."""
    raise RuntimeError(reason)


async def slow_tool(seconds: float = 5.0) -> str:
    """A tool that takes its time, to show the per-tool timeout."""
    await asyncio.sleep(seconds)
    return "done"
