"""Socket.IO event handlers: validate payloads, bind identity to the socket, hand over to the
room the socket registered in (through the registry)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import socketio

from ..logs import log_ids
from ..metrics import Metrics
from ..rooms import OpenRoom, RoomError, RoomRegistry
from .emitter import SocketEmitter
from .engine import NAMESPACE
from .signin import ProxySignIn, SignInRefused, user_id_for

logger = logging.getLogger(__name__)


def _refuse(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


class RateLimiter:
    """At most `per_minute` events per connection in any 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        seen = self._seen.setdefault(key, deque())
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if len(seen) >= self._limit:
            return False
        seen.append(now)
        return True

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


def _token_of(auth: Any) -> str:
    if isinstance(auth, dict):
        token = auth.get("token", auth.get("password"))
        return token if isinstance(token, str) else ""
    return ""


class RoomAccess(Protocol):
    """The rooms, as the server's life allows (server/lifecycle.py's Service)."""

    registry: RoomRegistry | None

    def checks(self) -> dict[str, str]:
        """What the server depends on and how each is (for /readyz)."""
        ...

    async def elsewhere(self) -> dict[str, tuple[int, bool]]:
        """Rooms open on the cluster's other processes: people, and whether busy."""
        ...

    def accepting(self) -> RoomRegistry:
        """The registry for a new person or message; RoomError `unavailable` when the server
        cannot take them (provider not open, or shutting down)."""
        ...


Access = Callable[[], RoomAccess | None]


def accepting(access: Access) -> RoomRegistry:
    """The registry for new people and messages, or the `unavailable` refusal."""
    rooms = access()
    if rooms is None:
        raise RoomError("unavailable", "The server is starting; try again in a moment.")
    return rooms.accepting()


