"""Rooms: the registry, and one room per name (membership, turns, transcript).

Knows nothing of sockets, HTTP or Redis; see GUIDE.md's house plan."""

from __future__ import annotations

from .config import RoomConfig, RoomsFileError, load_rooms_file, room_name
from .emitter import Emitter, Fanout
from .registry import RegistryPolicy, RoomRegistry
from .registry import Room as OpenRoom
from .room import Room, RoomLimits, run_instructions
from .roster import RoomError

__all__ = [
    "Emitter", "Fanout", "OpenRoom", "RegistryPolicy", "Room", "RoomConfig", "RoomError",
    "RoomLimits", "RoomRegistry", "RoomsFileError", "load_rooms_file", "room_name",
    "run_instructions",
]
