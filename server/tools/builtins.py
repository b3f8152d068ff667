"""Built-in tools that make sense in a group chat: time, who is here, dice, a fair pick."""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .schema import RoomView, Tool, tool


async def current_time(
    timezone: Annotated[
        str | None, "IANA time zone such as 'Europe/Berlin' or 'America/New_York'; default UTC"
    ] = None,
) -> dict[str, str]:
    """The current date and time, in UTC or in a given time zone."""
    zone = _zone(timezone)
    now = datetime.now(zone)
    return {
        "timezone": timezone or "UTC",
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
    }


def _zone(name: str | None) -> tzinfo:
    if name is None or name.strip().upper() in ("UTC", "Z"):
        return UTC  # no time zone database needed
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC'"
        ) from None


async def who_is_here(room: RoomView) -> list[dict[str, str]]:
    """Who is in the room right now: nicknames and since when (UTC), longest-present first."""
    return [{"name": name, "since": _iso_utc(since)} for name, since in room.people()]


def _iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def roll_dice(
    sides: Annotated[int, "faces per die, 2 to 1000"] = 6,
    count: Annotated[int, "how many dice, 1 to 100"] = 1,
) -> dict[str, Any]:
    """Roll fair dice (a cryptographically secure random number for each die)."""
    if not 2 <= sides <= 1000:
        raise ValueError(f"sides must be between 2 and 1000, got {sides}")
    if not 1 <= count <= 100:
        raise ValueError(f"count must be between 1 and 100, got {count}")
    rolls = [secrets.randbelow(sides) + 1 for _ in range(count)]
    return {"sides": sides, "rolls": rolls, "total": sum(rolls)}


async def pick_participant(
    room: RoomView,
    count: Annotated[int, "how many people to pick; the number present gives a full order"] = 1,
) -> dict[str, Any]:
    """Pick people in the room at random, fairly and without repeats, in the order drawn.

    With count equal to the number of people present this is a fair random order, e.g. for
    "who presents first?".
    """
    names = [name for name, _ in room.people()]
    if not names:
        raise ValueError("nobody is in the room")
    if not 1 <= count <= len(names):
        raise ValueError(f"count must be between 1 and {len(names)} (the people present)")
    return {"picked": random.SystemRandom().sample(names, count), "out_of": len(names)}


BUILTINS: tuple[Tool, ...] = tuple(
    tool(fn) for fn in (current_time, who_is_here, roll_dice, pick_participant)
)
