"""Run the fake as a process: `python -m tests.fake_upstream --port N`.

Prints `FAKE_UPSTREAM <base_url>` once listening, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .server import FakeUpstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--require-key", default=None)
    parser.add_argument("--context-limit-chars", type=int, default=None)
    parser.add_argument("--delta-delay", type=float, default=0.0)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    fake = FakeUpstream(
        require_key=args.require_key,
        context_limit_chars=args.context_limit_chars,
        delta_delay=args.delta_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fake.start(args.host, args.port)
    print(f"FAKE_UPSTREAM {fake.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
