"""Example operator tools: start the server with `TOOLS_MODULE=examples.team_tools`.

Each tool is a plain async function: its name is the tool's name, the first paragraph of its
docstring is what the model reads, and its typed parameters become the JSON schema. A parameter
`room: RoomView` is not shown to the model; the server passes a view of the room instead.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from server.tools import RoomView

# Edit to match your team: nickname (as people register in the room) -> IANA time zone.
TEAM_TIMEZONES: dict[str, str] = {
    "Alice": "Europe/Berlin",
    "Bob": "America/New_York",
    "Chen": "Asia/Shanghai",
    "Dana": "America/Los_Angeles",
}


async def team_timezones(
    name: Annotated[str | None, "a teammate's nickname; omit to list the whole team"] = None,
) -> list[dict[str, str]]:
    """Look up teammates' home time zones and their local time right now, e.g. to answer
    "is it too late to call Bob?" or "when can we all meet?".

    Raises ValueError for a name that is not in the team list; the model sees the message.
    """
    if name is None:
        chosen = TEAM_TIMEZONES
    else:
        key = next((k for k in TEAM_TIMEZONES if k.casefold() == name.strip().casefold()), None)
        if key is None:
            known = ", ".join(TEAM_TIMEZONES)
            raise ValueError(f"{name!r} is not in the team list; known: {known}")
        chosen = {key: TEAM_TIMEZONES[key]}
    return [
        {"name": who, "timezone": zone, "local_time": _local_time(zone)}
        for who, zone in chosen.items()
    ]


def _local_time(zone: str) -> str:
    return datetime.now(ZoneInfo(zone)).strftime("%A %H:%M")


async def standup_order(
    room: RoomView,
    last: str | None = None,
) -> list[str]:
    """A fair random speaking order for a stand-up among the people in the room right now.

    Args:
        last: Nickname of whoever should speak last, e.g. the host (ignored if they are
            not in the room).
    """
    names = [name for name, _ in room.people()]
    random.SystemRandom().shuffle(names)
    closing = [n for n in names if last is not None and n.casefold() == last.casefold()]
    return [n for n in names if n not in closing] + closing


# The tools this module offers. Without a TOOLS list, every public async function defined here
# would be offered instead.
TOOLS = [team_timezones, standup_order]
