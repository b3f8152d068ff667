"""What the terminal shows, as styled fragments: pure functions, no I/O.

A line is a list of `(style, text)` pairs (prompt_toolkit's formatted text); the plain screen
drops the styles, the prompt_toolkit screen renders them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prompt_toolkit.formatted_text import StyleAndTextTuples, fragment_list_to_text
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from .reply import Mentions
from .rooms import RoomInfo

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "name": "bold",
        "me": "bold ansigreen",
        "assistant": "bold ansicyan",
        "system": "ansiyellow",
        "meta": "italic #888888",
        "error": "ansired",
        "status": "#888888",
        "mention": "bold ansiblue",
        "mention-me": "bold ansiblack bg:ansiyellow",
    }
)

HELD_NOTICE = "(AI is answering — your message will be sent when it finishes)"
OFFLINE_NOTICE = "(not connected — your message will be sent once you are back in the room)"
HELP = (
    "Commands:",
    "  /who          who is online",
    "  /rooms        the open rooms (join one with --room NAME)",
    "  /stop         stop the AI's answer (also Ctrl-S)",
    "  /reply MODE   when the AI answers: always, mention (@ai) or auto (it decides)",
    "  /quit         leave (also Ctrl-D or Ctrl-C)",
    "  //text        send a line that starts with /",
    "Where the AI answers every message, what you send while it answers waits and goes out",
    "when it finishes; in mention and auto rooms it goes out at once.",
)


def clock(ms: object) -> str:
    """`created_at` (ms since the epoch) as local HH:MM; now if missing or malformed."""
    when = datetime.fromtimestamp(ms / 1000) if isinstance(ms, int | float) else datetime.now()
    return when.strftime("%H:%M")


def plain(line: StyleAndTextTuples) -> str:
    """The text of a line without its styles."""
    return fragment_list_to_text(line)


def meta(text: str) -> StyleAndTextTuples:
    """A grey notice such as a join line or a hint."""
    return [("class:meta", text)]


def error(text: str) -> StyleAndTextTuples:
    """An error line: `error: <message>`."""
    return [("class:error", f"error: {text}")]


def name_class(msg: Mapping[str, Any], my_id: str | None) -> str:
    """The style of the sender's name: me, the assistant, a notice, or someone else."""
    role = msg.get("role")
    if role == "assistant":
        return "class:assistant"
    if role == "system":
        return "class:system"
    return "class:me" if my_id is not None and msg.get("user_id") == my_id else "class:name"


def prefix(msg: Mapping[str, Any], my_id: str | None) -> StyleAndTextTuples:
    """`[HH:MM] Name: ` for one message."""
    return [
        ("class:time", f"[{clock(msg.get('created_at'))}] "),
        (name_class(msg, my_id), str(msg.get("name") or "?")),
        ("", ": "),
    ]


def message(
    msg: Mapping[str, Any], my_id: str | None, mentions: Mentions | None = None
) -> StyleAndTextTuples:
    """A whole message line with its @mentions highlighted, marked when the answer was cut
    short."""
    content = str(msg.get("content") or "")
    if msg.get("role") == "system":
        body: StyleAndTextTuples = [("class:system", content)]
    elif mentions is not None:
        body = mentions.fragments(content)
    else:
        body = [("", content)]
    line = [*prefix(msg, my_id), *body]
    if msg.get("incomplete"):
        line.append(("class:meta", " [cut short]"))
    return line


def joined(name: str) -> StyleAndTextTuples:
    return meta(f"→ {name} joined")


def left(name: str) -> StyleAndTextTuples:
    return meta(f"← {name} left")


def tool_status(call: Mapping[str, Any]) -> StyleAndTextTuples | None:
    """`  ⋯ using <tool>…` when a tool call starts, a line if it failed, else nothing."""
    tool = call.get("name") or "a tool"
    status = call.get("status")
    if status == "started":
        return meta(f"  ⋯ using {tool}…")
    if status == "failed":
        return meta(f"  ⋯ {tool} failed")
    return None


def who(users: list[tuple[str, int | None]], me: str | None) -> list[StyleAndTextTuples]:
    """The `/who` listing: a header, then one line per person (name, since when)."""
    lines = [meta(f"Online now ({len(users)}):")]
    for name, since in users:
        you = " (you)" if name == me else ""
        when = f", since {clock(since)}" if since is not None else ""
        lines.append([("class:name", f"  {name}"), ("class:meta", f"{you}{when}")])
    return lines


def room(name: str, link: str) -> StyleAndTextTuples:
    """The room's header line: its name and the link that opens it in a browser."""
    return [("class:meta", "— room "), ("class:name", name), ("class:meta", f" · {link}")]


def rooms(listed: list[RoomInfo], current: str | None) -> list[StyleAndTextTuples]:
    """The `/rooms` listing: a header, then one line per room (people, busy, yours)."""
    if not listed:
        return [meta("No rooms are open.")]
    out = [meta(f"Rooms ({len(listed)}):")]
    for entry in listed:
        people = f"{entry.people} {'person' if entry.people == 1 else 'people'}"
        notes = people + (", answering" if entry.busy else "")
        here = " (you are here)" if entry.name == current else ""
        out.append([("class:name", f"  {entry.name}"), ("class:meta", f"  {notes}{here}")])
    return out


DEMO_NOTE = "a small local demo model: set OPENAI_API_KEY or OPENAI_BASE_URL for real answers"


def welcome(name: str, users: list[str], answers: str, again: bool) -> list[StyleAndTextTuples]:
    """The lines shown once registered (shorter when rejoining after a reconnect); `answers`
    says how the assistant answers here."""
    online = ", ".join(f"{u} (you)" if u == name else u for u in users)
    if again:
        return [meta(f"— back in the room as {name}; online: {online}")]
    return [
        meta(f"— joined as {name}; online: {online}"),
        meta(f"  {answers}"),
        meta("  Type a message and press Enter; /help lists the commands."),
    ]


def reply_changed(by: str, answers: str) -> StyleAndTextTuples:
    """A room-settings change: who switched the mode, and how the assistant answers now."""
    return meta(f"— {by} switched reply mode: {answers}")


def wrap_rows(text: str, width: int) -> list[str]:
    """Split `text` into screen rows of at most `width` cells (hard wrap, like a terminal)."""
    rows: list[str] = []
    for paragraph in text.split("\n"):
        row, used = "", 0
        for ch in paragraph:
            cells = get_cwidth(ch)
            if used + cells > width and row:
                rows.append(row)
                row, used = "", 0
            row, used = row + ch, used + cells
        rows.append(row)
    return rows


def live_tail(
    head: StyleAndTextTuples, text: str, width: int, max_rows: int
) -> StyleAndTextTuples:
    """The streaming answer hard-wrapped to the screen (the prompt's area does not wrap by
    itself): all of it, or its last rows when it is taller than `max_rows`."""
    width = max(width, 10)
    start = plain(head)
    rows = wrap_rows(start + text, width)
    if len(rows) > max_rows:
        name = start.rstrip(": ")
        tail = "\n".join(rows[-max(max_rows - 1, 1) :])
        return [("class:meta", f"{name} (continued)…\n"), ("", tail)]
    wrapped = "\n".join(rows)
    if len(rows[0]) < len(start):  # a screen too narrow even for the name: no styling
        return [("", wrapped)]
    return [*head, ("", wrapped[len(start) :])]
