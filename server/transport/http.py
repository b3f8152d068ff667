"""HTTP routes besides Socket.IO: health, the rooms list, the web client, and the original
client's `/stream`."""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..metrics import CONTENT_TYPE, Metrics
from ..rooms import RoomError, room_name
from .handlers import Access, accepting
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


def _json_error(
    status: int, code: str, message: str, cors: dict[str, str], metrics: Metrics | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if metrics is not None:
        metrics.refused.labels(code=code).inc()
    return web.json_response({"code": code, "message": message}, status=status,
                             headers={**cors, **(headers or {})})


class StreamRoute:
    """`POST /stream`: the original client's streaming toggle, through the same room.

    The body is the original client's message object; only `room` (the default room when
    absent), `user_id` (which must belong to a person registered over Socket.IO in that room),
    `content` and `id` are read. The message is shown to the
    others and queued like any other; the answer's text streams back as the plain-text response
    body and, as always, to every socket.
    """

    def __init__(
        self, access: Access, policy: OriginPolicy, metrics: Metrics,
        signin: ProxySignIn | None = None,
    ) -> None:
        self._access = access
        self._policy = policy
        self._metrics = metrics
        self._signin = signin if signin is not None and signin.enabled else None

    async def preflight(self, request: web.Request) -> web.Response:
        cors = self._policy.headers(request)
        return web.Response(status=204 if cors else 403, headers=cors)

    async def post(self, request: web.Request) -> web.StreamResponse:
        cors = self._policy.headers(request)
        if request.headers.get("Origin") and not cors:
            return _json_error(403, "origin_not_allowed", "This origin may not post here.", cors,
                               self._metrics)
        signed_in = None
        if self._signin is not None:
            try:
                signed_in = self._signin.name_of_request(request)
            except SignInRefused as exc:
                return _json_error(exc.status, "unauthorized", exc.reason, cors, self._metrics)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and signed_in is not None:
            body["user_id"] = user_id_for(signed_in)  # posts as the signed-in person only
        if not isinstance(body, dict) or not isinstance(body.get("content"), str) \
                or not isinstance(body.get("user_id"), str):
            return _json_error(400, "invalid_payload", 'needs {"user_id", "content"}.', cors,
                               self._metrics)
        try:
            registry = accepting(self._access)
            raw = body.get("room")
            name = registry.policy.default_room if raw is None else room_name(raw)
            room = registry.get(name)
            if room is None:
                raise RoomError("not_registered", "This user_id is not in that room.")
            _, deltas = await room.post_as(body["user_id"], body["content"], body.get("id"))
        except RoomError as exc:
            status = {"not_registered": 403, "unavailable": 503}.get(exc.code, 400)
            return _json_error(status, exc.code, exc.message, cors, self._metrics)
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


def _unauthorized(what: str, metrics: Metrics) -> web.Response:
    return _json_error(401, "unauthorized", f"{what} as 'Authorization: Bearer <token>'.", {},
                       metrics, {"WWW-Authenticate": "Bearer"})


def _not_signed_in(exc: SignInRefused, metrics: Metrics | None) -> web.Response:
    return _json_error(exc.status, "unauthorized", exc.reason, {}, metrics)


def rooms_handler(
    access: Access, password: str, metrics: Metrics, signin: ProxySignIn | None = None
) -> Any:
    """`GET /api/rooms`: the listed rooms, open or configured, with how many people are in each
    (the server password as a bearer token when ROOM_PASSWORD is set; through the sign-in proxy
    when TRUSTED_USER_HEADER is)."""

    async def rooms(request: web.Request) -> web.Response:
        if signin is not None and signin.enabled:
            try:
                signin.name_of_request(request)
            except SignInRefused as exc:
                return _not_signed_in(exc, metrics)
        if not bearer_ok(request, password):
            return _unauthorized("This server needs its password", metrics)
        found = access()
        registry = None if found is None else found.registry
        if found is None or registry is None:
            return web.json_response({"rooms": []})
        return web.json_response({"rooms": registry.listing(await found.elsewhere())})

    return rooms


def metrics_handler(metrics: Metrics, token: str) -> Any:
    """`GET /metrics`: Prometheus' text format (METRICS_TOKEN as a bearer token when set)."""

    async def scrape(request: web.Request) -> web.Response:
        if not bearer_ok(request, token):
            return _unauthorized("Metrics need METRICS_TOKEN", metrics)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return scrape


def health_handlers(access: Access, provider: str) -> tuple[Any, Any]:
    """`GET /healthz` (the process is alive, and what it holds) and `GET /readyz` (it can serve
    people now: 200, else 503 with the reason, so a load balancer sends them elsewhere)."""

    async def health(request: web.Request) -> web.Response:
        found = access()
        registry = None if found is None else found.registry
        rooms = [] if registry is None else registry.open_rooms()
        return web.json_response(
            {"status": "ok", "users": sum(room.headcount() for room in rooms),
             "busy": any(room.busy for room in rooms), "rooms": len(rooms), "provider": provider}
        )

    async def ready(request: web.Request) -> web.Response:
        found = access()
        checks = {} if found is None else found.checks()
        try:
            accepting(access)
        except RoomError as exc:
            return web.json_response({"status": "unavailable", "reason": exc.message, **checks},
                                     status=503)
        return web.json_response({"status": "ready", **checks})

    return health, ready


def session_handler(signin: ProxySignIn, metrics: Metrics) -> Any:
    """`GET /api/session`: who the sign-in proxy says this is, `{"user": "alice"}`, or
    `{"user": null}` when the server has no sign-in (people choose a nickname)."""

    async def session(request: web.Request) -> web.Response:
        if not signin.enabled:
            return web.json_response({"user": None})
        try:
            return web.json_response({"user": signin.name_of_request(request)})
        except SignInRefused as exc:
            return _not_signed_in(exc, metrics)

    return session
