"""People taking turns in one room on the no-key local model: time to the first delta per turn.

    .venv/bin/python bench/local_speakers.py [TREE] [PORT]

Starts `python -m server` from TREE (default: this checkout; a `git worktree` of another
commit compares side by side) with no key, so it runs the bundled model; three Socket.IO
clients take turns asking ten short questions; prints the seconds from each question to its
answer's first `message-delta`. Loopback only; the server is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import socketio

ROOT = Path(__file__).resolve().parent.parent


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the server did not become ready")


async def turns(url: str, count: int = 10) -> list[float]:
    people = []
    for name in ("Alice", "Bob", "Carol"):
        sio = socketio.AsyncClient()
        await sio.connect(url, transports=["websocket"])
        await sio.call("register", {"name": name})
        people.append(sio)
    first, end = asyncio.Event(), asyncio.Event()
    people[0].on("message-delta", lambda _: first.set())
    people[0].on("ai-end", lambda *_: end.set())
    times = []
    for turn in range(count):
        first.clear()
        end.clear()
        started = time.monotonic()
        question = f"Turn {turn + 1}: tell me one short fact about the number {turn + 7}."
        await people[turn % len(people)].emit("message", {"content": question})
        await asyncio.wait_for(first.wait(), 120)
        times.append(time.monotonic() - started)
        await asyncio.wait_for(end.wait(), 120)
    for sio in people:
        await sio.disconnect()
    return times


async def main(tree: Path, port: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}
    env.update(PYTHONPATH=str(tree), SERVER_PORT=str(port), SERVER_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--env-file", os.devnull, cwd=tree, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url)
        times = await turns(url)
        print(f"{tree}: first delta per turn (s):", " ".join(f"{t:.2f}" for t in times))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


if __name__ == "__main__":
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    asyncio.run(main(tree, int(sys.argv[2]) if len(sys.argv) > 2 else 5031))
