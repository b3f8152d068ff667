"""The cluster's reader alone: CPU per stream entry of server/cluster/relay.py's `Relay` (its
Redis client as server/cluster/node.py makes it, a fan-out that does nothing) while a writer on
the other core appends one entry every INTERVAL seconds, as a room's owner does with its deltas.

    python bench/cluster_reader.py --interval 0.02 [--entries 500]

Starts its own redis-server (core 0, with the reader) and prints the reader's on-CPU time per
entry from /proc/self/schedstat (the scheduler's own count, not tick samples). Shows how much of
a non-owner process's cost per delta is the reader, and how that depends on the rate (a process
woken from idle for each entry pays for cold caches). Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procs import free_port  # noqa: E402

from server.cluster.node import _client  # noqa: E402
from server.cluster.relay import Relay  # noqa: E402
from server.cluster.scripts import RoomKeys  # noqa: E402

ROOM = "main"
DELTA = json.dumps({"id": "m_0123456789ab", "delta": "#0001 lorem ipsum dolor sit amet, "})


class NoFanout:
    """Counts the events the reader hands over; `reached` is set at `target` of them."""

    def __init__(self) -> None:
        self.events = 0
        self.target = 0
        self.reached = asyncio.Event()

    def join(self, room: str, sid: str) -> None:
        pass

    async def emit(self, room: str, event: str, data: Any, skip: Any = (),
                   hold: bool = False) -> None:
        self.events += 1
        if self.events >= self.target:
            self.reached.set()

    async def send(self, sid: str, event: str, data: Any) -> None:
        pass


def on_cpu_ns() -> int:
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[0])


async def write(url: str, entries: int, interval: float) -> None:
    redis = _client(url, 2)
    start = time.monotonic()
    for i in range(entries):
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        await redis.xadd(RoomKeys(ROOM).out, {"e": "message-delta", "d": DELTA})
    await redis.aclose()


async def read(url: str, entries: int) -> tuple[int, float]:
    redis = _client(url, 32)
    fanout = NoFanout()
    relay = Relay(redis, "n_bench", fanout, lambda ok: None)  # type: ignore[arg-type]
    relay.admit(ROOM, "s_bench", "0-0")
    fanout.target = 10  # warm
    relay.start()
    await fanout.reached.wait()
    first, ns = fanout.events, on_cpu_ns()
    fanout.target = entries
    fanout.reached.clear()
    await fanout.reached.wait()
    used, got = on_cpu_ns() - ns, fanout.events - first
    task = relay._task
    while task is not None and not task.done():  # one cancel during a blocking XREAD was not
        task.cancel()                            # always enough here: repeat until it ends
        await asyncio.wait({task}, timeout=0.5)
    await redis.aclose()
    return got, used / got / 1000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--entries", type=int, default=500)
    p.add_argument("--writer", help=argparse.SUPPRESS)  # internal: the writer process
    args = p.parse_args()
    if args.writer:
        asyncio.run(write(args.writer, args.entries + 20, args.interval))
        return 0
    os.sched_setaffinity(0, {0})
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(port),
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    writer = None
    try:
        time.sleep(0.5)
        writer = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--writer",
                                   url, "--entries", str(args.entries),
                                   "--interval", str(args.interval)])
        got, us = asyncio.run(read(url, args.entries))
        print(f"interval {args.interval * 1000:g} ms: {us:.0f} us on-CPU per entry "
              f"({got} entries)")
    finally:
        if writer is not None:
            writer.wait(timeout=60)
        redis.terminate()
        redis.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
