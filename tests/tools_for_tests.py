"""Helpers for the reliability, hostile-input and soak suites.

- `Person`: a `Peer` that also records `connect_error` (the reason a connection was refused)
  and can send raw Socket.IO events the client library would otherwise shape or refuse.
- `Crowd`: makes people on any server and closes them all at the end.
- `wait_until`: poll a condition in the event loop.
- `system_notices`: the system notices a peer received.
- `ChatStreamWatch`: what the fake Chat Completions endpoint saw of each streamed request
  (done / gone / cut / malformed), since the fake keeps no other record of a closed stream.
- `slow_upstream_cancel`: make the fake as slow as a real upstream to release an abandoned run;
  `upstream_settled`: wait until the fake holds no lock and no active run.
- `WirePeer`: a minimal Socket.IO client, cheap enough to run hundreds in the test process.
- `LoopThread` + `running_room`: a fake upstream and a Roundtable server on an event loop in a
  background thread, for synchronous (hypothesis) tests that reuse one server for many examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import socketio
import socketio.packet
from aiohttp import web

from tests.conftest import RunningServer, launch
from tests.fake_upstream import FakeUpstream
from tests.fake_upstream import chat_api as fake_chat_api
from tests.fake_upstream.responses_api import ResponsesAPI
from tests.peers import Peer

T = TypeVar("T")


class Person(Peer):
    """A peer that records why a connection was refused and can send raw events."""

    def __init__(self, url: str, name: str | None = None, user_id: str | None = None) -> None:
        super().__init__(url, name, user_id)
        self.refusals: list[Any] = []
        self.sio.on("connect_error", self._refused)

    async def _refused(self, data: Any = None) -> None:
        self.refusals.append(data)

    async def connect(self, **kwargs: Any) -> Person:
        await super().connect(**kwargs)
        return self

    async def raw_emit(self, event: Any, *args: Any, ack_id: int | None = None) -> None:
        """Send an EVENT packet `[event, *args]` exactly as given (any event name, any number of
        arguments), optionally asking for an acknowledgement with `ack_id`."""
        pkt = self.sio.packet_class(
            socketio.packet.EVENT, namespace="/", data=[event, *args], id=ack_id
        )
        await self.sio._send_packet(pkt)

    async def call_raw(self, event: str, *args: Any, timeout: float = 5) -> Any:
        """Like `call`, but with exactly these positional arguments (none, one, or several)."""
        return await self.sio.call(event, tuple(args), timeout=timeout)

    def system_notices(self) -> list[dict[str, Any]]:
        return system_notices(self)


class Crowd:
    """Makes people on any server (`crowd(server_or_url, name, user_id)`); `close` ends all."""

    def __init__(self) -> None:
        self.made: list[Person] = []

    def __call__(self, server: RunningServer | str, name: str | None = None,
                 user_id: str | None = None) -> Person:
        url = server if isinstance(server, str) else server.url
        person = Person(url, name, user_id)
        self.made.append(person)
        return person

    async def room(self, server: RunningServer, *names: str) -> list[Person]:
        """Connect and register one person per name, in order."""
        people = [self(server, name) for name in names]
        for person in people:
            await person.join()
        return people

    async def close(self) -> None:
        for person in self.made:
            await person.close()


def system_notices(peer: Peer) -> list[dict[str, Any]]:
    """The system notices (role system) a peer received."""
    return [m for m in peer.of("message") if m.get("role") == "system"]


async def wait_until(
    condition: Callable[[], bool], timeout: float = 10, interval: float = 0.01, what: str = ""
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)


class ChatStreamWatch:
    """Records the outcome of every streamed chat completion the fake served.

    The fake's Chat API keeps no state, so this wraps its `pump` (the function that writes a
    turn onto the SSE response) and remembers what it returned: "done", "gone" (the client
    closed the stream), "cut" or "malformed".
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.outcomes: list[str] = []
        original = fake_chat_api.pump

        async def pump(stream: Any, emits: Any) -> Any:
            outcome = await original(stream, emits)
            self.outcomes.append(outcome)
            return outcome

        monkeypatch.setattr(fake_chat_api, "pump", pump)


def slow_upstream_cancel(
    monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, seconds: float
) -> None:
    """Make the fake as slow as a real upstream to notice that a run was abandoned.

    Responses: when the client closes a stream early, the response stays `in_progress` and its
    conversation stays locked (`conversation_locked`) for `seconds` more, then becomes
    `cancelled`. Assistants: a cancelled run stays `cancelling` for `seconds`
    (`upstream.cancel_latency`). Chat Completions keeps no server-side state: nothing to do.
    """
    upstream.cancel_latency = seconds
    original = ResponsesAPI._stream

    async def _stream(
        self: ResponsesAPI, request: web.Request, emits: Any, resp: dict[str, Any],
        conv_id: str | None,
    ) -> web.StreamResponse:
        response = await original(self, request, emits, resp, conv_id)
        if resp.get("client_disconnected") and resp["status"] == "cancelled" and conv_id:
            busy: set[str] = self._busy
            busy.add(conv_id)
            resp["status"] = "in_progress"

            async def release() -> None:
                await asyncio.sleep(seconds)
                resp["status"] = "cancelled"
                busy.discard(conv_id)

            self.fake.spawn(release())
        return response

    monkeypatch.setattr(ResponsesAPI, "_stream", _stream)


