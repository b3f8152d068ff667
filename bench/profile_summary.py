"""Summarise a py-spy raw (collapsed-stack) profile: where the server's samples go.

    python bench/profile_summary.py bench/results/<stamp>-profile-<impl>-<C>.txt [--top 25]

Prints the top functions by self samples and by inclusive samples (a function counted once per
stack), plus a few named buckets (websocket write, compression, engine.io queue, JSON, the
openai SDK, asyncio itself).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

BUCKETS = {
    "idle (epoll wait)": re.compile(r"select \(selectors"),
    "zlib compress (permessage-deflate)": re.compile(r"compress|zlib", re.I),
    "aiohttp websocket send_frame": re.compile(r"send_frame"),
    "transport.write": re.compile(r"\bwrite \((asyncio|uvloop)/|_write_websocket_frame"),
    "engine.io socket.send / queue": re.compile(r"send \(engineio/async_socket|queue"),
    "engine.io writer task": re.compile(r"writer \(engineio/async_socket"),
    "socket.io / json encode": re.compile(r"encode \(socketio|json/encoder|dumps"),
    "openai SDK / httpx (upstream read)": re.compile(r"openai/|httpx|httpcore|pydantic"),
    "Roundtable room / provider": re.compile(r"\(server/(room|sockets|providers)"),
}


def frames(stack: str) -> list[str]:
    return stack.split(";")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        fs = frames(stack)
        self_c[fs[-1]] += n
        for f in set(fs):
            incl[f] += n
        for name, rx in BUCKETS.items():
            if rx.search(stack):
                buckets[name] += n
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples\n\nbuckets (inclusive, may overlap):")
    for name, n in buckets.most_common():
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("\ntop self:")
    for f, n in self_c.most_common(args.top):
        print(f"  {100 * n / total:5.1f} %  {f}")
    print("\ntop inclusive:")
    for f, n in incl.most_common(args.top):
        print(f"  {100 * n / total:5.1f} %  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
