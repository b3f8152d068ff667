"""The plain approach, for comparison: a bare python-socketio server on aiohttp that relays the
same upstream stream with one `sio.emit(..., room=...)` per delta.

Speaks just enough of docs/protocol.md for the load generator: `register` (ack `{"ok": true}`,
joins the room), `message` (ack, then a turn: ai-start, message-start, message-delta per chunk,
message-list, ai-end, all to the room). Reads the upstream with the same `openai` SDK call the
chat provider makes. Serves GET /healthz.

Run: python bench/baseline_server.py --port N --upstream http://127.0.0.1:M/v1
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from typing import Any

import openai
import socketio
from aiohttp import web

ROOM = "room"


def build(upstream: str) -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    client = openai.AsyncOpenAI(api_key="x", base_url=upstream, timeout=60, max_retries=2)
    users: dict[str, str] = {}
    ids = itertools.count(1)
    turns: asyncio.Queue[str] = asyncio.Queue()
    tasks: set[asyncio.Task[Any]] = set()

    @sio.on("register")
    async def register(sid: str, data: Any = None) -> dict[str, Any]:
        name = str((data or {}).get("name", sid))
        users[sid] = name
        await sio.enter_room(sid, ROOM)
        return {"ok": True, "user_id": (data or {}).get("user_id") or sid, "name": name}

    @sio.on("disconnect")
    async def disconnect(sid: str, *args: Any) -> None:
        users.pop(sid, None)

    @sio.on("message")
    async def message(sid: str, data: Any = None) -> dict[str, Any]:
        content = str((data or {}).get("content", ""))
        msg_id = f"m_{next(ids)}"
        await sio.emit("message", {"id": msg_id, "name": users.get(sid), "role": "user",
                                   "content": content}, room=ROOM, skip_sid=sid)
        turns.put_nowait(content)
        return {"ok": True, "id": msg_id, "queued": turns.qsize()}

    async def worker() -> None:
        while True:
            content = await turns.get()
            try:
                await turn(content)
            except Exception as exc:  # keep serving; the bench sees the missing deltas
                print(f"baseline: turn failed: {exc!r}", file=sys.stderr, flush=True)

    async def turn(content: str) -> None:
        answer_id = f"a_{next(ids)}"
        answer = {"id": answer_id, "user_id": None, "name": "Baseline AI", "role": "assistant",
                  "content": "", "created_at": int(time.time() * 1000)}
        await sio.emit("ai-start", room=ROOM)
        announced = False
        text = []
        try:
            stream = await client.chat.completions.create(
                model="bench", stream=True,
                messages=[{"role": "system", "content": "You are a bench."},
                          {"role": "user", "content": content}],
            )
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices[:1]:
                        delta = choice.delta.content
                        if not delta:
                            continue
                        if not announced:
                            announced = True
                            await sio.emit("message-start", answer, room=ROOM)
                        text.append(delta)
                        await sio.emit("message-delta", {"id": answer_id, "delta": delta},
                                       room=ROOM)
        finally:
            answer["content"] = "".join(text)
            await sio.emit("message-list", [answer], room=ROOM)
            await sio.emit("ai-end", room=ROOM)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "users": len(users)})

    async def on_startup(app: web.Application) -> None:
        task = asyncio.create_task(worker())
        tasks.add(task)

    async def on_cleanup(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()

    app.router.add_get("/healthz", health)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/baseline_server.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:N/v1")
    args = parser.parse_args(argv)
    web.run_app(build(args.upstream), host=args.host, port=args.port, print=None,
                access_log=None, shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
