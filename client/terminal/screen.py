"""Where lines go and where input comes from: a prompt_toolkit screen for terminals, plain lines
for pipes. The chat logic talks to either through the `Screen` protocol."""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout

from . import lines
from .lines import STYLE


class Quit(Exception):
    """The person asked to leave (Ctrl-C)."""


class Screen(Protocol):
    """What the chat needs from a terminal."""

    drain_on_eof: bool  # at end of input, wait for our messages to be answered before leaving

    def active(self) -> AbstractContextManager[object]: ...
    def show(self, line: StyleAndTextTuples) -> None: ...
    def stream_open(self, head: StyleAndTextTuples, text: str) -> None: ...
    def stream_add(self, text: str) -> None: ...
    def stream_end(self, line: StyleAndTextTuples) -> None: ...
    def set_status(self, status: str) -> None: ...
    def bell(self) -> None: ...
    async def read_line(self) -> str | None: ...
    async def ask(self, question: str, secret: bool = False) -> str | None: ...
    async def close(self) -> None: ...


def is_interactive(stdin: TextIO, stdout: TextIO, term: str | None) -> bool:
    """True when both ends are a real (non-dumb) terminal: use the full-screen prompt."""
    return stdin.isatty() and stdout.isatty() and (term or "dumb") != "dumb"


class PromptScreen:
    """prompt_toolkit: one input line that stays at the bottom while the chat scrolls above it.

    The answer being streamed lives just above the input line and grows in place; when it is
    finished it is printed once into the scrollback. The prompt application runs for the whole
    session (accepting a line does not end it), so every printed line goes through
    `run_in_terminal` in order.
    """

    drain_on_eof = False

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self._head: StyleAndTextTuples = []
        self._text = ""
        self._streaming = False
        self._status = ""
        self._lines: asyncio.Queue[str | Quit | None] = asyncio.Queue()
        self._app_task: asyncio.Task[None] | None = None
        self._session: PromptSession[str] = PromptSession(
            message=self._message,
            key_bindings=self._bindings(),
            erase_when_done=True,
            style=STYLE,
            include_default_pygments_style=False,
        )
        self._session.default_buffer.accept_handler = self._accept

    def _bindings(self) -> KeyBindings:
        bindings = KeyBindings()

        @bindings.add("c-s")
        def _stop(event: KeyPressEvent) -> None:
            self._on_stop()

        return bindings

    def _accept(self, buffer: object) -> bool:
        text = self._session.default_buffer.text
        self._lines.put_nowait(text)
        return False  # clear the input line; the application keeps running

    def _message(self) -> StyleAndTextTuples:
        parts: StyleAndTextTuples = []
        if self._streaming:
            size = self._session.app.output.get_size()
            rows = max(size.rows - 4, 3)
            parts += lines.live_tail(self._head, self._text, size.columns, rows)
            parts.append(("", "\n"))
        if self._status:
            parts += [("class:status", self._status), ("", "\n")]
        parts.append(("class:prompt", "> "))
        return parts

    def active(self) -> AbstractContextManager[object]:
        return patch_stdout(raw=True)

    def _redraw(self) -> None:
        self._session.app.invalidate()

    def show(self, line: StyleAndTextTuples) -> None:
        print_formatted_text(FormattedText(line), style=STYLE, include_default_pygments_style=False)

    def stream_open(self, head: StyleAndTextTuples, text: str) -> None:
        self._head, self._text, self._streaming = head, text, True
        self._redraw()

    def stream_add(self, text: str) -> None:
        self._text += text
        self._redraw()

    def stream_end(self, line: StyleAndTextTuples) -> None:
        self._head, self._text, self._streaming = [], "", False
        self.show(line)
        self._redraw()

    def set_status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._redraw()

    def bell(self) -> None:
        self._session.app.output.bell()

    async def read_line(self) -> str | None:
        if self._app_task is None:
            self._app_task = asyncio.create_task(self._run_app(), name="prompt")
        item = await self._lines.get()
        if isinstance(item, Quit):
            raise item
        return item

    async def _run_app(self) -> None:
        try:
            await self._session.prompt_async(handle_sigint=False)
            self._lines.put_nowait(None)
        except EOFError:
            self._lines.put_nowait(None)
        except KeyboardInterrupt:
            self._lines.put_nowait(Quit())

    async def ask(self, question: str, secret: bool = False) -> str | None:
        session: PromptSession[str] = PromptSession()
        try:
            return await session.prompt_async(question, is_password=secret, handle_sigint=False)
        except EOFError:
            return None
        except KeyboardInterrupt:
            raise Quit() from None

    async def close(self) -> None:
        """End the prompt application (erasing the input line)."""
        task, self._app_task = self._app_task, None
        if task is None:
            return
        app = self._session.app
        if app.is_running and app.future is not None and not app.future.done():
            app.exit()
        await asyncio.wait({task}, timeout=2)
        task.cancel()


class PlainScreen:
    """Plain lines for pipes and dumb terminals: no escape codes, one message per line.

    A streamed answer is written piece by piece on one line; if another line must be shown
    meanwhile, the answer's line is ended and continues on a new line after it.
    """

    drain_on_eof = True

    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        self._in, self._out = stdin, stdout
        self._head = ""
        self._printed: str | None = None  # what this line of the answer shows so far
        self._open = False  # the answer's line is the last thing written, without newline
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None

    def active(self) -> AbstractContextManager[object]:
        return nullcontext()

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away; keep the session going until input ends

    def _break(self) -> None:
        if self._open:
            self._write("\n")
            self._open, self._printed = False, None

    def show(self, line: StyleAndTextTuples) -> None:
        self._break()
        self._write(lines.plain(line) + "\n")

    def stream_open(self, head: StyleAndTextTuples, text: str) -> None:
        self._break()
        self._head = lines.plain(head)
        self._printed = self._head + text
        self._write(self._printed)
        self._open = True

    def stream_add(self, text: str) -> None:
        if not self._open:
            self._write(self._head.rstrip(": ") + " (continued): ")
            self._open = True
        if self._printed is not None:
            self._printed += text
        self._write(text)

    def stream_end(self, line: StyleAndTextTuples) -> None:
        full = lines.plain(line)
        if self._open and self._printed is not None and full.startswith(self._printed):
            self._write(full[len(self._printed) :])
        if self._open:
            self._write("\n")
        self._open, self._printed, self._head = False, None, ""

    def set_status(self, status: str) -> None:
        pass  # plain output shows notices as lines instead

    def bell(self) -> None:
        if self._out.isatty():  # a dumb terminal still rings; a pipe gets no control characters
            self._write("\a")

    def _start_reader(self) -> None:
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for raw in self._in:
                loop.call_soon_threadsafe(self._lines.put_nowait, raw.rstrip("\r\n"))
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        # A daemon thread: a blocked read of stdin must never keep the process alive.
        self._reader = threading.Thread(target=pump, name="stdin-reader", daemon=True)
        self._reader.start()

    async def read_line(self) -> str | None:
        if self._reader is None:
            self._start_reader()
        return await self._lines.get()

    async def ask(self, question: str, secret: bool = False) -> str | None:
        if not self._in.isatty():
            return None
        if secret and self._reader is None:
            return await asyncio.to_thread(getpass.getpass, question)
        self._write(question)
        return await self.read_line()

    async def close(self) -> None:
        self._break()
