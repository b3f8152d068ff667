"""Room names and configured rooms (`ROOMS_FILE`, a TOML file with one table per room)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .roster import RoomError

ROOM_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")
REPLY_MODES = ("always", "mention", "auto")
# What a model answers when it chooses to stay silent (rooms whose reply mode is `auto`).
NO_REPLY = "NO_REPLY"


def room_name(raw: object) -> str:
    """The room's name: trimmed and lower-cased, 1-40 of a-z 0-9 - _ (else `invalid_room`)."""
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not ROOM_NAME.match(name):
        raise RoomError(
            "invalid_room",
            "A room name is 1 to 40 characters of a-z, 0-9, '-' and '_'.",
        )
    return name


@dataclass(frozen=True)
class RoomConfig:
    """What `ROOMS_FILE` says of one room; every key is optional."""

    name: str
    instructions: str = ""
    password: str = ""
    listed: bool = True
    max_participants: int | None = None
    reply: str | None = None  # fixes the room's reply mode (REPLY_MODES)
    configured: bool = False


class RoomsFileError(Exception):
    """`ROOMS_FILE` cannot be used; the message names the file, the room and the key."""


_KEYS: dict[str, type] = {
    "instructions": str, "password": str, "listed": bool, "max_participants": int,
    "reply": str,
}


def load_rooms_file(path: str) -> dict[str, RoomConfig]:
    """The configured rooms by name; `path` empty means none."""
    if not path:
        return {}
    try:
        with Path(path).open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise RoomsFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RoomsFileError(f"{path}: not valid TOML ({exc})") from None
    extra = sorted(set(data) - {"rooms"})
    if extra:
        raise RoomsFileError(f"{path}: unknown table {extra[0]!r}; rooms go in [rooms.<name>]")
    rooms = data.get("rooms", {})
    if not isinstance(rooms, dict):
        raise RoomsFileError(f"{path}: 'rooms' must be a table of [rooms.<name>] tables")
    return {name: _room(path, key, table) for key, table in rooms.items()
            for name in [_name(path, key)]}


def _name(path: str, key: str) -> str:
    try:
        name = room_name(key)
    except RoomError:
        raise RoomsFileError(
            f"{path}: room {key!r}: a room name is 1 to 40 characters of a-z, 0-9, '-' and '_'"
        ) from None
    if name != key:
        raise RoomsFileError(f"{path}: room {key!r}: write the name as {name!r}")
    return name


def _room(path: str, name: str, table: Any) -> RoomConfig:
    if not isinstance(table, dict):
        raise RoomsFileError(f"{path}: room {name!r}: must be a table [rooms.{name}]")
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = _KEYS.get(key)
        if kind is None:
            known = ", ".join(_KEYS)
            raise RoomsFileError(f"{path}: room {name!r}: unknown key {key!r} (known: {known})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RoomsFileError(
                f"{path}: room {name!r}: key {key!r} must be a {kind.__name__}, got {value!r}"
            )
        if key == "max_participants" and isinstance(value, int) and value < 1:
            raise RoomsFileError(f"{path}: room {name!r}: key 'max_participants' must be >= 1")
        if key == "reply" and value not in REPLY_MODES:
            raise RoomsFileError(f"{path}: room {name!r}: key 'reply' must be one of "
                                 f"{', '.join(REPLY_MODES)}, got {value!r}")
        values[key] = value
    return RoomConfig(name, configured=True, **values)
