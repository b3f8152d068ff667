"""One room: its people, its one AI thread, its turn queue and its lock.

Knows nothing of sockets or HTTP: it talks to clients through an `Emitter` (addressed by room
name) and to the model through a `Provider`. Connections are opaque ids (`sid`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..messages import Message, now_ms
from ..metrics import Metrics
from ..providers.base import AssistantProfile, Provider
from ..tools import ToolRegistry
from .config import RoomConfig
from .emitter import Emitter
from .membership import Membership
from .reply import REPLY_MODES, SWITCHED, Mentions, reply_note, wants_run
from .roster import Person, RoomError, Roster
from .side_channel import SideChannel
from .thread import RoomThread
from .transcript import Transcript
from .turns import Note, Turn, TurnEngine, TurnLimits

logger = logging.getLogger(__name__)

ROOM_NOTE = (
    "Several people share this conversation. Each user message begins with the speaker's "
    "name in square brackets, like [Alice]; do not begin your reply with a name in brackets."
)


@dataclass(frozen=True)
class RoomLimits:
    """Validation and run limits (see docs/protocol.md and docs/reliability.md)."""

    max_name_length: int = 32
    max_message_length: int = 8000
    max_queued_turns: int = 50
    max_participants: int = 2000
    run_timeout: float = 60.0  # seconds without any sign of life from the provider
    tool_timeout: float = 10.0
    max_tool_rounds: int = 5

    def turns(self) -> TurnLimits:
        return TurnLimits(self.max_queued_turns, self.run_timeout, self.tool_timeout,
                          self.max_tool_rounds)


def run_instructions(base: str, nickname: str, today: datetime) -> str:
    """Per-run instructions: the base, the room note, who to address, and today's date."""
    date = today.strftime("%A, %d %B %Y")
    clock = today.strftime("%H:%M %Z").strip()
    return (
        f"{base}\n\n{ROOM_NOTE}\nPlease address the user as {nickname}.\n"
        f"Today is {date} ({today.date().isoformat()}, {clock})."
    )


def check_content(content: str, limit: int) -> None:
    """Refuse a message that is empty, not Unicode text, or longer than `limit` characters."""
    if not content.strip():
        raise RoomError("empty_message", "The message is empty.")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise RoomError("invalid_payload", "The message is not valid Unicode text.") from None
    if len(content) > limit:
        raise RoomError("message_too_long", f"The message is longer than {limit} characters.")


def check_reply_mode(config: RoomConfig, mode: object) -> str:
    """The reply mode a participant asked for, or the refusal."""
    if not isinstance(mode, str) or mode not in REPLY_MODES:
        raise RoomError("invalid_payload", f"reply must be one of {', '.join(REPLY_MODES)}.")
    if config.reply is not None:
        raise RoomError("settings_locked", "This room's settings are fixed by the server.")
    return mode


def turn_instructions(
    profile: AssistantProfile, config: RoomConfig, reply: str, turn: Turn, today: datetime
) -> str:
    """The whole instructions of one run: the assistant's, the room's, who asked, the date, and
    what the reply mode asks of this turn."""
    nickname = turn.message.name
    base = profile.instructions
    if config.instructions:
        base = f"{base}\n\n{config.instructions}"
    text = run_instructions(base, nickname, today)
    note = reply_note(reply, turn.mentioned, nickname)
    return f"{text}\n{note}" if note else text


