"""Wire helpers shared by the three APIs: ids, error bodies, SSE framing and stream pumping.

A model turn is an async generator of `Emit` items: `Event` (one SSE frame), `Pause` (sleep,
interruptible by client disconnect or server shutdown), `Cut` (drop the connection) and
`RawData` (a `data:` line written verbatim, used for malformed JSON). The same generator is either
pumped onto an SSE response (`pump`) or drained without a client (`drain`), so state changes
(conversation items, run status, ...) happen identically in both modes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

JSON = dict[str, Any]
_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24, *, hex_: bool = False) -> str:
    """An id in the real API's style: `run_` + 24 alphanumerics, or `resp_` + 48 hex digits."""
    if hex_:
        return prefix + secrets.token_hex(length // 2)
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def now() -> int:
    return int(time.time())


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def request_id_headers() -> dict[str, str]:
    return {"x-request-id": new_id("req_", 32, hex_=True), "openai-processing-ms": "7"}


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(obj),
        status=status,
        content_type="application/json",
        headers={**request_id_headers(), **(headers or {})},
    )


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSON:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(error_body(message, type_, param, code), status, headers)


@dataclass
class Event:
    """One SSE frame: `event: <event>` (omitted when None) then `data: <json or raw str>`."""

    event: str | None
    data: Any


@dataclass
class Pause:
    seconds: float


@dataclass
class Cut:
    clean: bool = False


@dataclass
class RawData:
    """A frame written verbatim (`data: <text>`, after `event: <event>` if given)."""

    text: str
    event: str | None = None


Emit = Event | Pause | Cut | RawData
Emits = AsyncGenerator[Emit, None]
Outcome = Literal["done", "gone", "cut", "malformed"]
Pauser = Callable[[float], Awaitable[None]]


def truncated_json(data: Any) -> str:
    """A JSON document cut off in the middle: what a `Malformed` fault puts on a data line."""
    text = dumps(data)
    return text[: max(len(text) - 12, 1)]


def frame(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}\n\n".encode()


class ClientGone(Exception):
    """The client closed the connection (or the server is shutting down)."""


class SSEStream:
    """One `text/event-stream` response that notices when the client goes away."""

    def __init__(self, request: web.Request, closing: asyncio.Event) -> None:
        self.request = request
        self.closing = closing
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **request_id_headers(),
            },
        )

    @property
    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing() or self.closing.is_set()

    async def open(self) -> None:
        await self.response.prepare(self.request)

    async def write(self, data: bytes) -> None:
        if self.gone:
            raise ClientGone
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise ClientGone from exc

    async def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.gone:
                raise ClientGone
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self.closing.wait(), min(remaining, 0.02))
            except TimeoutError:
                pass

    def cut(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.close()

    async def finish(self) -> None:
        if self.gone:
            return
        try:
            await self.response.write_eof()
        except ConnectionError:
            pass


async def pump(stream: SSEStream, emits: Emits) -> Outcome:
    """Write a turn onto an opened SSE stream. On "gone" the generator is left suspended so the
    caller may keep draining it (background work) or close it."""
    try:
        async for item in emits:
            if isinstance(item, Event):
                await stream.write(frame(item.event, item.data))
            elif isinstance(item, Pause):
                await stream.pause(item.seconds)
            elif isinstance(item, RawData):
                head = f"event: {item.event}\n" if item.event else ""
                await stream.write(f"{head}data: {item.text}\n\n".encode())
                await emits.aclose()
                await stream.finish()
                return "malformed"
            else:
                await emits.aclose()
                if item.clean:
                    await stream.finish()
                else:
                    stream.cut()
                return "cut"
    except ClientGone:
        if stream.closing.is_set():
            stream.cut()  # server shutting down: drop the connection like a dying upstream
        return "gone"
    await stream.finish()
    return "done"


async def drain(emits: Emits, pauser: Pauser) -> Outcome:
    """Run a turn with nobody reading the events (non-streamed request, background work).
    `pauser` sleeps and raises ClientGone to abandon the turn (the generator is closed)."""
    try:
        async for item in emits:
            if isinstance(item, Pause):
                await pauser(item.seconds)
            elif isinstance(item, RawData):
                await emits.aclose()
                return "malformed"
            elif isinstance(item, Cut):
                await emits.aclose()
                return "cut"
    except ClientGone:
        await emits.aclose()
        return "gone"
    return "done"


def background_pauser(closing: asyncio.Event) -> Pauser:
    """Pauses that only end early (ClientGone) when the server shuts down."""

    async def pause(seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(closing.wait(), seconds)
        except TimeoutError:
            return
        raise ClientGone

    return pause
