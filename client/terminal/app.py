"""Run the terminal client: connect (asking for the server password if refused), pick a nickname
(and a room's own password when it has one), then read lines until /quit, Ctrl-D or Ctrl-C, and
leave cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass

from . import lines
from .chat import Chat, ConnectFailed
from .screen import PlainScreen, PromptScreen, Quit, Screen, is_interactive

PASSWORD_TRIES = 3
NAME_TRIES = 5
RETRY_NAME = {"name_taken", "invalid_name"}


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    url: str
    name: str | None = None
    password: str | None = None
    user_id: str | None = None
    room: str | None = None  # None: the server's default room
    room_password: str | None = None


class Refused(Exception):
    """The session cannot start; the message says why."""


def make_screen(chat_stop: list[Chat]) -> Screen:
    """The prompt_toolkit screen on a real terminal, plain lines otherwise."""
    if is_interactive(sys.stdin, sys.stdout, os.environ.get("TERM")):
        return PromptScreen(on_stop=lambda: chat_stop[0].stop() if chat_stop else None)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    return PlainScreen()


async def run(options: Options) -> int:
    """The whole session; returns the process exit code."""
    holder: list[Chat] = []
    screen = make_screen(holder)
    chat = Chat(options.url, screen, options.user_id, options.room)
    chat.room_password = options.room_password
    holder.append(chat)
    with screen.active():
        session = asyncio.create_task(_session(chat, screen, options), name="session")
        _on_signals(session)
        try:
            return await session
        except (asyncio.CancelledError, Quit):
            return 0
        except Refused as exc:
            if str(exc):
                screen.show(lines.error(str(exc)))
            return 1
        finally:
            await screen.close()
            await chat.close()


def _on_signals(session: asyncio.Task[int]) -> None:
    """SIGINT and SIGTERM end the session the same way /quit does."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, session.cancel)


async def _session(chat: Chat, screen: Screen, options: Options) -> int:
    await _connect(chat, screen, options.password)
    await _register(chat, screen, options.name)
    await _talk(chat, screen)
    return 0


async def _connect(chat: Chat, screen: Screen, password: str | None) -> None:
    """Connect; if the server refuses us, ask for the room password (a few times)."""
    for _ in range(PASSWORD_TRIES):
        try:
            await chat.connect(password)
            return
        except ConnectFailed as exc:
            if not exc.refused:
                raise Refused(f"cannot connect to {chat.url}: {exc.message}") from exc
            screen.show(lines.error(exc.message or "the server refused the connection"))
            password = await screen.ask("Room password: ", secret=True)
            if password is None:
                need = "this room needs a password (--password or ROUNDTABLE_PASSWORD)"
                raise Refused(need) from exc
    raise Refused("too many wrong passwords")


async def _register(chat: Chat, screen: Screen, name: str | None) -> None:
    """Register, asking for another nickname (or the room's password) while refused."""
    password_tries = PASSWORD_TRIES
    for _ in range(NAME_TRIES + PASSWORD_TRIES):
        while not name or not name.strip():
            name = await screen.ask("Nickname: ")
            if name is None:
                raise Refused("a nickname is needed (--name)")
        refusal = await chat.register(name.strip())
        if refusal is None:
            return
        shown = refusal.code != "no_reply"  # the server's `error` event is already on screen
        if refusal.code == "wrong_password" and password_tries > 0:
            password_tries -= 1
            chat.room_password = await screen.ask(f"Password for {_room_of(chat)}: ", secret=True)
            if chat.room_password is None:
                raise Refused("")  # not interactive: the server's message is on screen
            continue
        if refusal.code not in RETRY_NAME:
            raise Refused("" if shown else refusal.message)
        name = await screen.ask("Choose another nickname: ")
        if name is None:
            raise Refused("" if shown else refusal.message)
    raise Refused("too many refused nicknames or passwords")


def _room_of(chat: Chat) -> str:
    return f"room {chat.room}" if chat.room else "this room"


async def _talk(chat: Chat, screen: Screen) -> None:
    """Read lines until the person leaves."""
    while True:
        line = await screen.read_line()
        if line is None:
            if screen.drain_on_eof:
                await chat.settled()
            return
        if line.strip().lower() == "/rooms":
            await chat.list_rooms()  # awaited, so piped input sees the list in order
            continue
        words = line.split()
        if words and words[0].lower() == "/reply":
            await chat.set_reply(" ".join(words[1:]).lower())  # awaited: later lines see the mode
            continue
        if not _handle(chat, screen, line):
            return


def _handle(chat: Chat, screen: Screen, line: str) -> bool:
    """Act on one typed line; False to leave."""
    text = line.strip()
    if not text:
        return True
    command = text.lower()
    if command in ("/quit", "/exit", "/q"):
        return False
    if command == "/who":
        chat.who()
    elif command == "/stop":
        chat.stop()
    elif command in ("/help", "/?"):
        for help_line in lines.HELP:
            screen.show(lines.meta(help_line))
    elif text.startswith("//"):
        chat.submit(line.lstrip()[1:])
    elif text.startswith("/"):
        screen.show(lines.meta(f"unknown command {text.split()[0]}; /help lists them"))
    else:
        chat.submit(line)
    return True
