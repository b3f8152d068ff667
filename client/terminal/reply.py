"""Reply modes and mentions as this terminal sees them: when the assistant answers in the room
(`always`, `mention`, `auto`; only `always` holds what you type while it answers), and
`@name` mentions, matched as the server matches the assistant's (case-insensitive, a whole word:
`@aiden` is not `@ai`, `mail@ai` is no mention)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from prompt_toolkit.formatted_text import StyleAndTextTuples

REPLY_MODES = ("always", "mention", "auto")
USAGE = "usage: /reply always|mention|auto"


def mention_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """`@` and any of `names` (longest first) as a whole word, or None when there are none."""
    unique = sorted({n for n in names if n}, key=len, reverse=True)
    if not unique:
        return None
    alternatives = "|".join(re.escape(n) for n in unique)
    return re.compile(rf"(?<![\w@])@(?:{alternatives})(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Mentions:
    """Who can be mentioned in the room now, and which of them is you."""

    names: tuple[str, ...]
    me: str | None

    def of_me(self, text: str) -> bool:
        """Whether `text` mentions you."""
        pattern = mention_pattern([self.me] if self.me else [])
        return pattern is not None and pattern.search(text) is not None

    def fragments(self, text: str, style: str = "") -> StyleAndTextTuples:
        """`text` as styled fragments, each mention in `class:mention` (yours: `mention-me`)."""
        pattern = mention_pattern([*self.names, *([self.me] if self.me else [])])
        if pattern is None:
            return [(style, text)]
        out: StyleAndTextTuples = []
        last = 0
        for match in pattern.finditer(text):
            if match.start() > last:
                out.append((style, text[last : match.start()]))
            mine = self.me is not None and match.group(0)[1:].casefold() == self.me.casefold()
            out.append(("class:mention-me" if mine else "class:mention", match.group(0)))
            last = match.end()
        if last < len(text):
            out.append((style, text[last:]))
        return out


@dataclass
class ReplyMode:
    """The room's reply mode as the server told it (welcome.room, room-settings)."""

    mode: str = "always"
    locked: bool = False  # the server's ROOMS_FILE fixes it
    handle: str = "ai"

    @property
    def holds_input(self) -> bool:
        """Only `always` rooms make what you type wait while the assistant answers."""
        return self.mode == "always"

    def expects_turn(self, text: str, assistant: str) -> bool:
        """Whether a message of ours will surely start a run (`auto` may stay silent)."""
        if self.mode == "always":
            return True
        if self.mode == "mention":
            pattern = mention_pattern([self.handle, assistant])
            return pattern is not None and pattern.search(text) is not None
        return False

    def describe(self, assistant: str) -> str:
        """'Roundtable AI answers when mentioned (@ai)' and whether it can be changed."""
        what = {
            "always": "answers every message",
            "mention": f"answers when mentioned (@{self.handle})",
            "auto": "decides when to answer",
        }.get(self.mode, f"answers in mode {self.mode}")
        change = " (fixed by the server)" if self.locked else " · /reply to change"
        return f"{assistant} {what}{change}"