class Room:
    """One shared conversation with one assistant."""

    def __init__(
        self,
        provider: Provider,
        profile: AssistantProfile,
        emitter: Emitter,
        limits: RoomLimits | None = None,
        clock: Callable[[], datetime] | None = None,
        tools: ToolRegistry | None = None,
        config: RoomConfig | None = None,
        reply: str = "always",
        handle: str = "ai",
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config or RoomConfig("main")
        self.reply = self.config.reply or reply  # how the assistant answers: see reply.py
        self.handle = handle
        self._mentions = Mentions(handle, profile.name)
        self.name = self.config.name
        self.profile = profile
        self.limits = limits or RoomLimits()
        self._emitter = emitter
        self._clock = clock or (lambda: datetime.now().astimezone())
        most = self.config.max_participants or self.limits.max_participants
        # the assistant's name and @handle are nobody's nickname (a mention must be unambiguous)
        roster = Roster(self.limits.max_name_length, most, (profile.name, handle))
        self._members = Membership(self.name, roster, emitter)
        self._thread = RoomThread(provider)
        self._transcript = Transcript(self._thread)
        self._side = SideChannel()
        self._turns = TurnEngine(
            provider, self._transcript, self._emit, profile.name, self._instructions,
            lambda: emitter.audience(self.name), tools or ToolRegistry(), self, self._side,
            self.limits.turns(), metrics,
        )
        self._preparing = False

    # ----- state, for the transport layer and tests -----
    @property
    def thread_id(self) -> str | None:
        return self._thread.id

    @property
    def busy(self) -> bool:
        return self._turns.busy

    @property
    def transcript(self) -> list[Message]:
        return list(self._transcript)

    def users(self) -> list[dict[str, Any]]:
        return self._members.users()

    def people(self) -> list[tuple[str, int]]:
        """Who is here, oldest first (the `RoomView` that tools see)."""
        return self._members.roster.people()

    def is_registered(self, sid: str) -> bool:
        return self._members.bound(sid)

    def queued(self) -> int:
        return self._turns.queued()

    def __len__(self) -> int:
        """People in the room."""
        return len(self._members)

    def headcount(self) -> int:
        """People in the room."""
        return len(self._members)

    def info(self) -> dict[str, Any]:
        """The room as `welcome.room` describes it."""
        return {"name": self.name, "listed": self.config.listed,
                "password": bool(self.config.password), "reply": self.reply,
                "reply_locked": self.config.reply is not None}

    # ----- lifecycle -----
    async def start(self) -> None:
        """Start the turn worker."""
        self._turns.start()

    async def close(self) -> None:
        """Stop the worker and any run, then delete the thread."""
        await self._turns.close()
        await self._thread.delete()

    # ----- requests -----
    async def register(self, sid: str, user_id: object, name: str) -> dict[str, Any]:
        """Bind `sid` to a nickname; return the `welcome` payload (already sent to `sid`)."""
        person = self._members.bind(sid, user_id, name)
        history = await self._transcript.history(self._turns.running)
        if not self._members.bound(sid):  # gone while the history was read
            raise RoomError("not_registered", "The connection closed during registration.")
        welcome = {
            "user_id": person.user_id,
            "name": person.name,
            "users": self.users(),
            "assistant": {"name": self.profile.name, "handle": self.handle,
                          "model": self.profile.model, "demo": self.profile.demo},
            "busy": self.busy,
            "room": self.info(),
        }
        await self._snapshot(sid, welcome, history)
        await self._members.go_live(sid, person)
        if self._thread.id is None and not self._preparing:
            self._preparing = True  # one creation in flight, however many people arrive
            self._turns.spawn(self._prepare_thread())
        return welcome

    async def _snapshot(self, sid: str, welcome: dict[str, Any], history: list[Any]) -> None:
        """What a newcomer is sent before the room's live events: the welcome, the history,
        the answer in flight so far, and the messages waiting for their turn."""
        send = self._emitter.send
        await send(sid, "welcome", welcome)
        if history:
            await send(sid, "message-list", history)
        turn = self._turns.current
        if turn is not None and turn.started:
            await send(sid, "ai-start", None)
            if turn.announced and turn.answer is not None:
                await send(sid, "message-start", turn.answer.to_wire())
        for waiting in self._turns.waiting():  # shown live to those present when sent
            await send(sid, "message", waiting.to_wire())

    async def post(self, sid: str, content: str, client_id: object = None) -> dict[str, Any]:
        """Accept a user's message from socket `sid`: show it to the others, queue its turn."""
        return await self._accept(self._members.roster.of(sid), content, client_id, {sid})

    async def post_as(
        self, user_id: str, content: str, client_id: object = None
    ) -> tuple[dict[str, Any], AsyncIterator[str]]:
        """Accept a message from an online person by id (the HTTP stream); also return the
        answer's text deltas. None of the person's own sockets is sent the message or the
        final answer: their client shows both from the HTTP exchange."""
        person = self._members.roster.by_id(user_id)
        if person is None:
            raise RoomError("not_registered", "This user_id is not in the room; register first.")
        quiet = frozenset(person.sids)
        message = self._check(person, content, client_id)
        deltas = self._side.listen(message.id)
        ack = await self._queue(message, quiet, quiet)
        return ack, deltas

    async def _accept(
        self, person: Person, content: str, client_id: object, skip: Collection[str]
    ) -> dict[str, Any]:
        return await self._queue(self._check(person, content, client_id), skip, frozenset())

    def _check(self, person: Person, content: str, client_id: object) -> Message:
        """The message `person` sent, or the refusal."""
        check_content(content, self.limits.max_message_length)
        message_id = self._transcript.claim_id(client_id, "m")
        return Message(message_id, person.user_id, person.name, "user", content, now_ms())

    async def _queue(
        self, message: Message, skip: Collection[str], quiet: frozenset[str]
    ) -> dict[str, Any]:
        mentioned = self.reply != "always" and self._mentions.found_in(message.content)
        item: Turn | Note = Note(message)
        if wants_run(self.reply, mentioned):
            if self._turns.queued() >= self.limits.max_queued_turns:
                raise RoomError("busy_queue_full", "Too many messages are waiting; try again soon.")
            item = Turn(message, quiet, mentioned, may_pass=self.reply == "auto" and not mentioned)
        await self._emit("message", message.to_wire(), skip=skip)
        queued = self._turns.submit(item)
        return {"ok": True, "id": message.id, "created_at": message.created_at,
                "queued": queued}

    async def stop(self, sid: str) -> bool:
        """Stop the answer in progress (any participant may); False if there was none."""
        person = self._members.roster.of(sid)
        stopped = self._turns.stop(person.name)
        if stopped:
            logger.info("%s stopped the answer in room %s", person.name, self.name)
        return stopped

    async def set_reply(self, sid: str, mode: object) -> dict[str, Any]:
        """Switch how the assistant answers (any participant, unless ROOMS_FILE fixes it)."""
        person = self._members.roster.of(sid)
        mode = check_reply_mode(self.config, mode)
        if mode != self.reply:
            self.reply = mode
            logger.info("%s set room %s to reply mode %s", person.name, self.name, mode)
            await self._emit("room-settings", {"reply": mode, "by": person.name})
            notice = f"{person.name} set the assistant to {SWITCHED[mode]}."
            await self._emit("message", Message.system(notice).to_wire())
        return {"ok": True, "reply": self.reply}

    def pause(self) -> asyncio.Task[None] | None:
        """Start no more turns (the server is draining); return the answer in flight."""
        return self._turns.pause()

    async def notify(self, notice: Message) -> None:
        """A system notice to everyone in the room."""
        await self._emit("message", notice.to_wire())

    async def leave(self, sid: str) -> bool:
        """Forget a connection. When the room's last person leaves: drop queued turns, cancel
        the answer, delete the thread, and return True."""
        person = await self._members.drop(sid)
        if person is None or len(self._members):
            return False
        await self._turns.reset()
        self._transcript.clear()
        await self._thread.delete()
        return True

    async def _emit(
        self, event: str, data: Any, skip: Collection[str] = (), hold: bool = False
    ) -> None:
        await self._emitter.emit(self.name, event, data, skip, hold)

    async def _prepare_thread(self) -> None:
        try:
            await self._thread.prepare()
        finally:
            self._preparing = False

    def _instructions(self, turn: Turn) -> str:
        return turn_instructions(self.profile, self.config, self.reply, turn, self._clock())
