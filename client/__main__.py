"""`python -m client` (or `roundtable-chat`): chat in a Roundtable room from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from .terminal import Options, run
from .terminal.rooms import ROOM_RULE, normalise_room

DEFAULT_URL = "http://127.0.0.1:5020"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Command line (and ROUNDTABLE_* environment) to Options."""
    parser = argparse.ArgumentParser(
        prog="roundtable-chat",
        description="Join a Roundtable room from a terminal. Commands once in: "
        "/who, /rooms, /stop (or Ctrl-S), /help, /quit (or Ctrl-D, Ctrl-C).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("ROUNDTABLE_URL", DEFAULT_URL),
        help=f"server URL (default: $ROUNDTABLE_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--name", help="your nickname (asked for when not given)")
    parser.add_argument(
        "--password",
        default=os.environ.get("ROUNDTABLE_PASSWORD"),
        help="the server password, if the server needs one (default: $ROUNDTABLE_PASSWORD)",
    )
    parser.add_argument(
        "--room",
        default=os.environ.get("ROUNDTABLE_ROOM"),
        help=f"the room to join ({ROOM_RULE}; default: $ROUNDTABLE_ROOM or the server's "
        "default room)",
    )
    parser.add_argument(
        "--room-password",
        default=os.environ.get("ROUNDTABLE_ROOM_PASSWORD"),
        help="the room's own password, if it has one (asked for when needed; "
        "default: $ROUNDTABLE_ROOM_PASSWORD)",
    )
    parser.add_argument("--user-id", help="your id, to rejoin as the same person (optional)")
    args = parser.parse_args(argv)
    url = args.url if "://" in args.url else f"http://{args.url}"
    room = None
    if args.room:
        room = normalise_room(args.room)
        if room is None:
            parser.error(f"--room {args.room!r}: room names are {ROOM_RULE}")
    return Options(
        url=url,
        name=args.name,
        password=args.password or None,
        user_id=args.user_id,
        room=room,
        room_password=args.room_password or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m client` and the `roundtable-chat` script."""
    options = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(options))
    except KeyboardInterrupt:  # Ctrl-C before the session could take it over
        return 0


if __name__ == "__main__":
    sys.exit(main())
