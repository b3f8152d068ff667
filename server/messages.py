"""The chat message: the one shape every layer and every client shares."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeGuard

Role = Literal["user", "assistant", "system"]

SAFE_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,64}$")


def now_ms() -> int:
    """Current time in milliseconds since the epoch, as `created_at` uses."""
    return time.time_ns() // 1_000_000


def new_id(prefix: str) -> str:
    """A fresh random id such as `m_4f1c2a9b0d3e4f5a`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def is_safe_id(value: object) -> TypeGuard[str]:
    """True if a client-chosen id may be kept as it is."""
    return isinstance(value, str) and SAFE_ID.match(value) is not None


@dataclass
class Message:
    """`{id, user_id, name, role, content, created_at}` as in the original app."""

    id: str
    user_id: str | None
    name: str
    role: Role
    content: str
    created_at: int
    incomplete: bool = False
    reply_to: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to clients; optional fields only when set."""
        data = asdict(self)
        if not self.incomplete:
            del data["incomplete"]
        if self.reply_to is None:
            del data["reply_to"]
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Message:
        """The message a `to_wire` object describes."""
        return cls(data["id"], data.get("user_id"), data["name"], data["role"], data["content"],
                   data["created_at"], bool(data.get("incomplete")), data.get("reply_to"))

    @classmethod
    def system(cls, content: str) -> Message:
        """A system notice for the room."""
        return cls(new_id("s"), None, "system", "system", content, now_ms())
