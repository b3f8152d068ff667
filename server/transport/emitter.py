"""The rooms' emitter over Socket.IO: each event encoded and framed once, written straight to
every recipient's websocket."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import engineio.packet
import socketio
import socketio.packet

from ..metrics import Metrics
from ..rooms.batching import HeldEvent
from ..rooms.emitter import Fanout
from .engine import NAMESPACE, SLOW_CLIENT_BYTES, write_direct, ws_frame

logger = logging.getLogger(__name__)


class SocketEmitter(Fanout):
    """The rooms' Emitter over python-socketio.

    Each event is encoded once, and for websocket connections framed once, then handed to every
    recipient in one pass with no task per recipient and no yield to the event loop in between,
    so every connection sees events in exactly the order the room emitted them.

    Connections that were websockets from the start get the frame written straight to their
    transport (all of the room's events to them go this way, so their order holds); others
    (long-polling, or upgraded from it) go through engine.io's per-socket queue. Measured in
    docs/performance.md: the queue and its writer task were half of the server's time.
    """

    def __init__(self, sio: socketio.AsyncServer, metrics: Metrics | None = None) -> None:
        super().__init__()
        self._sio = sio
        metrics = metrics or Metrics()
        self._frames, self._drops = metrics.frames_sent, metrics.slow_clients_dropped.inc
        self._routes: dict[str, tuple[str, Any]] = {}  # sid -> (engine.io sid, its socket)
        self._direct: dict[str, asyncio.Transport] = {}  # sid -> its open websocket's transport

    def forget(self, sid: str) -> None:
        """The connection is gone (called on disconnect)."""
        super().forget(sid)
        self._routes.pop(sid, None)
        self._direct.pop(sid, None)

    async def deliver(self, event: str, data: Any, to: Collection[str]) -> None:
        self._frames.inc(len(to))
        direct, packets = self._encode(event, data)
        if direct is not None:
            to = self._write_all(direct, to)
        await self._deliver((sid, direct, packets) for sid in to)

    def _write_all(self, frame: bytes, to: Iterable[str]) -> list[str]:
        """The fan-out's hot loop: write `frame` to every recipient whose websocket is open and
        keeping up; return the others, for `_deliver`. One lookup and three transport calls per
        recipient (docs/performance.md, "The fan-out")."""
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

    async def deliver_many(self, events: Sequence[HeldEvent]) -> None:
        """Several events in order; a direct websocket gets all of its frames in one write.

        Recipients that get the same events share one joined frame (in a presence batch that
        is nearly everyone), so the cost per recipient stays one lookup and one write."""
        self._frames.inc(sum(len(to) for _, _, to in events))
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
            if direct is not None and write_direct(route[1], direct, now, self._drops):
                continue
            for frame in queued:
                await eio.send_packet(route[0], frame)


def _joined(frames: list[bytes | None]) -> bytes | None:
    """Frames concatenated for one write, or None if any of them cannot go direct."""
    ready = [frame for frame in frames if frame is not None]
    if len(ready) < len(frames):
        return None
    return ready[0] if len(ready) == 1 else b"".join(ready)


