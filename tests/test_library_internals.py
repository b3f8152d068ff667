"""The private parts of python-socketio, python-engineio and aiohttp that server/transport relies
on. pyproject.toml pins the versions they were read from; when an upgrade changes one of them,
the test names the internal and the code that needs it, instead of the server failing strangely.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

import engineio
import engineio.exceptions
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

USED_BY = {
    "engine": "server/transport/engine.py",
    "emitter": "server/transport/emitter.py",
    "signin": "server/transport/signin.py",
}


def needs(owner: Any, name: str, where: str, library: str) -> Any:
    """`owner.name`, or a failure that says which internal went away and who relies on it."""
    if not hasattr(owner, name):
        label = getattr(owner, "__name__", type(owner).__name__)
        pytest.fail(
            f"{library} {version(library)}: {label}.{name} is gone; {USED_BY[where]} relies on "
            "it. Read the new version's code, adapt, then raise the pin in pyproject.toml."
        )
    return getattr(owner, name)


def needs_params(func: Any, params: list[str], where: str, library: str) -> None:
    found = list(inspect.signature(func).parameters)
    if found[: len(params)] != params:
        pytest.fail(
            f"{library} {version(library)}: {func.__qualname__}{inspect.signature(func)} no "
            f"longer takes {params}; {USED_BY[where]} overrides or calls it."
        )


async def test_python_engineio_socket_internals() -> None:
    lib = "python-engineio"
    for method in ("_websocket_handler", "check_ping_timeout", "schedule_ping", "send",
                   "close", "receive"):
        needs(AsyncSocket, method, "engine", lib)
    needs_params(AsyncSocket._websocket_handler, ["self", "ws"], "engine", lib)
    needs_params(AsyncSocket.close, ["self", "wait", "abort", "reason"], "engine", lib)
    server = engineio.AsyncServer(async_mode="aiohttp")
    sock = AsyncSocket(server, "sid")
    for attribute in ("queue", "last_ping", "connected", "upgraded", "closing", "closed",
                      "server", "sid"):
        needs(sock, attribute, "engine", lib)
    drivers = needs(server, "_async", "engine", lib)
    if drivers.get("websocket") is not eio_aiohttp.WebSocket:
        pytest.fail(f"{lib}: AsyncServer._async['websocket'] is no longer the aiohttp driver's "
                    f"WebSocket; {USED_BY['engine']} swaps it for an uncompressed one.")
    needs_params(eio_aiohttp.WebSocket.__init__, ["self", "handler", "server"], "engine", lib)
    for reason in ("TRANSPORT_CLOSE", "PING_TIMEOUT"):
        needs(server.reason, reason, "engine", lib)
    for error in ("UnknownPacketError", "SocketIsClosedError"):
        needs(engineio.exceptions, error, "engine", lib)
    needs(server, "sockets", "emitter", lib)


async def test_python_socketio_server_internals() -> None:
    lib = "python-socketio"
    sio = socketio.AsyncServer(async_mode="aiohttp")
    for method in ("_handle_eio_connect", "_handle_eio_message"):
        needs(socketio.AsyncServer, method, "engine", lib)
    needs_params(socketio.AsyncServer._handle_eio_connect, ["self", "eio_sid", "environ"],
                 "engine", lib)
    needs_params(socketio.AsyncServer._handle_eio_message, ["self", "eio_sid", "data"],
                 "engine", lib)
    needs(sio, "_binary_packet", "engine", lib)
    needs(sio, "packet_class", "emitter", lib)
    for method in ("eio_sid_from_sid", "is_connected", "get_participants"):
        needs(sio.manager, method, "emitter", lib)


async def test_aiohttp_websocket_writer_transport() -> None:
    """DirectSocket writes frames to the transport under aiohttp's WebSocketResponse."""
    lib = "aiohttp"
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        writer = needs(ws, "_writer", "engine", lib)
        seen.append(needs(writer, "transport", "engine", lib))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws")
        await ws.receive()
        await ws.close()
    [transport] = seen
    for method in ("write", "is_closing", "get_write_buffer_size", "abort"):
        needs(transport, method, "engine", lib)


def test_python_engineio_keeps_the_aiohttp_request_in_the_environ() -> None:
    """The sign-in check reads the peer address from the aiohttp request in a connect's environ
    (python-engineio's own REMOTE_ADDR is a constant under aiohttp)."""
    request = make_mocked_request("GET", "/socket.io/", headers={"X-Forwarded-User": "alice"})
    environ = eio_aiohttp.translate_request(request)
    if environ.get("aiohttp.request") is not request:
        pytest.fail(f"python-engineio {version('python-engineio')}: the connect environ no longer "
                    f"carries 'aiohttp.request'; {USED_BY['signin']} relies on it.")
