"""When the assistant answers: every message (`always`), only when addressed (`mention`), or
when it decides it has something to add (`auto`)."""

from __future__ import annotations

import re

from .config import NO_REPLY, REPLY_MODES

__all__ = ["REPLY_MODES", "Mentions", "reply_note", "wants_run"]

# What everyone is told when someone switches the mode ("Alice set the assistant to ...").
SWITCHED = {
    "always": "answer every message",
    "mention": "answer when mentioned",
    "auto": "decide when to answer",
}

MENTIONED_NOTE = "{name} addressed you directly: answer them."
AUTO_NOTE = (
    "People in this room mostly talk to each other. If the latest message is not for you and "
    f"you have nothing useful to add, answer exactly {NO_REPLY} and nothing else; otherwise "
    "answer as usual."
)


class Mentions:
    """Finds mentions of the assistant: `@handle` or `@` and its name, case-insensitive, as a
    whole word (`@ai` and `@Roundtable AI`, not `@aiden` or `mail@ai`)."""

    def __init__(self, handle: str, name: str) -> None:
        names = sorted({handle, name} - {""}, key=len, reverse=True)
        alternatives = "|".join(re.escape(n) for n in names)
        self._pattern = re.compile(rf"(?<![\w@])@(?:{alternatives})(?!\w)", re.IGNORECASE)

    def found_in(self, text: str) -> bool:
        return self._pattern.search(text) is not None


def wants_run(mode: str, mentioned: bool) -> bool:
    """Whether a message starts a run in a room of this mode."""
    return mode != "mention" or mentioned


def reply_note(mode: str, mentioned: bool, nickname: str) -> str:
    """What a run's instructions add for the room's mode ('' in `always` rooms)."""
    if mode == "always":
        return ""
    if mentioned:
        return MENTIONED_NOTE.format(name=nickname)
    return AUTO_NOTE if mode == "auto" else ""
