"""The Socket.IO engine: python-socketio's server with Roundtable's websocket transport.

Connections that are websockets from the start get every packet written straight to their
transport (`DirectSocket`); malformed Socket.IO packets close their connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import engineio.exceptions
import engineio.packet
import socketio
import socketio.packet
from aiohttp import WSMsgType, web
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

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


def write_direct(
    eio_socket: Any, frame: bytes, now: float, on_drop: Callable[[], None] | None = None
) -> bool:
    """Write `frame` to a direct websocket's transport; False if it must use engine.io's path.
    A client too far behind is dropped (`on_drop` is told)."""
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
        if on_drop is not None:
            on_drop()
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
    through the queue per packet (docs/performance.md, "The fan-out").
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
        write_direct(self, frame, time.time())

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


