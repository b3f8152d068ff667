"""Run Roundtable (`python -m server`) with experimental changes applied by monkeypatching, so a
variant can be benchmarked without touching server/:

    python bench/experiments/launch.py --variants nodeflate,fastpath -- --port 5020

or from the bench: `python bench/run.py --impls roundtable,exp:nodeflate,exp:fastpath ...`.
Variants (combine with commas or "+"):

  nodeflate   the websocket never negotiates permessage-deflate (aiohttp WebSocketResponse
              compress=False in engine.io's aiohttp driver)
  uvloop      the event loop is uvloop's
  coalesce    message-delta events of the same answer are merged within BENCH_COALESCE_MS
              (default 16 ms): the first delta after a quiet window goes out at once, later ones
              wait for the end of the window (throttle, leading edge)
  fastpath    the room's events are framed once (websocket text frame bytes) and written straight
              to every websocket transport, skipping engine.io's per-socket queue, writer task and
              per-socket compression; sockets not on websocket keep the normal path
  probe       log a line every 0.5 s to stderr (the bench log): RSS, connections, bytes waiting
              in userspace transport buffers, Python heap blocks (to find where memory goes)
  slimenv     python-socketio's stored per-connection environ cut down to four keys after the
              connect handler (memory per client)
  notransform the chat provider passes `messages` through `extra_body`, skipping the openai SDK's
              per-message parameter transform (~0.3 ms per history message on this machine)
              (the server has done this itself since; kept to re-measure)
  nowindow    every delta sent as it arrives, whatever the room's size (no 16 ms merge window)
  oneroom     the room registry opens a room only if none of that name is open (the server's
              `self._rooms.get(name) or await self._open(config)` tests the room's truth value,
              and a room's len() is its registered connections on this process: while a
              cluster process's first registration waits for Redis the room is "empty", so each
              registration arriving meanwhile opens, and keeps, a room of its own)
  crossroom   a planted fault: every message-delta also reaches one connection of another room,
              to check that the bench's many-rooms case reports cross-room deliveries

See docs/performance.md for what each one measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


# ----- nodeflate / fastpath: the engine.io aiohttp websocket wrapper --------------------------

def websocket_class(compress: bool) -> type:
    """engine.io's aiohttp WebSocket wrapper, negotiating permessage-deflate or not, and
    remembering the aiohttp WebSocketResponse on the engine.io socket (`_rt_ws`)."""
    import engineio.async_drivers.aiohttp as driver
    from aiohttp.web import WebSocketResponse

    class WebSocket(driver.WebSocket):  # type: ignore[misc, name-defined]
        async def __call__(self, environ: dict[str, Any]) -> Any:
            request = environ["aiohttp.request"]
            self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                           compress=compress)
            await self._sock.prepare(request)
            owner = getattr(self.handler, "__self__", None)  # the engine.io AsyncSocket
            if owner is not None:
                owner._rt_ws = self._sock
                # websocket from the start (no polling phase whose queue could still hold
                # packets): the fast path may write to it directly
                owner._rt_ws_only = not owner.connected
            self.environ = environ
            await self.handler(self)
            return self._sock

    return WebSocket


def patch_create_app(nodeflate: bool, track: bool) -> None:
    """After the server's own create_app: swap the websocket class on this server's engine.io
    (per instance, as server/transport/engine.py does), keeping the server's WS_COMPRESSION choice
    unless `nodeflate`."""
    import server.app as app_module

    original = app_module.create_app

    def create_app(settings: Any, *args: Any, **kwargs: Any) -> Any:
        app = original(settings, *args, **kwargs)
        if nodeflate or track:
            compress = False if nodeflate else bool(getattr(settings, "ws_compression", True))
            sio = app[app_module.SIO_KEY]
            sio.eio._async = {**sio.eio._async, "websocket": websocket_class(compress)}
        return app

    app_module.create_app = create_app


def make_fast_emitter(base: type) -> type:
    import engineio.packet
    import socketio.packet

    from server.transport.engine import NAMESPACE, ws_frame

    class FastEmitter(base):  # type: ignore[misc, valid-type]
        """Encode once, frame once, transport.write per recipient; no task, no queue."""

        async def deliver(self, event: str, data: Any, to: Collection[str]) -> None:
            sio = self._sio
            args = [event] if data is None else [event, data]
            pkt = sio.packet_class(socketio.packet.EVENT, namespace=NAMESPACE, data=args)
            encoded = pkt.encode()
            if isinstance(encoded, list):  # binary attachments: the normal path
                await super().deliver(event, data, to)
                return
            frame = ws_frame(("4" + encoded).encode())
            eio_pkt = engineio.packet.Packet(engineio.packet.MESSAGE, data=encoded)
            manager, eio = sio.manager, sio.eio
            for sid in to:
                eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
                if eio_sid is None:
                    continue
                sock = eio.sockets.get(eio_sid)
                if sock is None or sock.closed or sock.closing:
                    continue
                # Only sockets that were websocket from the start: all of the room's events to
                # them go this way, so their order is kept. A socket that upgraded from polling
                # keeps engine.io's queue (its queue may still hold room events).
                if getattr(sock, "_rt_ws_only", False):
                    writer = sock._rt_ws._writer
                    if writer is None or writer.transport is None or \
                            writer.transport.is_closing():
                        continue
                    writer.transport.write(frame)
                else:
                    await eio.send_packet(eio_sid, eio_pkt)

    return FastEmitter


# ----- crossroom -------------------------------------------------------------------------------

def make_leaky_emitter(base: type) -> type:
    class LeakyEmitter(base):  # type: ignore[misc, valid-type]
        """Each room's message-delta also goes to the first connection of another room."""

        async def emit(self, room: str, event: str, data: Any, skip: Collection[str] = (),
                       hold: bool = False) -> None:
            await super().emit(room, event, data, skip, hold)
            if event == "message-delta":
                other = next((sids for name, sids in self._rooms.items() if name != room), None)
                if other:
                    await self.deliver(event, data, [next(iter(other))])

    return LeakyEmitter


