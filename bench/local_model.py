"""Measure a running Roundtable on its local model, as a person in the room sees it.

    python bench/local_model.py --url http://127.0.0.1:5020 [--server-pid PID] [--json out.json]

Over Socket.IO (python-socketio, as the terminal client): the five fixed prompts, each as the
first turn of a fresh room (everyone leaves in between, so the thread is deleted); then a
ten-turn conversation. For each answer: time to first token (send -> first `message-delta`),
tokens per second (deltas after the first / time from first to last delta: llama.cpp streams one
token a delta) and the answer. With --server-pid, the RSS of the model server (the server's
child) after the conversation. Nothing here is specific to one runtime or model, so the same
script measures any revision (e.g. the old llama-cpp-python default)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import socketio

NAME = "Alice"
PROMPTS = [
    ("greeting", "Hi! My name is Alice. Who are you?"),
    ("sum", "What is 17 + 25?"),
    ("summary", "Summarize in one sentence: The city council met on Tuesday and voted to build "
                "a new library downtown, paid for by a small rise in parking fees."),
    ("by name", "Address me by name and say good morning."),
    ("haiku", "Write a haiku about the sea."),
]
CONVERSATION = [
    "Hi, I'm planning a team lunch for Friday.", "There will be eight of us.",
    "Two people are vegetarian.", "Suggest a kind of food that suits everyone.",
    "What about dessert?", "How much time should we book?", "Should we book a table?",
    "What should I write in the invitation?", "Make it shorter.",
    "Thanks! Remind me: how many people are coming?",
]


async def ask(sio: socketio.AsyncClient, inbox: asyncio.Queue[tuple[str, Any, float]],
              text: str) -> dict[str, Any]:
    """Send one message and time its answer."""
    sent = time.perf_counter()
    await sio.emit("message", {"content": text})
    stamps: list[float] = []
    answer = ""
    while True:
        event, data, at = await asyncio.wait_for(inbox.get(), 180)
        if event == "message-delta":
            stamps.append(at)
        elif event == "message-list":
            answer = next((m["content"] for m in data if m["role"] == "assistant"), answer)
        elif event == "ai-end":
            break
    ttft = stamps[0] - sent if stamps else None
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else None
    return {"question": text, "answer": answer, "ttft_s": ttft, "deltas": len(stamps),
            "tokens_per_s": rate, "total_s": time.perf_counter() - sent}


async def room(url: str, questions: list[str]) -> list[dict[str, Any]]:
    """Join, ask each question in turn, leave."""
    inbox: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)

    async def record(event: str, data: Any = None) -> None:
        inbox.put_nowait((event, data, time.perf_counter()))

    sio.on("*", record)
    await sio.connect(url, transports=["websocket"])
    await sio.call("register", {"name": NAME})
    try:
        return [await ask(sio, inbox, q) for q in questions]
    finally:
        await sio.disconnect()
        await asyncio.sleep(0.5)  # the room deletes its thread when the last person leaves


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def wait_until_up(url: str, limit: float = 300) -> float:
    """Poll /healthz until it answers; returns the seconds waited."""
    import aiohttp

    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < limit:
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {limit:.0f} s")


def show(label: str, r: dict[str, Any]) -> None:
    rate = f"{r['tokens_per_s']:.0f} tok/s" if r["tokens_per_s"] else "-"
    ttft = f"{r['ttft_s'] * 1000:.0f} ms" if r["ttft_s"] is not None else "-"
    print(f"{label:>10}: first token {ttft}, {rate}, {r['deltas']} deltas: {r['answer']!r}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:5020")
    parser.add_argument("--server-pid", type=int, help="Roundtable's pid, for the child's RSS")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    await wait_until_up(args.url)
    results: dict[str, Any] = {"prompts": {}, "conversation": []}
    for label, text in PROMPTS:
        [result] = await room(args.url, [text])
        results["prompts"][label] = result
        show(label, result)
    results["conversation"] = await room(args.url, CONVERSATION)
    for turn, result in enumerate(results["conversation"], 1):
        show(f"turn {turn}", result)
    if args.server_pid:
        results["child_rss_mib"] = {pid: rss_mib(pid) for pid in children(args.server_pid)}
        results["server_rss_mib"] = rss_mib(args.server_pid)
        print("RSS MiB: server", round(results["server_rss_mib"]), "child(ren)",
              {k: round(v) for k, v in results["child_rss_mib"].items()})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
