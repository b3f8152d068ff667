"""Who is in the room: people, their sockets, and the identity rules of `register`."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..messages import is_safe_id, new_id, now_ms


class RoomError(Exception):
    """A request the room refuses; `code` and the message go back to the one client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Person:
    """One person in the room, possibly connected from several sockets."""

    user_id: str
    name: str
    since: int
    sids: set[str] = field(default_factory=set)
    # The person as the protocol lists them, built once and shared (do not mutate): a
    # newcomer's `welcome` lists everyone, so a large room would otherwise build thousands of
    # these per arrival.
    wire: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.wire = {"user_id": self.user_id, "name": self.name, "since": self.since}

    def to_wire(self) -> dict[str, Any]:
        return self.wire


def has_control_chars(text: str) -> bool:
    """True if `text` contains control, format, surrogate or line/paragraph separator
    characters (Unicode categories C*, Zl, Zp)."""
    return any(unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
               for ch in text)


def name_key(name: str) -> str:
    """What makes two nicknames the same: compatibility-normalised and case-folded, so that
    look-alikes ("Zoë" composed or decomposed, fullwidth "Ｂｏｂ") are one nickname."""
    return unicodedata.normalize("NFKC", name).casefold()


class Roster:
    """People by id and by nickname, and the socket ids bound to each."""

    def __init__(
        self, max_name_length: int = 32, max_people: int = 2000, reserved: tuple[str, ...] = ()
    ) -> None:
        self.max_name_length = max_name_length
        self.max_people = max_people
        self._reserved = {name_key(n) for n in ("system", *reserved)}
        self._people: dict[str, Person] = {}  # user_id -> person, in order of arrival
        self._by_name: dict[str, Person] = {}  # casefolded nickname -> person
        self._sid_user: dict[str, str] = {}  # sid -> user_id

    def __len__(self) -> int:
        return len(self._people)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sid_user

    def users(self) -> list[dict[str, Any]]:
        return [p.to_wire() for p in self._people.values()]

    def people(self) -> list[tuple[str, int]]:
        return [(p.name, p.since) for p in self._people.values()]

    def by_id(self, user_id: str) -> Person | None:
        return self._people.get(user_id)

    def of(self, sid: str) -> Person:
        """The person bound to `sid`, or `not_registered`."""
        user_id = self._sid_user.get(sid)
        if user_id is None:
            raise RoomError("not_registered", "Register with a nickname first.")
        return self._people[user_id]

    def bind(self, sid: str, user_id: object, raw_name: str) -> Person:
        """Attach `sid` to an existing person (same id and nickname) or to a new one."""
        if sid in self._sid_user:
            raise RoomError("already_registered", "This connection is already registered.")
        name = self._check_name(raw_name)
        key = name_key(name)
        if key in self._reserved:
            raise RoomError("name_taken", f"The nickname {name!r} is reserved; choose another.")
        holder = self._by_name.get(key)
        uid = user_id if is_safe_id(user_id) else None
        if holder is not None and holder.user_id != uid:
            raise RoomError("name_taken", f"The nickname {name!r} is taken; choose another.")
        if holder is None and len(self._people) >= self.max_people:
            raise RoomError("room_full", "The room is full; try again later.")
        if holder is None and uid is not None and uid in self._people:
            uid = None  # the id is online under another nickname: never merge identities
        person = holder or Person(uid or new_id("u"), name, now_ms())
        person.sids.add(sid)
        self._people[person.user_id] = person
        self._by_name[key] = person
        self._sid_user[sid] = person.user_id
        return person

    def unbind(self, sid: str) -> Person | None:
        """Forget `sid`; return its person if that was their last socket (they left)."""
        user_id = self._sid_user.pop(sid, None)
        if user_id is None:
            return None
        person = self._people[user_id]
        person.sids.discard(sid)
        if person.sids:
            return None
        del self._people[user_id]
        del self._by_name[name_key(person.name)]
        return person

    def _check_name(self, raw: str) -> str:
        return check_name(raw, self.max_name_length)


def check_name(raw: str, limit: int) -> str:
    """The nickname `raw` asks for, trimmed, or `invalid_name`."""
    name = raw.strip()
    if not name or len(name) > limit:
        raise RoomError("invalid_name", f"A nickname must be 1 to {limit} characters long.")
    if has_control_chars(name):
        raise RoomError("invalid_name", "A nickname may not contain control characters.")
    return name
