"""Socket.IO transport: validate payloads, bind identity to the socket, hand over to the room."""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import engineio.exceptions
import engineio.packet
import socketio
import socketio.packet
from aiohttp import WSMsgType, web
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

from .batching import HeldEvent
from .room import Room
from .roster import RoomError

logger = logging.getLogger(__name__)

NAMESPACE = "/"


# A direct-written websocket whose client reads this far behind is dropped (it reconnects and
# gets the room's state again) instead of buffering without bound.
SLOW_CLIENT_BYTES = 4 * 1024 * 1024


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """One final, unmasked, uncompressed text (or binary) frame, server to client (RFC 6455)."""
    first = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", first, size) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


class SocketEmitter:
    """The room's Emitter over python-socketio.

    Each event is encoded once, and for websocket connections framed once, then handed to every
    recipient in one pass with no task per recipient and no yield to the event loop in between,
    so every connection sees events in exactly the order the room emitted them.

    Connections that were websockets from the start get the frame written straight to their
    transport (all of the room's events to them go this way, so their order holds); others
    (long-polling, or upgraded from it) go through engine.io's per-socket queue. Measured in
    docs/performance.md: the queue and its writer task were half of the server's time.
    """

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio
        self._routes: dict[str, tuple[str, Any]] = {}  # sid -> (engine.io sid, its socket)
        self._direct: dict[str, asyncio.Transport] = {}  # sid -> its open websocket's transport

    def forget(self, sid: str) -> None:
        """The connection is gone (called on disconnect)."""
        self._routes.pop(sid, None)
        self._direct.pop(sid, None)

    async def emit(self, event: str, data: Any, to: Collection[str]) -> None:
        direct, packets = self._encode(event, data)
        if direct is not None:
            to = self._write_all(direct, to)
        await self._deliver((sid, direct, packets) for sid in to)

    def _write_all(self, frame: bytes, to: Iterable[str]) -> list[str]:
        """The fan-out's hot loop: write `frame` to every recipient whose websocket is open and
        keeping up; return the others, for `_deliver`. One lookup and three transport calls per
        recipient (docs/performance.md, "What changed in the fourth session")."""
        transports, rest = self._direct, []
        for sid in to:
            transport = transports.get(sid)
            if (
                transport is None
                or transport.is_closing()
                or transport.get_write_buffer_size() > SLOW_CLIENT_BYTES
            ):
                rest.append(sid)
            else:
                transport.write(frame)
        return rest

    async def emit_many(self, events: Sequence[HeldEvent]) -> None:
        """Several events in order; a direct websocket gets all of its frames in one write.

        Recipients that get the same events share one joined frame (in a presence batch that
        is nearly everyone), so the cost per recipient stays one lookup and one write."""
        encoded = [self._encode(event, data) for event, data, _ in events]
        audiences = [set(to) for _, _, to in events]
        everyone = dict.fromkeys(sid for _, _, to in events for sid in to)
        bundles: dict[tuple[int, ...], tuple[bytes | None, list[engineio.packet.Packet]]] = {}

        def bundle(sid: str) -> tuple[bytes | None, list[engineio.packet.Packet]]:
            mine = tuple(i for i, audience in enumerate(audiences) if sid in audience)
            if mine not in bundles:
                frames = [encoded[i][0] for i in mine]
                packets = [packet for i in mine for packet in encoded[i][1]]
                bundles[mine] = (_joined(frames), packets)
            return bundles[mine]

        await self._deliver((sid, *bundle(sid)) for sid in everyone)

    def _encode(self, event: str, data: Any) -> tuple[bytes | None, list[engineio.packet.Packet]]:
        """The event as engine.io packets (the queue path) and, when it is a single text
        packet, as one ready websocket frame (the direct path)."""
        args = [event] if data is None else [event, data]
        pkt = self._sio.packet_class(socketio.packet.EVENT, namespace=NAMESPACE, data=args)
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        queued = [engineio.packet.Packet(engineio.packet.MESSAGE, data=p) for p in parts]
        direct = None if len(parts) > 1 else ws_frame(("4" + parts[0]).encode())
        return direct, queued

    async def _deliver(
        self, deliveries: Iterable[tuple[str, bytes | None, list[engineio.packet.Packet]]]
    ) -> None:
        """Hand each recipient its frame, or its packets if it is not a direct websocket."""
        manager, eio, routes = self._sio.manager, self._sio.eio, self._routes
        now = time.time()
        for sid, direct, queued in deliveries:
            route = routes.get(sid)
            if route is None:  # first event to this connection: look it up once
                eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
                if eio_sid is None or eio_sid not in eio.sockets:
                    continue
                route = (eio_sid, eio.sockets[eio_sid])
                if manager.is_connected(sid, NAMESPACE):  # not going: forget() will come
                    routes[sid] = route
                    transport = getattr(route[1], "roundtable_transport", None)
                    if transport is not None:  # from now on written by _write_all
                        self._direct[sid] = transport
            if direct is not None and _write_direct(route[1], direct, now):
                continue
            for frame in queued:
                await eio.send_packet(route[0], frame)


