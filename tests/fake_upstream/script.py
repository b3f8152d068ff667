"""Scripted model behaviour: what the fake "model" does on its next turn.

Every model turn (one `responses.create`, one Assistants run step started by run creation or by
`submit_tool_outputs`, one `chat.completions.create`) pops one reply from the FakeUpstream queue.
Reply types:

- `Text`: answer with text, streamed in chunks.
- `ToolCalls`: request one or more function calls in that turn.
- Faults: `HTTPError`, `CutStream`, `Stall`, `Malformed` (see each class).

`reply_from_json` builds replies from the JSON accepted by `POST /_fake/enqueue`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """Split into word-sized pieces that keep their trailing whitespace ("".join == text)."""
    return _WORD.findall(text)


def split_args(arguments: str, size: int = 8) -> list[str]:
    """Split raw function-call arguments into pieces of `size` characters (at least one piece)."""
    if not arguments:
        return [""]
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


@dataclass
class Text:
    """The model answers `text`, streamed as `chunks` with `delay` seconds between deltas."""

    text: str
    chunks: list[str] | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        if self.chunks is None:
            self.chunks = split_words(self.text)
        elif "".join(self.chunks) != self.text:
            raise ValueError("Text.chunks must join to Text.text")

    def pieces(self) -> list[str]:
        return list(self.chunks or [])


@dataclass
class Call:
    """One function call: `arguments` is the raw string sent (may be invalid JSON on purpose)."""

    name: str
    arguments: str
    call_id: str | None = None


@dataclass
class ToolCalls:
    """The model requests these function calls in one turn."""

    calls: list[Call]
    delay: float | None = None

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError("ToolCalls needs at least one Call")


@dataclass
class HTTPError:
    """Answer the request with this HTTP status and the real error body, instead of a stream.

    `message`/`type`/`code` default to what the real API sends for that status (e.g. 429 →
    type "requests", code "rate_limit_exceeded"). `retry_after` adds `retry-after` (seconds) and
    `retry-after-ms` headers, which the SDK honours when retrying.
    """

    status: int
    message: str | None = None
    code: str | None = None
    retry_after: float | None = None
    type: str | None = None
    param: str | None = None


@dataclass
class CutStream:
    """Start streaming `text`; after `after_chunks` deltas drop the TCP connection abruptly.

    No terminal event is sent. With `clean=True` the HTTP body is ended properly instead (the
    client sees a normal end of stream that just lacks the terminal event / `[DONE]`).
    For non-streamed requests the connection is dropped before any response is sent.
    """

    after_chunks: int
    text: str
    clean: bool = False


@dataclass
class Stall:
    """Accept the request, send the headers (and the opening lifecycle events) then go silent.

    After `seconds` of silence the turn continues normally with `then` (default: the echo
    answer), so a client with a long enough timeout still gets a full answer.
    """

    seconds: float
    then: Text | ToolCalls | None = None


@dataclass
class Malformed:
    """Emit `after_chunks` good deltas, then an SSE `data:` line that is not valid JSON, then
    end the body. For non-streamed requests: a 200 response whose body is not valid JSON."""

    after_chunks: int = 0
    text: str = "Some partial answer that will be interrupted"


Reply = Text | ToolCalls | HTTPError | CutStream | Stall | Malformed


def reply_from_json(obj: dict[str, Any]) -> Reply:
    """Build a reply from its JSON form: `{"type": "text", "text": ...}`, `{"type":
    "tool_calls", "calls": [{"name", "arguments", "call_id"?}]}`, `{"type": "http_error",
    "status", ...}`, `{"type": "cut_stream", "after_chunks", "text"}`, `{"type": "stall",
    "seconds", "then"?}`, `{"type": "malformed", "after_chunks"?}`."""
    kind = obj.get("type")
    args = {k: v for k, v in obj.items() if k != "type"}
    if kind == "text":
        return Text(**args)
    if kind == "tool_calls":
        calls = [Call(**c) for c in args.pop("calls")]
        return ToolCalls(calls=calls, **args)
    if kind == "http_error":
        return HTTPError(**args)
    if kind == "cut_stream":
        return CutStream(**args)
    if kind == "stall":
        then = args.pop("then", None)
        reply = reply_from_json(then) if then else None
        if reply is not None and not isinstance(reply, Text | ToolCalls):
            raise ValueError("stall.then must be a text or tool_calls reply")
        return Stall(then=reply, **args)
    if kind == "malformed":
        return Malformed(**args)
    raise ValueError(f"unknown reply type {kind!r}")


def text_plan(reply: Reply, default_delay: float) -> tuple[list[str], int | None, float]:
    """For a text-producing reply: (pieces, index where a fault interrupts or None, delay)."""
    if isinstance(reply, Text):
        return reply.pieces(), None, reply.delay if reply.delay is not None else default_delay
    if isinstance(reply, CutStream | Malformed):
        return split_words(reply.text), reply.after_chunks, default_delay
    raise TypeError(f"not a text reply: {reply!r}")


def with_stop(pieces: list[str], stop_at: int | None) -> Iterator[tuple[int, str]]:
    """Enumerate pieces; yield (-1, "") at the point where a fault interrupts the stream."""
    for i, piece in enumerate(pieces):
        if stop_at is not None and i >= stop_at:
            yield -1, ""
            return
        yield i, piece
    if stop_at is not None:
        yield -1, ""
