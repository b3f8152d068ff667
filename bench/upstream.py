"""A paced, time-stamped Chat Completions upstream for the benchmarks.

Why not `tests.fake_upstream`: its pauses are relative (`sleep(delay)` after each write, polled
every 20 ms), so a 500-chunk answer at 20 ms drifts by ~1.7 s (measured, see
docs/performance.md). Lateness "against the schedule" would then mostly measure the fake.

This upstream speaks the same wire format for `POST /v1/chat/completions` with `stream: true`
(the `openai` SDK reads it unchanged) but writes chunk i at the absolute time
`t0 + i * interval`, where t0 is the wall-clock time (time.time()) chunk 0 was written, and it
records when each chunk actually went out.

Admin (loopback only):
  POST /_bench/script  {"chunks": ["#0000 a ", ...], "interval": 0.02}   queue one reply (FIFO)
  POST /_bench/script  {..., "key": "r17"}   the reply for the next request whose last user
                       message contains "[bench:r17]" (several rooms answering at once: each
                       room's request gets its own script, whatever order they arrive in)
  GET  /_bench/last    {"t0": ..., "interval": ..., "sent": [...], "n": ...} of the last stream
  GET  /_bench/last?key=r17   the same for the last stream served from r17's script
  GET  /_bench/health

Streams are independent: several requests in flight each keep their own schedule. A request
with no scripted reply answers "ok " in one chunk.

Run: python bench/upstream.py --port N   (prints `BENCH_UPSTREAM <base_url>` when listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections import deque
from typing import Any

from aiohttp import web

KEY = re.compile(r"\[bench:([A-Za-z0-9_-]{1,40})\]")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class PacedUpstream:
    def __init__(self) -> None:
        self.queue: deque[dict[str, Any]] = deque()
        self.keyed: dict[str, deque[dict[str, Any]]] = {}
        self.last: dict[str, Any] = {}
        self.keyed_last: dict[str, dict[str, Any]] = {}
        self.count = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/_bench/script", self.script)
        app.router.add_get("/_bench/last", self.get_last)
        app.router.add_get("/_bench/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "pending": len(self.queue)})

    async def script(self, request: web.Request) -> web.Response:
        data = await request.json()
        chunks = data["chunks"]
        if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
            return web.json_response({"error": "chunks must be a list of strings"}, status=400)
        reply = {"chunks": chunks, "interval": float(data.get("interval", 0.0))}
        key = data.get("key")
        if key:
            self.keyed.setdefault(str(key), deque()).append(reply)
        else:
            self.queue.append(reply)
        return web.json_response({"pending": len(self.queue)})

    async def get_last(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        return web.json_response(self.keyed_last.get(key, {}) if key else self.last)

    def pick(self, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The scripted reply for this request: by the key in its last user message, else the
        next one in FIFO order, else "ok "."""
        users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        content = users[-1].get("content") if users else None
        found = KEY.search(content if isinstance(content, str) else json.dumps(content))
        key = found.group(1) if found else None
        if key is not None and self.keyed.get(key):
            return key, self.keyed[key].popleft()
        if self.queue:
            return None, self.queue.popleft()
        return None, {"chunks": ["ok "], "interval": 0.0}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key, reply = self.pick(body)
        chunks: list[str] = reply["chunks"]
        interval: float = reply["interval"]
        self.count += 1
        base = {
            "id": f"chatcmpl-bench{self.count:08d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "bench"),
            "system_fingerprint": "fp_bench",
        }

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return f"data: {_dumps({**base, 'choices': [choice]})}\n\n".encode()

        if not body.get("stream"):
            text = "".join(chunks)
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice]})

        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await resp.prepare(request)
        await resp.write(frame({"role": "assistant", "content": "", "refusal": None}))
        loop = asyncio.get_running_loop()
        sent: list[float] = []
        record: dict[str, Any] = {"n": len(chunks), "interval": interval, "sent": sent,
                                  "t0": None, "done": False, "stream": self.count, "key": key}
        self.last = record
        if key is not None:
            self.keyed_last[key] = record
        start_mono = 0.0
        try:
            for i, piece in enumerate(chunks):
                if i and interval > 0:
                    delay = start_mono + i * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                data = frame({"content": piece})
                now = time.time()
                if i == 0:
                    start_mono = loop.time()
                    record["t0"] = now
                sent.append(now)
                await resp.write(data)
            await resp.write(frame({}, "stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            record["done"] = True
        except (ConnectionError, asyncio.CancelledError):
            record["done"] = False
            raise
        return resp


async def serve(host: str, port: int) -> None:
    upstream = PacedUpstream()
    runner = web.AppRunner(upstream.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"BENCH_UPSTREAM http://{bound[0]}:{bound[1]}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/upstream.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
