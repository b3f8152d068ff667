"""The room as this terminal sees it: one python-socketio AsyncClient, the people online, the
answer being streamed, the reply mode, and the lock (in rooms where the AI answers every message,
lines typed while it answers wait here)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import socketio

from . import lines
from .reply import REPLY_MODES, USAGE, Mentions, ReplyMode
from .rooms import RoomsUnavailable, fetch_rooms, room_link
from .screen import Screen

logger = logging.getLogger(__name__)

RECONNECT_DELAY = 0.5
RECONNECT_DELAY_MAX = 5.0


class ConnectFailed(Exception):
    """The server could not be reached, or refused the connection (`refused` is True)."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


@dataclass(frozen=True)
class Refusal:
    """A request the server turned down: `{"ok": false, "code", "message"}`."""

    code: str
    message: str


def _as_dict(data: object) -> dict[str, Any]:
    return data if isinstance(data, dict) else {}


class Chat:
    """Connection, room state and the local message lock for one person."""

    def __init__(
        self, url: str, screen: Screen, user_id: str | None = None, room: str | None = None
    ) -> None:
        self.url = url
        self.name: str | None = None
        self.user_id = user_id
        self.room = room  # the room asked for (None: the server's default room)
        self.room_password: str | None = None  # only for a room that has its own password
        self.room_name: str | None = None  # the room the server put us in
        self.assistant = "assistant"
        self.reply = ReplyMode()
        self._screen = screen
        self._sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=RECONNECT_DELAY,
            reconnection_delay_max=RECONNECT_DELAY_MAX,
        )
        self._users: dict[str, tuple[str, int | None]] = {}  # user_id -> (name, since)
        self._seen: set[str] = set()  # message ids already shown
        self._stream: dict[str, Any] | None = None  # the answer being streamed
        self._busy = False  # the AI is answering (ai-start .. ai-end)
        self._awaiting = False  # we sent a message and its turn has not started yet
        self._unacked = 0  # messages sent that the server has not acknowledged yet
        self._registered = False
        self._joined_once = False
        self._closing = False
        self._refusal = ""
        self._auth: dict[str, str] | None = None
        self._held: deque[str] = deque()
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._send_lock = asyncio.Lock()
        self._bind()

    def _bind(self) -> None:
        on = self._sio.on
        on("connect", self._on_connect)
        on("connect_error", self._on_connect_error)
        on("disconnect", self._on_disconnect)
        for event, handler in {
            "welcome": self._on_welcome,
            "message-list": self._on_message_list,
            "message": self._on_message,
            "join": self._on_join,
            "leave": self._on_leave,
            "ai-start": self._on_ai_start,
            "message-start": self._on_message_start,
            "message-delta": self._on_message_delta,
            "ai-end": self._on_ai_end,
            "tool-call": self._on_tool_call,
            "room-settings": self._on_room_settings,
            "error": self._on_error,
        }.items():
            on(event, handler)

    # ----- connecting and registering -----
    async def connect(self, password: str | None) -> None:
        """Connect once; reconnection after that is automatic. Raises ConnectFailed."""
        self._auth = {"token": password} if password else None
        self._refusal = ""
        try:
            await self._sio.connect(self.url, auth=self._auth, wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            refused = bool(self._sio.failed_namespaces)
            raise ConnectFailed(self._refusal or str(exc), refused) from exc

    async def register(self, name: str) -> Refusal | None:
        """Register with a nickname; None when the room welcomed us."""
        payload: dict[str, str] = {"name": name}
        if self.user_id:
            payload["user_id"] = self.user_id
        if self.room:
            payload["room"] = self.room
        if self.room_password:
            payload["password"] = self.room_password
        try:
            reply = _as_dict(await self._sio.call("register", payload, timeout=15))
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            return Refusal("no_reply", "The server did not answer the registration.")
        if reply.get("ok"):
            self._joined_once = True
            return None
        return Refusal(str(reply.get("code", "")), str(reply.get("message", "")))

    async def _rejoin(self) -> None:
        if self.name is None:
            return
        refusal = await self.register(self.name)
        if refusal is not None:
            self._screen.show(lines.meta("Could not rejoin the room; /quit and start again."))

    async def _reconnect(self) -> None:
        """Reconnect after the server closed our connection (e.g. it restarted): python-socketio
        retries by itself only after a dropped connection, not after a server disconnect."""
        delay = RECONNECT_DELAY
        while not self._closing and not self._sio.connected:
            await asyncio.sleep(delay)
            if self._sio.eio.state != "disconnected":
                continue  # the old connection is still closing
            try:
                await self._sio.connect(self.url, auth=self._auth, wait_timeout=10)
            except (socketio.exceptions.ConnectionError, ValueError):
                if self._sio.failed_namespaces:
                    self._screen.show(lines.error(self._refusal or "the server refused us"))
                    return
                delay = min(delay * 2, RECONNECT_DELAY_MAX)

    async def close(self) -> None:
        """Leave: disconnect cleanly (the server sees a disconnect) and stop reconnecting."""
        self._closing = True
        try:
            await asyncio.wait_for(self._sio.shutdown(), timeout=5)
        except TimeoutError:
            logger.warning("disconnect took too long")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- what the person does -----
    def submit(self, text: str) -> None:
        """Send a line now, or hold it until the room is free."""
        if self._locked():
            self._held.append(text)
            notice = lines.HELD_NOTICE if self._registered else lines.OFFLINE_NOTICE
            self._screen.show(lines.meta(notice))
            self._refresh()
            return
        self._send(text)

    def stop(self) -> None:
        """Ask the server to stop the answer being written (the room then posts a notice)."""
        if not self._busy:
            self._screen.show(lines.meta("(the AI is not answering)"))
            return
        self._screen.show(lines.meta("(asking the AI to stop…)"))
        self._spawn(self._sio.emit("stop", callback=self._on_stop_ack))

    def _on_stop_ack(self, reply: object = None) -> None:
        if _as_dict(reply).get("stopped") is False:
            self._screen.show(lines.meta("(there was no answer to stop)"))

    def who(self) -> None:
        """Show who is online."""
        for line in lines.who(list(self._users.values()), self.name):
            self._screen.show(line)

    async def list_rooms(self) -> None:
        """Show the open rooms (`/rooms`)."""
        try:
            listed = await fetch_rooms(self.url, (self._auth or {}).get("token"))
        except RoomsUnavailable as exc:
            self._screen.show(lines.error(str(exc)))
            return
        for line in lines.rooms(listed, self.room_name):
            self._screen.show(line)

    async def set_reply(self, mode: str) -> None:
        """Switch the room's reply mode (`/reply MODE`); the server's refusal arrives as an
        `error` and is shown like any other."""
        if not mode:
            self._screen.show(lines.meta(f"{self.reply.describe(self.assistant)}; {USAGE}"))
            return
        if mode == self.reply.mode:
            self._screen.show(lines.meta(f"(already so: {self.reply.describe(self.assistant)})"))
            return
        try:
            reply = _as_dict(await self._sio.call("room-settings", {"reply": mode}, timeout=10))
        except socketio.exceptions.SocketIOError:
            self._screen.show(lines.error("not connected; the mode was not changed"))
            return
        if reply.get("ok") and reply.get("reply") in REPLY_MODES:
            self.reply.mode = str(reply["reply"])
        elif reply.get("code") == "settings_locked":
            self.reply.locked = True
        self._pump()

    async def settled(self) -> None:
        """Wait until nothing of ours is waiting and the AI is not answering."""
        await self._idle.wait()

    # ----- the lock -----
    def _locked(self) -> bool:
        """Whether a line typed now must wait: only `always` rooms hold input for the AI."""
        if not self._registered:
            return True
        return self.reply.holds_input and (self._busy or self._awaiting)

    def _refresh(self) -> None:
        waiting = self._busy or self._awaiting or self._unacked > 0
        idle = not self._locked() and not self._held and not waiting
        if idle:
            self._idle.set()
        else:
            self._idle.clear()
        self._screen.set_status(self._status())

    def _status(self) -> str:
        if not self._registered:
            return "connecting…" if self._joined_once else ""
        waiting = f" · {len(self._held)} waiting" if self._held else ""
        if self._busy:
            return f"{self.assistant} is answering · Ctrl-S or /stop to stop it{waiting}"
        if not self.reply.holds_input:
            waiting = f" · {self.reply.describe(self.assistant)}{waiting}"
        return waiting.lstrip(" ·")

    def _send(self, text: str) -> None:
        """Show our line, lock until its turn starts, and emit it (in order, via a lock)."""
        message_id = f"t_{secrets.token_hex(8)}"
        self._seen.add(message_id)
        mine = {
            "user_id": self.user_id,
            "name": self.name,
            "role": "user",
            "content": text,
            "created_at": int(time.time() * 1000),
        }
        self._screen.show(lines.message(mine, self.user_id, self._mentions()))
        self._awaiting = self._awaiting or self.reply.expects_turn(text, self.assistant)
        self._unacked += 1
        self._refresh()
        self._spawn(self._emit_message({"content": text, "id": message_id}))

    async def _emit_message(self, payload: dict[str, str]) -> None:
        async with self._send_lock:
            try:
                await self._sio.emit("message", payload, callback=self._on_ack)
            except socketio.exceptions.SocketIOError:
                self._screen.show(lines.error("not connected; the message was not sent"))
                self._on_ack(None)

    def _on_ack(self, reply: object = None) -> None:
        self._unacked = max(self._unacked - 1, 0)
        if not _as_dict(reply).get("ok", False):
            self._awaiting = False  # refused: no turn will start for it
        self._pump()

    def _pump(self) -> None:
        """Send the next held line if the room is free."""
        if self._held and not self._locked():
            self._send(self._held.popleft())
        self._refresh()

    # ----- connection events -----
    def _on_connect(self) -> None:
        if self._joined_once and not self._closing:
            self._spawn(self._rejoin())

    def _on_connect_error(self, data: object = None) -> None:
        self._refusal = str(_as_dict(data).get("message") or data or "")

    def _on_disconnect(self, reason: object = None) -> None:
        self._registered = self._busy = self._awaiting = False
        self._unacked = 0
        self._end_stream(" [connection lost]")
        if not self._closing:
            self._screen.show(lines.meta("(connection lost — reconnecting…)"))
            if reason == self._sio.reason.SERVER_DISCONNECT:
                self._spawn(self._reconnect())
        self._refresh()

    # ----- room events -----
    def _on_welcome(self, data: object) -> None:
        welcome = _as_dict(data)
        self.user_id = str(welcome.get("user_id") or self.user_id)
        self.name = str(welcome.get("name") or self.name)
        assistant = _as_dict(welcome.get("assistant"))
        self.assistant = str(assistant.get("name") or self.assistant)
        self.reply.handle = str(assistant.get("handle") or self.reply.handle)
        room = _as_dict(welcome.get("room"))
        if room.get("reply") in REPLY_MODES:
            self.reply.mode = str(room["reply"])
        self.reply.locked = bool(room.get("reply_locked"))
        self._users = {
            str(u.get("user_id")): (str(u.get("name")), u.get("since"))
            for u in map(_as_dict, welcome.get("users") or [])
        }
        self._registered, self._busy = True, bool(welcome.get("busy"))
        names = [name for name, _ in self._users.values()]
        self._show_room(_as_dict(welcome.get("room")).get("name"))
        answers = self.reply.describe(self.assistant)
        for line in lines.welcome(self.name, names, answers, self._joined_once):
            self._screen.show(line)
        if _as_dict(welcome.get("assistant")).get("demo") and not self._joined_once:
            self._screen.show(lines.meta(f"  {lines.DEMO_NOTE}"))
        self._pump()

    def _show_room(self, room: object) -> None:
        """The room's header line, once (a server without rooms sends no `room`)."""
        if isinstance(room, str) and room and room != self.room_name:
            self.room_name = room
            self._screen.show(lines.room(room, room_link(self.url, room)))

    def _on_message_list(self, data: object) -> None:
        for msg in map(_as_dict, data if isinstance(data, list) else []):
            if self._stream is not None and msg.get("id") == self._stream.get("id"):
                self._finish_stream(msg)
            else:
                self._show_message(msg, live=False)  # history: no bell

    def _on_message(self, data: object) -> None:
        self._show_message(_as_dict(data), live=True)

    def _show_message(self, msg: dict[str, Any], live: bool) -> None:
        msg_id = msg.get("id")
        if not msg_id or msg_id in self._seen:
            return
        self._seen.add(str(msg_id))
        self._screen.show(lines.message(msg, self.user_id, self._mentions()))
        if live:
            self._ring_if_mentioned(msg)

    def _mentions(self) -> Mentions:
        names = [self.reply.handle, self.assistant, *(n for n, _ in self._users.values())]
        return Mentions(tuple(names), self.name)

    def _ring_if_mentioned(self, msg: dict[str, Any]) -> None:
        """Ring the terminal's bell for someone else's message that mentions you."""
        theirs = msg.get("role") != "system" and msg.get("user_id") != self.user_id
        if theirs and self._mentions().of_me(str(msg.get("content") or "")):
            self._screen.bell()

    def _on_join(self, data: object) -> None:
        person = _as_dict(data)
        self._users[str(person.get("user_id"))] = (str(person.get("name")), int(time.time() * 1000))
        self._screen.show(lines.joined(str(person.get("name"))))

    def _on_leave(self, data: object) -> None:
        person = _as_dict(data)
        self._users.pop(str(person.get("user_id")), None)
        self._screen.show(lines.left(str(person.get("name"))))

    def _on_ai_start(self, data: object = None) -> None:
        self._busy, self._awaiting = True, False
        self._refresh()

    def _on_message_start(self, data: object) -> None:
        msg = _as_dict(data)
        if msg.get("id") in self._seen:
            return
        self._end_stream(" [interrupted]")
        self._stream = {**msg, "content": str(msg.get("content") or "")}
        self._screen.stream_open(lines.prefix(msg, self.user_id), self._stream["content"])

    def _on_message_delta(self, data: object) -> None:
        delta = _as_dict(data)
        if self._stream is None or delta.get("id") != self._stream.get("id"):
            return
        text = str(delta.get("delta") or "")
        self._stream["content"] += text
        self._screen.stream_add(text)

    def _finish_stream(self, final: dict[str, Any]) -> None:
        self._stream = None
        self._seen.add(str(final.get("id")))
        self._screen.stream_end(lines.message(final, self.user_id, self._mentions()))
        self._ring_if_mentioned(final)

    def _end_stream(self, note: str) -> None:
        """Close a stream that got no final message; its id stays unseen for a replay."""
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        self._screen.stream_end([*lines.message(stream, self.user_id), ("class:meta", note)])

    def _on_ai_end(self, data: object = None) -> None:
        self._busy = False
        self._end_stream(" [incomplete]")
        self._pump()

    def _on_tool_call(self, data: object) -> None:
        line = lines.tool_status(_as_dict(data))
        if line is not None:
            self._screen.show(line)

    def _on_room_settings(self, data: object = None) -> None:
        settings = _as_dict(data)
        if settings.get("reply") not in REPLY_MODES:
            return
        self.reply.mode = str(settings["reply"])
        answers = self.reply.describe(self.assistant)
        self._screen.show(lines.reply_changed(str(settings.get("by") or "someone"), answers))
        self._pump()  # held lines go out at once when the room stops holding input

    def _on_error(self, data: object = None) -> None:
        self._screen.show(lines.error(str(_as_dict(data).get("message") or data)))
