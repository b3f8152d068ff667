"""Transport details a client would notice: per-message compression negotiation, websocket and
long-polling clients seeing the same thing, heartbeats, frames that are not Engine.IO."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from server.app import HANDLERS_KEY, SIO_KEY
from tests.conftest import StartServer
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer
from tests.tools_for_tests import WirePeer, wait_until

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(("setting", "negotiated"), [(False, 0), (True, 15)])
async def test_permessage_deflate_follows_the_setting(
    start_server: StartServer, setting: bool, negotiated: int
):
    server = await start_server(ws_compression=setting)
    url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
        opening = await ws.receive_str()  # the Engine.IO open packet
        assert opening.startswith("0{")
        assert ws.compress == negotiated


async def test_websocket_and_polling_clients_see_the_same_turn(
    start_server: StartServer, upstream: FakeUpstream
):
    """Websocket-from-the-start clients get frames written directly; long-polling clients go
    through engine.io's queue. Both must see the same events in the same order."""
    server = await start_server()
    ws_peer = Peer(server.url, "Web")
    poll_peer = Peer(server.url, "Poll")
    await ws_peer.join()
    await poll_peer.sio.connect(server.url, transports=["polling"], wait_timeout=5)
    await poll_peer.join()
    text = "".join(f"part{i} " for i in range(60))
    upstream.enqueue(Text(text, chunks=[f"part{i} " for i in range(60)], delay=0.002))
    await ws_peer.say("go")
    for peer in (ws_peer, poll_peer):
        await peer.wait_for("ai-end")
    assert poll_peer.sio.transport() == "polling" and ws_peer.sio.transport() == "websocket"

    def turn(peer: Peer) -> list[tuple[str, Any]]:
        return [(n, d) for n, d in peer.events if n in ("ai-start", "message-start",
                                                        "message-delta", "message-list",
                                                        "ai-end")]

    assert turn(ws_peer) == turn(poll_peer)
    assert ws_peer.streamed(ws_peer.answers()[0]["id"]) == text
    for peer in (ws_peer, poll_peer):
        await peer.close()


async def test_held_join_notices_reach_websocket_and_polling_clients_whole_and_in_order(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
):
    """In a large room join/leave notices are sent together, several frames in one write to a
    websocket and one by one through engine.io's queue to a polling client (the threshold is
    lowered here so that three people make a large room)."""
    monkeypatch.setattr("server.rooms.emitter.BATCH_MIN_RECIPIENTS", 2)
    monkeypatch.setattr("server.rooms.turns.BATCH_MIN_RECIPIENTS", 2)
    server = await start_server()
    ws_peer, poll_peer = Peer(server.url, "Web"), Peer(server.url, "Poll")
    await ws_peer.join()
    await poll_peer.sio.connect(server.url, transports=["polling"], wait_timeout=5)
    await poll_peer.join()
    arrivals = [Peer(server.url, f"New{i}") for i in range(6)]
    for peer in arrivals:
        await peer.connect()
    await asyncio.gather(*(peer.join() for peer in arrivals))
    await arrivals[0].close()  # a leave in the same window
    await arrivals[1].say("hello")  # anything else sends what is held first
    for peer in (ws_peer, poll_peer):
        await peer.wait_for("message")
        seen = [(n, d["name"]) for n, d in peer.events if n in ("join", "leave", "message")]
        joins = [name for n, name in seen if n == "join" and name.startswith("New")]
        assert sorted(joins) == [f"New{i}" for i in range(6)]  # each once
        assert seen[-2:] == [("leave", "New0"), ("message", "New1")]
    # python-engineio's polling client, closing just after an event reached it, waits for its
    # next long-poll (~30 s), so it does not wait here
    await poll_peer.sio.eio.disconnect(abort=True)
    for peer in (ws_peer, *arrivals):
        await peer.close()


async def test_the_emitter_forgets_connections_that_went_away(start_server: StartServer):
    """Routes to connections are cached for speed; reconnecting clients must not pile up."""
    server = await start_server()
    stay = Peer(server.url, "Stay")
    await stay.join()
    for i in range(5):
        peer = Peer(server.url, f"Visitor{i}")
        await peer.join()
        await peer.say(f"hi {i}")
        await peer.close()
    await stay.wait_for("leave", count=5)
    emitter = server.app[HANDLERS_KEY]._emitter
    assert set(emitter._routes) == set(emitter._direct) == {stay.sio.get_sid()}
    await stay.close()


@asynccontextmanager
async def steady_and(
    start_server: StartServer, name: str, ping_interval: float, ping_timeout: float
) -> AsyncIterator[tuple[Any, WirePeer, WirePeer]]:
    """A server with a fast heartbeat, and two registered wire clients: "Steady" and `name`."""
    server = await start_server()
    eio = server.app[SIO_KEY].eio
    eio.ping_interval, eio.ping_timeout = ping_interval, ping_timeout  # for new connections
    async with aiohttp.ClientSession() as session:
        steady = WirePeer(server.url, session, "Steady")
        other = WirePeer(server.url, session, name)
        try:
            await steady.join()
            await other.join()
            yield server, steady, other
        finally:
            await asyncio.gather(steady.close(), other.close())