async def upstream_settled(upstream: FakeUpstream, timeout: float = 10) -> None:
    """Wait until the fake has no active run and no conversation locked by a response."""
    locked: set[str] = upstream._responses_api._busy
    await wait_until(lambda: upstream.active_runs() == [] and not locked,
                     timeout, what="the upstream to settle")


class WirePeer:
    """A minimal Socket.IO v5 client (Engine.IO v4, websocket only, default namespace).

    It records events like `Peer` (`events`, `of`, `names`, `streamed`, `answers`, `wait_for`)
    but costs far less per event than python-socketio's client (one task per socket, no task
    per packet), so hundreds of them fit in the test process for a soak. Pings are answered.
    """

    def __init__(self, url: str, session: Any, name: str | None = None,
                 user_id: str | None = None) -> None:
        self.url = url
        self.name = name
        self.user_id = user_id
        self.events: list[tuple[str, Any]] = []
        self._session = session
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_ack = 0
        self._opened: asyncio.Future[Any] | None = None
        self.frozen = False  # True: stop answering pings (a client that hung)
        self.pings = 0  # Engine.IO pings received

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and self._reader is not None \
            and not self._reader.done()

    async def connect(self, timeout: float = 10) -> WirePeer:
        ws_url = self.url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        self._ws = await self._session.ws_connect(ws_url, heartbeat=None, autoping=True)
        handshake = await self._ws.receive_str(timeout=timeout)
        assert handshake.startswith("0"), handshake
        self._opened = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        await self._ws.send_str("40")
        await asyncio.wait_for(self._opened, timeout)
        return self

    async def _read(self) -> None:
        ws = self._ws
        try:
            async for msg in ws:
                data = msg.data
                if not isinstance(data, str):
                    continue
                if data == "2":
                    self.pings += 1
                    if not self.frozen:
                        await ws.send_str("3")
                elif data.startswith("42"):
                    event, *args = json.loads(data[2:])
                    self.events.append((event, args[0] if args else None))
                    self._changed.set()
                elif data.startswith("43"):
                    body = data[2:]
                    digits = len(body) - len(body.lstrip("0123456789"))
                    future = self._acks.pop(int(body[:digits]), None)
                    args = json.loads(body[digits:])
                    if future is not None and not future.done():
                        future.set_result(args[0] if args else None)
                elif data.startswith(("40", "44")) and self._opened is not None:
                    if not self._opened.done():
                        if data.startswith("40"):
                            self._opened.set_result(None)
                        else:
                            self._opened.set_exception(ConnectionError(data[2:]))
                elif data.startswith("1"):  # the server closed the session
                    break
        finally:
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self._changed.set()

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if not self.connected:
            raise ConnectionError("not connected")
        self._next_ack += 1
        ack_id = self._next_ack
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        payload = [event] if data is None else [event, data]
        await self._ws.send_str(f"42{ack_id}{json.dumps(payload)}")
        return await asyncio.wait_for(future, timeout)

    async def join(self) -> dict[str, Any]:
        if not self.connected:
            await self.connect()
        payload: dict[str, Any] = {"name": self.name}
        if self.user_id is not None:
            payload["user_id"] = self.user_id
        ack = await self.call("register", payload)
        if ack.get("ok"):
            self.user_id = ack["user_id"]
        return dict(ack)

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str("41")
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    # ----- reading what arrived (the same as Peer) -----
    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def streamed(self, message_id: str) -> str:
        return "".join(d["delta"] for d in self.of("message-delta") if d["id"] == message_id)

    def answers(self) -> list[dict[str, Any]]:
        return [m for batch in self.of("message-list") for m in batch if m["role"] == "assistant"]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> Any:
        async def reached() -> Any:
            while True:
                found = self.of(event)
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(reached(), timeout)


# ----- a server on a background event loop, for synchronous tests -----


class LoopThread:
    """An asyncio event loop running in a daemon thread; `run` blocks on a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_leftovers() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@dataclass
class Harness:
    """A live server on a background loop, plus the people connected to it."""

    loop: LoopThread
    upstream: FakeUpstream
    server: RunningServer
    people: list[Person] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self.loop.run(coro, timeout)

    def person(self, name: str | None = None, user_id: str | None = None) -> Person:
        """A new (not yet connected) person, built in the loop; closed when the harness ends."""
        return self.run(self.make(name, user_id))

    async def make(self, name: str | None = None, user_id: str | None = None) -> Person:
        """`person` from inside the loop."""
        person = Person(self.server.url, name, user_id)
        self.people.append(person)
        return person


@contextmanager
def running_room(**overrides: Any) -> Iterator[Harness]:
    """A fake upstream and a Roundtable server on a background loop, for the whole block."""
    loop = LoopThread()
    upstream = FakeUpstream()
    harness: Harness | None = None
    try:
        loop.run(upstream.start())
        server = loop.run(launch(upstream, **overrides))
        harness = Harness(loop, upstream, server)
        yield harness
    finally:
        if harness is not None:
            for person in harness.people:
                loop.run(person.close())
            loop.run(harness.server.stop())
        loop.run(upstream.stop())
        loop.close()
