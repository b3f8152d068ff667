"""Rooms for the terminal client: the room-name rule, a room's web link, and the list of open
rooms (`GET /api/rooms`, the server password as a Bearer token when there is one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

ROOM_NAME = re.compile(r"[a-z0-9_-]{1,40}")
ROOM_RULE = "1-40 characters: lower-case letters, digits, - and _"
LIST_TIMEOUT = 10.0


class RoomsUnavailable(Exception):
    """The list of rooms could not be read; the message says why."""


@dataclass(frozen=True)
class RoomInfo:
    """One entry of `GET /api/rooms`."""

    name: str
    people: int
    busy: bool


def normalise_room(raw: str) -> str | None:
    """The server's rule: trimmed and lower-cased, then 1-40 of a-z 0-9 - _; None if not."""
    name = raw.strip().lower()
    return name if ROOM_NAME.fullmatch(name) else None


def _base(url: str) -> str:
    return url.rstrip("/")


def room_link(url: str, room: str) -> str:
    """The web client's address for `room` on the server at `url`."""
    return f"{_base(url)}/r/{quote(room)}"


def _parse(body: Any) -> list[RoomInfo]:
    rooms = body.get("rooms") if isinstance(body, dict) else None
    if not isinstance(rooms, list):
        raise RoomsUnavailable("the server sent no list of rooms")
    parsed = []
    for room in rooms:
        if isinstance(room, dict) and isinstance(room.get("name"), str):
            people = room.get("people")
            count = people if isinstance(people, int) else 0
            parsed.append(RoomInfo(room["name"], count, bool(room.get("busy"))))
    return parsed


async def fetch_rooms(url: str, password: str | None) -> list[RoomInfo]:
    """The open and listed rooms, as the server orders them. Raises RoomsUnavailable."""
    headers = {"Authorization": f"Bearer {password}"} if password else {}
    timeout = aiohttp.ClientTimeout(total=LIST_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{_base(url)}/api/rooms", headers=headers) as response:
                if response.status == 401:
                    raise RoomsUnavailable("the server needs its password for the list of rooms")
                if response.status != 200:
                    raise RoomsUnavailable(f"the server answered HTTP {response.status}")
                body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        why = str(exc) or type(exc).__name__
        raise RoomsUnavailable(f"cannot read the list of rooms: {why}") from exc
    return _parse(body)
