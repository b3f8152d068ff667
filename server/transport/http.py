"""HTTP routes besides Socket.IO: health, the rooms list, the web client, and the original
client's `/stream`."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..rooms import RoomError, RoomRegistry, room_name
from .signin import ProxySignIn, SignInRefused, user_id_for

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

    The body is the original client's message object; only `room` (the default room when
    absent), `user_id` (which must belong to a person registered over Socket.IO in that room),
    `content` and `id` are read. The message is shown to the
    others and queued like any other; the answer's text streams back as the plain-text response
    body and, as always, to every socket.
    """

    def __init__(
        self, registry: Callable[[], RoomRegistry], policy: OriginPolicy,
        signin: ProxySignIn | None = None,
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._signin = signin if signin is not None and signin.enabled else None

    async def preflight(self, request: web.Request) -> web.Response:
        cors = self._policy.headers(request)
        return web.Response(status=204 if cors else 403, headers=cors)

    async def post(self, request: web.Request) -> web.StreamResponse:
        cors = self._policy.headers(request)
        if request.headers.get("Origin") and not cors:
            return _json_error(403, "origin_not_allowed", "This origin may not post here.", cors)
        signed_in = None
        if self._signin is not None:
            try:
                signed_in = self._signin.name_of_request(request)
            except SignInRefused as exc:
                return _json_error(exc.status, "unauthorized", exc.reason, cors)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and signed_in is not None:
            body["user_id"] = user_id_for(signed_in)  # posts as the signed-in person only
        if not isinstance(body, dict) or not isinstance(body.get("content"), str) \
                or not isinstance(body.get("user_id"), str):
            return _json_error(400, "invalid_payload", 'needs {"user_id", "content"}.', cors)
        registry = self._registry()
        try:
            raw = body.get("room")
            name = registry.policy.default_room if raw is None else room_name(raw)
            room = registry.get(name)
            if room is None:
                raise RoomError("not_registered", "This user_id is not in that room.")
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
    """`GET /` and `GET /r/<room>`: the built web client (which reads its room from the path),
    or a clear note that it is not built."""

    async def index(request: web.Request) -> web.StreamResponse:
        raw = request.match_info.get("room")
        if raw is not None:
            name = _canonical(raw)
            if name is not None and name != raw:  # /r/Design -> /r/design
                raise web.HTTPMovedPermanently(f"/r/{name}")
        page = dist / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(
            status=503, text="The web client is not built yet: run `make client` (or `make run`).\n"
        )

    return index


def _canonical(raw: str) -> str | None:
    """The room's name as its link spells it, or None when it is no room's name (the page then
    tells the person so)."""
    try:
        return room_name(raw)
    except RoomError:
        return None


def bearer_ok(request: web.Request, password: str) -> bool:
    """True when no password is set, or the request carries it as `Authorization: Bearer`."""
    if not password:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), password.encode()
    )


def rooms_handler(
    registry: Callable[[], RoomRegistry], password: str, signin: ProxySignIn | None = None
) -> Any:
    """`GET /api/rooms`: the listed rooms, open or configured, with how many people are in each
    (the server password as a bearer token when ROOM_PASSWORD is set; through the sign-in proxy
    when TRUSTED_USER_HEADER is)."""

    async def rooms(request: web.Request) -> web.Response:
        if signin is not None and signin.enabled:
            try:
                signin.name_of_request(request)
            except SignInRefused as exc:
                return _unauthorized(exc)
        if not bearer_ok(request, password):
            return web.json_response(
                {"code": "unauthorized", "message": "This server needs its password as "
                 "'Authorization: Bearer <password>'."},
                status=401, headers={"WWW-Authenticate": "Bearer"},
            )
        return web.json_response({"rooms": registry().listing()})

    return rooms


def _unauthorized(exc: SignInRefused) -> web.Response:
    return web.json_response({"code": "unauthorized", "message": exc.reason}, status=exc.status)


def session_handler(signin: ProxySignIn) -> Any:
    """`GET /api/session`: who the sign-in proxy says this is, `{"user": "alice"}`, or
    `{"user": null}` when the server has no sign-in (people choose a nickname)."""

    async def session(request: web.Request) -> web.Response:
        if not signin.enabled:
            return web.json_response({"user": None})
        try:
            return web.json_response({"user": signin.name_of_request(request)})
        except SignInRefused as exc:
            return _unauthorized(exc)

    return session
