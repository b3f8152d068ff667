"""HTTP routes besides Socket.IO: health, the web client, and the original client's `/stream`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from .room import Room
from .roster import RoomError

logger = logging.getLogger(__name__)


class OriginPolicy:
    """Which browser origins may connect: the server's own, plus the configured list."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        self._any = "*" in extra
        self._extra = frozenset(extra)

    def allows(self, origin: str | None, host: str | None, scheme: str = "http") -> bool:
        """True for non-browser clients (no Origin), same-origin pages and listed origins."""
        if origin is None or self._any or origin in self._extra:
            return True
        return host is not None and origin == f"{scheme}://{host}"

    def __call__(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """The form python-engineio calls for `cors_allowed_origins`."""
        return self.allows(origin, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http"))

    def headers(self, request: web.Request) -> dict[str, str]:
        """CORS response headers for an allowed cross-origin request, else none."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(origin, request.host, request.scheme):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Accept",
            "Vary": "Origin",
        }


def _json_error(status: int, code: str, message: str, cors: dict[str, str]) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=cors)


class StreamRoute:
    """`POST /stream`: the original client's streaming toggle, through the same room.

    The body is the original client's message object; only `user_id` (which must belong to a
    person registered over Socket.IO), `content` and `id` are read. The message is shown to the
    others and queued like any other; the answer's text streams back as the plain-text response
    body and, as always, to every socket.
    """

    def __init__(self, room_of: Any, policy: OriginPolicy) -> None:
        self._room_of = room_of
        self._policy = policy

    async def preflight(self, request: web.Request) -> web.Response:
        cors = self._policy.headers(request)
        return web.Response(status=204 if cors else 403, headers=cors)

    async def post(self, request: web.Request) -> web.StreamResponse:
        cors = self._policy.headers(request)
        if request.headers.get("Origin") and not cors:
            return _json_error(403, "origin_not_allowed", "This origin may not post here.", cors)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("content"), str) \
                or not isinstance(body.get("user_id"), str):
            return _json_error(400, "invalid_payload", 'needs {"user_id", "content"}.', cors)
        room: Room = self._room_of()
        try:
            _, deltas = await room.post_as(body["user_id"], body["content"], body.get("id"))
        except RoomError as exc:
            status = 403 if exc.code == "not_registered" else 400
            return _json_error(status, exc.code, exc.message, cors)
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache",
                     "X-Accel-Buffering": "no", **cors}
        )
        await response.prepare(request)
        try:
            async for text in deltas:
                await response.write(text.encode("utf-8"))
        except ConnectionResetError:
            logger.info("stream client went away; the room still gets the answer")
            return response
        await response.write_eof()
        return response


def index_handler(dist: Path) -> Any:
    """`GET /`: the built web client, or a clear note that it is not built."""

    async def index(request: web.Request) -> web.StreamResponse:
        page = dist / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(
            status=503, text="The web client is not built yet: run `make client` (or `make run`).\n"
        )

    return index