class RoomHandlers:
    """Socket.IO event handlers; `access()` gives the rooms as the server's life allows."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        access: Access,
        emitter: SocketEmitter,
        password: str = "",
        per_minute: int = 30,
        metrics: Metrics | None = None,
        signin: ProxySignIn | None = None,
    ) -> None:
        self._refused = (metrics or Metrics()).refused
        self._sio = sio
        self._access = access
        self._emitter = emitter
        self._password = password
        self._limiter = RateLimiter(per_minute)
        self._signin = signin if signin is not None and signin.enabled else None
        self._signed_in: dict[str, str] = {}  # sid -> the name the proxy signed in
        self._departures: asyncio.Queue[str] = asyncio.Queue()
        self._departing: asyncio.Task[None] | None = None

    def attach(self) -> None:
        """Register the handlers on the server."""
        self._sio.on("connect", self.connect)
        self._sio.on("disconnect", self.disconnect)
        self._sio.on("register", self.register)
        self._sio.on("message", self.message)
        self._sio.on("stop", self.stop)
        self._sio.on("room-settings", self.room_settings)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        with log_ids(connection=sid):
            self._admit(sid, environ, auth)

    def _admit(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        if self._password and not hmac.compare_digest(
            _token_of(auth).encode(errors="surrogatepass"), self._password.encode()
        ):
            logger.info("refused connection %s: wrong or missing server password", sid)
            self._refused.labels(code="unauthorized").inc()
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized: this server needs a password (Socket.IO auth {token})"
            )
        if self._signin is not None:
            try:
                self._signed_in[sid] = self._signin.name_of_environ(environ)
            except SignInRefused as exc:
                logger.info("refused connection %s: %s", sid, exc.reason)
                self._refused.labels(code="unauthorized").inc()
                raise socketio.exceptions.ConnectionRefusedError(exc.reason) from None

    async def disconnect(self, sid: str, *reason: Any) -> None:
        if self._sio.manager.is_connected(sid, NAMESPACE):
            return  # a client sent an event named "disconnect": not a real one
        with log_ids(connection=sid):
            logger.debug("connection %s closed", sid)
        self._limiter.forget(sid)
        self._emitter.forget(sid)
        self._signed_in.pop(sid, None)
        # engine.io may run this inline from a send to a socket whose ping expired, i.e. in the
        # middle of one of a room's emits: leave later, in order, never re-entering the room.
        self._departures.put_nowait(sid)
        if self._departing is None or self._departing.done():
            self._departing = asyncio.create_task(self._depart(), name="departures")

    async def _depart(self) -> None:
        while not self._departures.empty():
            sid = self._departures.get_nowait()
            rooms = self._access()
            if rooms is None or rooms.registry is None:
                continue
            with log_ids(connection=sid):
                try:
                    await rooms.registry.leave(sid)
                except Exception:
                    logger.exception("leaving %s failed", sid)

    async def close(self) -> None:
        """Finish the departures in progress (at shutdown)."""
        if self._departing is not None:
            await asyncio.wait({self._departing})

    async def register(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        with log_ids(connection=sid):
            return await self._register(sid, data, *extra)

    async def _register(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        signed_in = self._signed_in.get(sid)
        if extra or not isinstance(data, dict) or (
                signed_in is None and not isinstance(data.get("name"), str)):
            return await self._error(sid, "invalid_payload", 'register needs {"name": "..."}.')
        # Signed in by the proxy: that name, and one id per name (several tabs, one person).
        user_id, name = (data.get("user_id"), data["name"]) if signed_in is None else (
            user_id_for(signed_in), signed_in)
        try:
            welcome = await accepting(self._access).register(
                sid, user_id, name, data.get("room"), data.get("password")
            )
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)
        return {"ok": True, **welcome}

    async def message(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        with self._ids(sid):
            return await self._message(sid, data, *extra)

    async def _message(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        room = self._room(sid)
        if room is None:
            return await self._error(sid, "not_registered", "Register with a nickname first.")
        if extra or not isinstance(data, dict) or not isinstance(data.get("content"), str):
            return await self._error(sid, "invalid_payload", 'message needs {"content": "..."}.')
        if not self._limiter.allow(sid):
            return await self._error(sid, "rate_limited", "Too many messages; wait a moment.")
        try:
            accepting(self._access)
            return await room.post(sid, data["content"], data.get("id"))
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)

    async def stop(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        with self._ids(sid):
            return await self._stop(sid, *extra)

    async def _stop(self, sid: str, *extra: Any) -> dict[str, Any]:
        if extra:
            return await self._error(sid, "invalid_payload", "stop takes no arguments.")
        room = self._room(sid)
        if room is None:
            return await self._error(sid, "not_registered", "Register with a nickname first.")
        try:
            stopped = await room.stop(sid)
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)
        return {"ok": True, "stopped": stopped}

    async def room_settings(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        with self._ids(sid):
            return await self._room_settings(sid, data, *extra)

    async def _room_settings(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        room = self._room(sid)
        if room is None:
            return await self._error(sid, "not_registered", "Register with a nickname first.")
        if extra or not isinstance(data, dict) or "reply" not in data:
            return await self._error(
                sid, "invalid_payload", 'room-settings needs {"reply": "always|mention|auto"}.')
        try:
            return await room.set_reply(sid, data["reply"])
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)

    def _ids(self, sid: str) -> AbstractContextManager[None]:
        """Log lines while handling `sid`'s event carry its connection id and room."""
        room = self._room(sid)
        return log_ids(connection=sid, room=room.name if room is not None else None)

    def _room(self, sid: str) -> OpenRoom | None:
        rooms = self._access()
        registry = None if rooms is None else rooms.registry
        room = None if registry is None else registry.of(sid)
        return room if room is not None and room.is_registered(sid) else None

    async def _error(self, sid: str, code: str, message: str) -> dict[str, Any]:
        logger.info("refused %s: %s", sid, code)
        self._refused.labels(code=code).inc()
        await self._sio.emit("error", {"code": code, "message": message}, to=sid)
        return _refuse(code, message)