def _joined(frames: list[bytes | None]) -> bytes | None:
    """Frames concatenated for one write, or None if any of them cannot go direct."""
    ready = [frame for frame in frames if frame is not None]
    if len(ready) < len(frames):
        return None
    return ready[0] if len(ready) == 1 else b"".join(ready)


def _write_direct(eio_socket: Any, frame: bytes, now: float) -> bool:
    """Write `frame` to a direct websocket's transport; False if it must use engine.io's path."""
    transport = getattr(eio_socket, "roundtable_transport", None)
    if transport is None or eio_socket.closed:
        return False
    last_ping = eio_socket.last_ping
    if last_ping and now - last_ping > eio_socket.server.ping_timeout:
        return False  # engine.io's own send notices the expired ping and closes the socket
    if transport.is_closing():
        return True  # going away: nothing to deliver
    if transport.get_write_buffer_size() > SLOW_CLIENT_BYTES:
        logger.warning("dropping a client %s bytes behind", transport.get_write_buffer_size())
        transport.abort()
        return True
    transport.write(frame)
    return True


class DirectSocket(AsyncSocket):  # type: ignore[misc]
    """engine.io's socket for a connection that asked for the websocket transport in its first
    request (no long-polling phase), once that websocket is open:

    - every packet to it (the room's events, acks, errors, engine.io's open/ping/close) is
      written straight to the transport, so all of a connection's packets take one path and
      keep their order;
    - its frames are read in the connection's own handler task, with the ping timeout as the
      read timeout;
    - its heartbeat is a timer.

    engine.io's socket instead keeps, per connection, a packet queue (four deques), a writer
    task, a task per frame read and a task per ping: about 8 KB per connection and a hop
    through the queue per packet (docs/performance.md, "What changed in the third session").
    What the client sees on the wire is the same Engine.IO 4 protocol.

    Until its websocket opens (and if the request that asked for it turns out not to be a
    websocket upgrade) it behaves as engine.io's socket. Upgrades from long-polling, and
    servers with WS_COMPRESSION on, keep engine.io's socket.
    """

    queue: Any  # engine.io's, until the websocket opens
    last_ping: float | None
    connected: bool
    roundtable_transport: asyncio.Transport | None = None
    _ping_timer: asyncio.TimerHandle | None = None

    async def send(self, pkt: engineio.packet.Packet) -> None:
        if self.roundtable_transport is None:
            await super().send(pkt)
        elif await self.check_ping_timeout():
            self._write(pkt)

    def _write(self, pkt: engineio.packet.Packet) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            frame = ws_frame(encoded.encode())
        else:
            frame = ws_frame(encoded, binary=True)
        _write_direct(self, frame, time.time())

    def schedule_ping(self) -> None:
        if self.last_ping:  # only once the previous ping was answered, as engine.io does
            self.last_ping = None
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        # A pong that does not come in time is noticed by engine.io's service task, which
        # checks every socket once per ping timeout and closes the session (the fan-out does
        # not look at the heartbeat); the handler closes the websocket at its next frame, or
        # when its read times out.
        self._ping_timer = None
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        pkt = engineio.packet.Packet(engineio.packet.PING)
        if self.roundtable_transport is None:
            self.queue.put_nowait(pkt)
        else:
            self._write(pkt)

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        # once direct, packets are written as they are sent: there is no queue to wait for
        wait = wait and self.roundtable_transport is None
        await super().close(wait=wait, abort=abort, reason=reason)

    async def _websocket_handler(self, ws: Any) -> None:
        sock: web.WebSocketResponse = ws._sock
        writer = sock._writer
        if self.connected or writer is None:  # an upgrade from long-polling
            await super()._websocket_handler(ws)
            return
        self.connected = self.upgraded = True
        queue, self.queue = self.queue, None  # nothing uses engine.io's queue from here on
        self.roundtable_transport = writer.transport
        while not queue.empty():  # what was sent before the websocket opened: the open packet
            self._write(queue.get_nowait())
        del queue
        timeout = self.server.ping_interval + self.server.ping_timeout
        reason = self.server.reason.TRANSPORT_CLOSE
        while True:
            try:
                msg = await sock.receive(timeout=timeout)
            except TimeoutError:
                reason = self.server.reason.PING_TIMEOUT  # not a word, not even a pong
                break
            except asyncio.CancelledError:
                break  # the server is stopping
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break  # closed by the client, or a protocol error (e.g. over max_msg_size)
            try:
                pkt = engineio.packet.Packet(encoded_packet=msg.data)
            except (ValueError, IndexError):
                break  # not an Engine.IO packet: close, as engine.io's Node server does
            try:
                await self.receive(pkt)
            except engineio.exceptions.UnknownPacketError:
                pass
            except engineio.exceptions.SocketIsClosedError:
                break
            except Exception:
                logger.exception("error handling a packet from %s", self.sid)
            if self.closed:  # closed by the server while handling it: close the websocket too
                break
        await sock.close()
        await self.close(wait=False, abort=True, reason=reason)


class RoomServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server with Roundtable's websocket transport: permessage-deflate
    refused and connections that are websockets from the start served by DirectSocket, unless
    `compression` is on (then engine.io's own websocket and socket are used unchanged). A
    connection that sends a Socket.IO packet python-socketio cannot act on is closed."""

    def __init__(self, *args: Any, compression: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct = not compression
        if self._direct:  # engine.io's aiohttp driver has no option for it: swap its class
            self.eio._async = {**self.eio._async, "websocket": _UncompressedWebSocket}

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        sock = self.eio.sockets.get(eio_sid)
        if self._direct and type(sock) is AsyncSocket and _asks_for_websocket(environ):
            # engine.io creates its sockets itself; this one is made a DirectSocket before
            # anything runs on it (its first ping and its websocket come after this event)
            sock.__class__ = DirectSocket
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self._binary_packet and _malformed(self.packet_class, data):
            # what socket.io's Node server does on a parse error; python-socketio would log a
            # traceback for every such packet and keep the connection
            logger.info("closing a connection that sent a malformed Socket.IO packet")
            await self.eio.disconnect(eio_sid)
            return
        await super()._handle_eio_message(eio_sid, data)


def _malformed(packet_class: Any, data: Any) -> bool:
    """True if `data` is not a Socket.IO packet python-socketio can act on."""
    try:
        pkt = packet_class(encoded_packet=data)
    except Exception:
        return True
    kind, args = pkt.packet_type, pkt.data
    if kind in (socketio.packet.EVENT, socketio.packet.BINARY_EVENT):
        # a list led by its name; an unknown name (a number, null) is ignored later, but a
        # list or object in its place is something python-socketio cannot even look up
        return not (isinstance(args, list) and args and not isinstance(args[0], list | dict))
    if kind in (socketio.packet.ACK, socketio.packet.BINARY_ACK):
        return not isinstance(args, list)
    return kind not in (socketio.packet.CONNECT, socketio.packet.DISCONNECT)


def _asks_for_websocket(environ: dict[str, Any]) -> bool:
    query = urllib.parse.parse_qs(str(environ.get("QUERY_STRING", "")))
    return query.get("transport", ["polling"])[0] == "websocket"


class _UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket, but refusing permessage-deflate.

    Browsers offer per-message compression and aiohttp accepts it by default, which costs a
    compressor per client (100+ KB of memory each) and CPU for every frame of every streamed
    delta. Our frames are small JSON deltas: not worth it (see docs/performance.md).
    """

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


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


class RoomHandlers:
    """Socket.IO event handlers for one room; `room_of()` returns the live room."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        room_of: Callable[[], Room],
        emitter: SocketEmitter,
        password: str = "",
        per_minute: int = 30,
    ) -> None:
        self._sio = sio
        self._room_of = room_of
        self._emitter = emitter
        self._password = password
        self._limiter = RateLimiter(per_minute)
        self._departures: asyncio.Queue[str] = asyncio.Queue()
        self._departing: asyncio.Task[None] | None = None

    def attach(self) -> None:
        """Register the handlers on the server."""
        self._sio.on("connect", self.connect)
        self._sio.on("disconnect", self.disconnect)
        self._sio.on("register", self.register)
        self._sio.on("message", self.message)
        self._sio.on("stop", self.stop)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self._password and not hmac.compare_digest(
            _token_of(auth).encode(), self._password.encode()
        ):
            logger.info("refused connection %s: wrong or missing room password", sid)
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized: this room needs a password (Socket.IO auth {token})"
            )

    async def disconnect(self, sid: str, *reason: Any) -> None:
        if self._sio.manager.is_connected(sid, NAMESPACE):
            return  # a client sent an event named "disconnect": not a real one
        self._limiter.forget(sid)
        self._emitter.forget(sid)
        # engine.io may run this inline from a send to a socket whose ping expired, i.e. in the
        # middle of one of the room's emits: leave later, in order, never re-entering the room.
        self._departures.put_nowait(sid)
        if self._departing is None or self._departing.done():
            self._departing = asyncio.create_task(self._depart(), name="departures")

    async def _depart(self) -> None:
        while not self._departures.empty():
            sid = self._departures.get_nowait()
            try:
                await self._room_of().leave(sid)
            except Exception:
                logger.exception("leaving %s failed", sid)

    async def close(self) -> None:
        """Finish the departures in progress (at shutdown)."""
        if self._departing is not None:
            await asyncio.wait({self._departing})

    async def register(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        if extra or not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return await self._error(sid, "invalid_payload", 'register needs {"name": "..."}.')
        try:
            welcome = await self._room_of().register(sid, data.get("user_id"), data["name"])
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)
        return {"ok": True, **welcome}

    async def message(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        room = self._room_of()
        if not room.is_registered(sid):
            return await self._error(sid, "not_registered", "Register with a nickname first.")
        if extra or not isinstance(data, dict) or not isinstance(data.get("content"), str):
            return await self._error(sid, "invalid_payload", 'message needs {"content": "..."}.')
        if not self._limiter.allow(sid):
            return await self._error(sid, "rate_limited", "Too many messages; wait a moment.")
        try:
            return await room.post(sid, data["content"], data.get("id"))
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)

    async def stop(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        if extra:
            return await self._error(sid, "invalid_payload", "stop takes no arguments.")
        try:
            stopped = await self._room_of().stop(sid)
        except RoomError as exc:
            return await self._error(sid, exc.code, exc.message)
        return {"ok": True, "stopped": stopped}

    async def _error(self, sid: str, code: str, message: str) -> dict[str, Any]:
        logger.info("refused %s: %s", sid, code)
        await self._sio.emit("error", {"code": code, "message": message}, to=sid)
        return _refuse(code, message)