# ----- coalesce -------------------------------------------------------------------------------

def make_coalescing_emitter(base: type, window: float) -> type:
    class CoalescingEmitter(base):  # type: ignore[misc, valid-type]
        """Leading-edge throttle of message-delta per answer id; any other event flushes first,
        so the order of events at every client is unchanged."""

        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self._pending: tuple[str, list[str], list[str]] | None = None
            self._last_flush = 0.0
            self._timer: asyncio.TimerHandle | None = None

        async def _flush(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, None
            if pending is not None:
                self._last_flush = asyncio.get_running_loop().time()
                answer_id, parts, to = pending
                await base.deliver(self, "message-delta",
                                {"id": answer_id, "delta": "".join(parts)}, to)

        def _on_timer(self) -> None:
            self._timer = None
            task = asyncio.ensure_future(self._flush())
            task.add_done_callback(lambda t: t.exception())

        async def deliver(self, event: str, data: Any, to: Collection[str]) -> None:
            loop = asyncio.get_running_loop()
            if event == "message-delta":
                pending = self._pending
                if pending is not None and pending[0] == data["id"] and len(pending[2]) == \
                        len(to):
                    pending[1].append(data["delta"])
                    return
                await self._flush()
                if loop.time() - self._last_flush >= window:
                    self._last_flush = loop.time()
                    await base.deliver(self, event, data, to)
                    return
                self._pending = (data["id"], [data["delta"]], list(to))
                self._timer = loop.call_at(self._last_flush + window, self._on_timer)
                return
            await self._flush()
            await base.deliver(self, event, data, to)

    return CoalescingEmitter


# ----- notransform ----------------------------------------------------------------------------

def patch_notransform() -> None:
    import server.providers.chat as chat

    original = chat.make_client

    def make_client(settings: Any) -> Any:
        client = original(settings)
        create = client.chat.completions.create

        async def fast_create(**kwargs: Any) -> Any:
            extra = dict(kwargs.pop("extra_body", None) or {})
            messages = kwargs.pop("messages")
            if messages:  # the server already sends `messages=[]` with the thread in extra_body
                extra["messages"] = messages
            return await create(messages=[], extra_body=extra, **kwargs)

        client.chat.completions.create = fast_create
        return client

    chat.make_client = make_client


# ----- probe ----------------------------------------------------------------------------------

def patch_probe() -> None:
    import gc
    import resource
    import sys as _sys

    import server.app as app_module

    original = app_module.create_app

    import ctypes

    trim = None
    if os.environ.get("BENCH_PROBE_TRIM"):
        trim = ctypes.CDLL("libc.so.6").malloc_trim

    trace = bool(os.environ.get("BENCH_PROBE_TRACE"))
    census = bool(os.environ.get("BENCH_PROBE_CENSUS"))

    def type_census() -> dict[str, list[int]]:
        """Live GC-tracked objects by type: [count, bytes] (sys.getsizeof, shallow)."""
        out: dict[str, list[int]] = {}
        for obj in gc.get_objects():
            t = type(obj)
            row = out.setdefault(f"{t.__module__}.{t.__qualname__}", [0, 0])
            row[0] += 1
            row[1] += _sys.getsizeof(obj)
        return out

    if trace:
        import tracemalloc
        tracemalloc.start(8)

    pauses: list[tuple[int, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], (time.perf_counter() - gc_started[0]) * 1000))

    gc.callbacks.append(on_gc)
    lags: list[float] = []

    async def lag_meter() -> None:
        """How late the loop wakes a 5 ms sleep: the stall any other callback saw."""
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - t - 0.005) * 1000)

    async def probe(sio: Any) -> None:
        asyncio.get_running_loop().create_task(lag_meter())
        first = tracemalloc.take_snapshot() if trace else None
        before = type_census() if census else None
        seen: list[int] = []
        while True:
            await asyncio.sleep(0.5)
            if trim is not None:
                trim(0)
            socks = list(sio.eio.sockets.values())
            seen.append(len(socks))
            if len(seen) > 3 and seen[-1] == seen[-3] > 100 and seen[-4] != seen[-1]:
                class MallInfo2(ctypes.Structure):
                    _fields_ = [(n, ctypes.c_size_t) for n in (
                        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                        "uordblks", "fordblks", "keepcost")]
                libc = ctypes.CDLL("libc.so.6")
                libc.mallinfo2.restype = MallInfo2
                info = libc.mallinfo2()
                print("probe malloc", {n: getattr(info, n) // 1024 for n, _ in info._fields_},
                      file=_sys.stderr, flush=True)
                _sys._debugmallocstats()
            if before is not None and len(seen) > 3 and seen[-1] == seen[-3] > 100:
                after = type_census()
                n = seen[-1]
                rows = sorted(((v[1] - before.get(k, [0, 0])[1], v[0] - before.get(k, [0, 0])[0], k)
                               for k, v in after.items()), reverse=True)
                total = sum(r[0] for r in rows)
                print(f"census {n} sockets: {total / n:.0f} B/socket in GC-tracked objects",
                      file=_sys.stderr)
                for size, count, name in rows[:40]:
                    print(f"census {size / n:8.0f} B {count / n:6.2f}/socket  {name}",
                          file=_sys.stderr)
                before = None
            if first is not None and len(seen) > 3 and seen[-1] == seen[-3] > 100:
                stats = tracemalloc.take_snapshot().compare_to(first, "traceback")
                for stat in stats[:12]:
                    print("trace", stat, file=_sys.stderr)
                    for line in stat.traceback.format()[-8:]:
                        print("trace   ", line, file=_sys.stderr)
                first = None
            buffered = 0
            for sock in socks:
                transport = getattr(sock, "roundtable_transport", None)
                if transport is not None:
                    buffered += transport.get_write_buffer_size()
            with open("/proc/self/statm") as f:  # noqa: ASYNC230 - procfs, never blocks
                rss = int(f.read().split()[1]) * resource.getpagesize()
            worst = {g: max((ms for gen, ms in pauses if gen == g), default=0) for g in (0, 1, 2)}
            count = {g: sum(1 for gen, _ in pauses if gen == g) for g in (0, 1, 2)}
            lag = sorted(lags) or [0.0]
            print(f"probe t={time.time():.2f} rss_mb={rss / 2**20:.1f} socks={len(socks)} "
                  f"buffered_kb={buffered / 1024:.0f} blocks={_sys.getallocatedblocks()} "
                  f"gc_runs={count} gc_max_ms={ {g: round(v, 1) for g, v in worst.items()} } "
                  f"lag_p50={lag[len(lag) // 2]:.1f} lag_p99={lag[int(len(lag) * 0.99)]:.1f} "
                  f"lag_max={lag[-1]:.1f}", file=_sys.stderr, flush=True)
            pauses.clear()
            lags.clear()

    def create_app(settings: Any, *args: Any, **kwargs: Any) -> Any:
        app = original(settings, *args, **kwargs)

        async def start(app: Any) -> None:
            app["probe"] = asyncio.create_task(probe(app[app_module.SIO_KEY]))

        app.on_startup.append(start)
        return app

    app_module.create_app = create_app


# ----- slimenv ---------------------------------------------------------------------------------

def patch_slimenv() -> None:
    """After a connection's `connect` handler, keep only what is read later of the WSGI-style
    environ python-socketio stores for it."""
    import server.transport.handlers as handlers

    original = handlers.RoomHandlers.connect
    keep = ("aiohttp.request", "REMOTE_ADDR", "HTTP_ORIGIN", "QUERY_STRING")

    async def connect(self: Any, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await original(self, sid, environ, auth)
        kept = {k: environ[k] for k in keep if k in environ}
        environ.clear()
        environ.update(kept)

    handlers.RoomHandlers.connect = connect  # type: ignore[method-assign]


# ----- oneroom --------------------------------------------------------------------------------

def patch_oneroom() -> None:
    """RoomRegistry._open returns the open room of that name if there is one."""
    import server.rooms.registry as registry

    original = registry.RoomRegistry._open

    async def _open(self: Any, config: Any) -> Any:
        room = self._rooms.get(config.name)
        if room is not None:  # open, even if no registration here has completed yet
            return room
        return await original(self, config)

    registry.RoomRegistry._open = _open  # type: ignore[method-assign]


# ----- main -----------------------------------------------------------------------------------

def apply(variants: list[str]) -> None:
    import server.app as app
    import server.transport.emitter as emitters

    known = {"nodeflate", "uvloop", "coalesce", "fastpath", "notransform", "probe", "slimenv",
             "nowindow", "crossroom", "oneroom"}
    unknown = set(variants) - known
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
    patch_create_app("nodeflate" in variants, "fastpath" in variants)
    emitter: type = emitters.SocketEmitter
    if "fastpath" in variants:
        emitter = make_fast_emitter(emitter)
    if "coalesce" in variants:
        window = float(os.environ.get("BENCH_COALESCE_MS", "16")) / 1000
        emitter = make_coalescing_emitter(emitter, window)
    if "crossroom" in variants:
        emitter = make_leaky_emitter(emitter)
    app.SocketEmitter = emitter  # create_app looks the name up at call time
    if "notransform" in variants:
        patch_notransform()
    if "probe" in variants:
        patch_probe()
    if "slimenv" in variants:
        patch_slimenv()
    if "oneroom" in variants:
        patch_oneroom()
    if "nowindow" in variants:  # every delta sent as it arrives, whatever the room's size
        import server.rooms.turns
        server.rooms.turns.BATCH_WINDOW = 0.0
    if "uvloop" in variants:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python bench/experiments/launch.py")
    parser.add_argument("--variants", required=True, help="comma- or +-separated")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    variants = [v for v in args.variants.replace("+", ",").split(",") if v]
    apply(variants)
    import server.__main__ as entry
    import server.app as app_module

    entry.create_app = app_module.create_app  # the patched one
    server_main = entry.main
    rest = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