async def test_heartbeats_keep_answering_clients_and_drop_silent_ones(start_server: StartServer):
    """Engine.IO pings reach websocket clients on schedule; a client that stops answering is
    dropped after the ping timeout, the others are told it left, and the rest stay."""
    async with steady_and(start_server, "Hung", 0.2, 0.3) as (server, steady, hung):
        await wait_until(lambda: hung.pings >= 2, timeout=3, what="two pings")
        hung.frozen = True  # stops answering
        await wait_until(lambda: steady.of("leave"), timeout=3, what="Hung dropped")
        assert [u["name"] for u in steady.of("leave")] == ["Hung"]
        pings = steady.pings
        await asyncio.sleep(1.2)  # six more ping intervals
        assert steady.pings >= pings + 4
        assert steady.connected
        assert [u["name"] for u in server.room.users()] == ["Steady"]


async def test_a_client_that_talks_but_never_answers_pings_is_dropped_and_disconnected(
    start_server: StartServer, upstream: FakeUpstream
):
    """Traffic is not a pong: a client sending packets but ignoring pings loses its connection
    after the ping timeout even while an answer streams, and the others carry on."""
    async with steady_and(start_server, "Deaf", 0.3, 0.3) as (server, steady, deaf):
        deaf.frozen = True
        answer = " ".join(f"w{i}" for i in range(60))
        upstream.enqueue(Text(answer, delay=0.03))
        await steady.call("message", {"content": "go"})

        async def chatter() -> None:  # Engine.IO noops: traffic, but no pong
            while deaf.connected:
                await deaf._ws.send_str("6")
                await asyncio.sleep(0.1)

        talking = asyncio.create_task(chatter())
        await wait_until(lambda: not deaf.connected, timeout=3, what="Deaf disconnected")
        await talking
        assert [u["name"] for u in steady.of("leave")] == ["Deaf"]
        await steady.wait_for("ai-end", timeout=10)
        assert steady.streamed(steady.of("message-start")[-1]["id"]) == answer
        assert [u["name"] for u in server.room.users()] == ["Steady"]


@pytest.mark.parametrize("frame", [
    "", "hello", "\u00e9t\u00e9",  # not Engine.IO
    "4xyz", "4", "42[", '42{"a":1}', "42[]", "49", "44", "43",  # Engine.IO, but not Socket.IO
])
async def test_a_frame_that_is_not_engine_io_or_socket_io_closes_only_that_connection(
    start_server: StartServer, upstream: FakeUpstream, frame: str,
    caplog: pytest.LogCaptureFixture,
):
    """Closed, as socket.io's Node server does on a parse error; nothing logged as an error."""
    server = await start_server()
    other = Peer(server.url, "Other")
    await other.join()
    url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str(timeout=5)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=5)).startswith("40{")
        await ws.send_str(frame)
        got = [await ws.receive(timeout=5)]
        if got[0].data == "1":  # Engine.IO close, then the websocket's close
            got.append(await ws.receive(timeout=5))
        assert got[-1].type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), got
    upstream.enqueue(Text("still here"))
    await other.say("anyone?")
    await other.wait_for("ai-end")
    assert other.answers()[-1]["content"] == "still here"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await other.close()


class StuckReader:
    """A websocket client that registers and then stops reading, with a small receive buffer:
    a browser tab frozen by the OS, or a client on a link that died without a reset."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.writer: asyncio.StreamWriter | None = None

    async def register(self, name: str) -> str:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        reader, self.writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        assert (await self._text(reader)).startswith("0{")
        self._send("40")
        assert (await self._text(reader)).startswith("40{")
        self._send("421" + json.dumps(["register", {"name": name}]))
        while not (text := await self._text(reader)).startswith("431"):
            pass  # join notices of others, if any
        ack = json.loads(text[3:])[0]
        assert ack["ok"], ack
        self.writer.transport.pause_reading()  # and never reads again
        return str(ack["user_id"])

    def _send(self, text: str) -> None:
        """One masked text frame (payloads here are under 126 bytes)."""
        payload, mask = text.encode(), os.urandom(4)
        assert len(payload) < 126 and self.writer is not None
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    @staticmethod
    async def _text(reader: asyncio.StreamReader) -> str:
        head = await reader.readexactly(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await reader.readexactly(8))[0]
        return (await reader.readexactly(size)).decode()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


async def test_a_client_that_stops_reading_is_dropped_and_nobody_else_misses_anything(
    start_server: StartServer, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    """The server does not buffer without bound for a client that stopped reading: once it is
    SLOW_CLIENT_BYTES behind it is dropped (it would reconnect and get the room's state), and
    the others get the whole answer."""
    monkeypatch.setattr("server.transport.emitter.SLOW_CLIENT_BYTES", 256 * 1024)
    monkeypatch.setattr("server.transport.engine.SLOW_CLIENT_BYTES", 256 * 1024)
    server = await start_server()
    reader = Peer(server.url, "Reader")
    await reader.join()
    stuck = StuckReader(server.url)
    try:
        await stuck.register("Stuck")
        await reader.wait_for("join", where=lambda d: d["name"] == "Stuck")
        chunks = [f"{i:04d}" + "x" * 4092 for i in range(500)]  # 2 MB in 4 KB deltas
        upstream.enqueue(Text("".join(chunks), chunks=chunks, delay=0))
        await reader.say("a long one")
        await reader.wait_for("ai-end", timeout=30)
        assert reader.streamed(reader.answers()[0]["id"]) == "".join(chunks)
        await reader.wait_for("leave", where=lambda d: d["name"] == "Stuck")
        assert [u["name"] for u in server.room.users()] == ["Reader"]
    finally:
        stuck.close()
        await reader.close()
