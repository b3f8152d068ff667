"""Soak: 200 people talking at once, some dropping and coming back, for a while.

Checks, at the end: every accepted message is in the thread exactly once and answered; every
socket that stayed saw every message and every delta, in order (its deltas join to each final
answer); a socket that came back mid-answer got the text so far plus the rest, no gap and no
duplicate; the room's transcript is exactly the provider's thread.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.test_process import server_env, spawn, wait_healthy
from tests.threads import thread_texts
from tests.tools_for_tests import WirePeer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PEOPLE = 200
FLAKY = 40  # of whom drop and reconnect now and then
MESSAGES_EACH = 1
WINDOW = 60.0  # seconds over which the messages are spread
SEED = 20241121


def answer_seen_by(person: WirePeer, final: dict[str, Any]) -> str:
    """What one socket received of an answer: the text in its message-start (non-empty when it
    arrived mid-answer) followed by its deltas, in arrival order."""
    starts = [s for s in person.of("message-start") if s["id"] == final["id"]]
    assert len(starts) <= 1
    so_far = starts[0]["content"] if starts else ""
    return so_far + person.streamed(final["id"])


def live_answers(person: WirePeer) -> list[dict[str, Any]]:
    """Final answers received live (not the history sent right after `welcome`)."""
    out: list[dict[str, Any]] = []
    previous = ""
    for event, data in person.events:
        if event == "message-list" and previous != "welcome":
            out += [m for m in data if m["role"] == "assistant"]
        previous = event
    return out


def history_of(person: WirePeer) -> list[dict[str, Any]]:
    names = person.names()
    i = names.index("welcome")
    return person.events[i + 1][1] if names[i + 1 : i + 2] == ["message-list"] else []


class Participant:
    """One person: the socket in use now and every socket they used before."""

    def __init__(self, url: str, session: aiohttp.ClientSession, name: str) -> None:
        self.url = url
        self.session = session
        self.name = name
        self.user_id: str | None = None
        self.sockets = [self.socket()]
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.unknown: list[str] = []
        self.sent = 0

    def socket(self) -> WirePeer:
        return WirePeer(self.url, self.session, self.name, self.user_id)

    @property
    def now(self) -> WirePeer:
        return self.sockets[-1]

    async def join(self) -> None:
        welcome = await self.now.join()
        if self.user_id is None:
            self.user_id = welcome["user_id"]
        assert welcome["user_id"] == self.user_id and welcome["name"] == self.name

    async def say(self) -> None:
        self.sent += 1
        content = f"{self.name} q{self.sent}"
        for _ in range(20):
            try:
                ack = await self.now.call("message", {"content": content}, timeout=30)
            except Exception as exc:  # no ack: it may or may not have been accepted
                self.unknown.append(content)
                self.refused.append(repr(exc))
                return
            if ack["ok"]:
                self.accepted.append(ack["id"])
                return
            self.refused.append(ack["code"])
            if ack["code"] != "busy_queue_full":
                return
            await asyncio.sleep(0.2)

    async def reconnect(self, rng: random.Random) -> None:
        """Drop the socket, and come back on a new one with the same id and nickname."""
        old = self.now
        if rng.random() < 0.5:
            await old.close()
            self.sockets.append(self.socket())
            await asyncio.sleep(rng.uniform(0, 0.3))
            await self.rejoin()
        else:  # the new socket registers before the old one is gone
            self.sockets.append(self.socket())
            await self.rejoin()
            await old.close()

    async def rejoin(self) -> None:
        for _ in range(50):  # the old socket's leave may still be in flight: name_taken
            await self.now.connect()
            ack = await self.now.call("register", {"name": self.name, "user_id": self.user_id},
                                     timeout=30)
            if ack["ok"]:
                assert ack["user_id"] == self.user_id
                return
            assert ack["code"] == "name_taken", ack
            await self.now.close()
            self.sockets[-1] = self.socket()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} could not come back")

    async def close(self) -> None:
        for sock in self.sockets:
            await sock.close()


async def talk(p: Participant, rng: random.Random, flaky: bool, t0: float) -> None:
    """Send this person's messages at random moments in the window; flaky people also drop
    and reconnect at random moments."""
    loop = asyncio.get_running_loop()
    plan = [(rng.uniform(0, WINDOW), "say") for _ in range(MESSAGES_EACH)]
    if flaky:
        plan += [(rng.uniform(0, WINDOW), "reconnect") for _ in range(rng.randint(1, 2))]
    for at, action in sorted(plan):
        await asyncio.sleep(max(0.0, t0 + at - loop.time()))
        if action == "say":
            await p.say()
        else:
            await p.reconnect(rng)


@pytest.fixture
async def server_process(
    tmp_path: Path, upstream: FakeUpstream
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Roundtable as its own process (its own CPU core: the 200 clients need the other one)."""
    port = free_port()
    env = server_env(OPENAI_API_KEY="sk-soak", OPENAI_BASE_URL=upstream.base_url,
                     SERVER_PORT=str(port), LLM_API="responses", LOG_LEVEL="warning",
                     MAX_QUEUED_TURNS=str(PEOPLE * MESSAGES_EACH), SHUTDOWN_TIMEOUT="2")
    proc = await spawn(tmp_path, env)
    output: list[bytes] = []

    async def drain() -> None:  # never let a full stdout pipe block the server
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            output.append(line)

    reader = asyncio.create_task(drain())
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await reader
        log = b"".join(output).decode(errors="replace")
        assert "Traceback" not in log, log[-5000:]


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_soak_many_people_with_random_disconnects(
    server_process: tuple[asyncio.subprocess.Process, str], upstream: FakeUpstream
):
    _, url = server_process
    rng = random.Random(SEED)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    people = [Participant(url, session, f"P{i:03d}") for i in range(PEOPLE)]
    auditor = WirePeer(url, session, "Auditor")
    started = time.monotonic()
    try:
        for batch in range(0, PEOPLE, 25):
            await asyncio.gather(*(p.join() for p in people[batch : batch + 25]))
        flaky = set(rng.sample(range(PEOPLE), FLAKY))
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(talk(p, random.Random(rng.random()), i in flaky, t0)
                               for i, p in enumerate(people)))
        accepted = [mid for p in people for mid in p.accepted]
        unknown = [c for p in people for c in p.unknown]
        assert len(accepted) >= PEOPLE * MESSAGES_EACH * 0.95, sorted(
            {r for p in people for r in p.refused})
        stayers = [p for i, p in enumerate(people) if i not in flaky]
        for p in stayers:  # everybody who stayed saw every turn end
            await p.now.wait_for("ai-end", count=len(accepted) + len(unknown), timeout=180)
        assert (await health(url))["busy"] is False

        # The whole transcript, as a newcomer gets it.
        await auditor.join()
        transcript = await auditor.wait_for("message-list")
        users = [m for m in transcript if m["role"] == "user"]
        # Every accepted message is in the thread exactly once, each followed by its answer;
        # a message whose ack was lost is there at most once.
        ids = [m["id"] for m in users]
        assert len(ids) == len(set(ids)) and set(accepted) <= set(ids)
        extra = [m["content"] for m in users if m["id"] not in set(accepted)]
        assert sorted(extra) == sorted(c for c in unknown if c in extra)
        for question, answer in zip(transcript[::2], transcript[1::2], strict=True):
            assert question["role"] == "user" and answer["role"] == "assistant"
            assert answer["reply_to"] == question["id"] and "incomplete" not in answer
            assert answer["content"] == f"Echo: [{question['name']}] {question['content']}"
        # The room's transcript is the provider's thread.
        [conversation] = upstream.conversations
        shim: Any = SimpleNamespace(settings=SimpleNamespace(llm_api="responses"),
                                    room=SimpleNamespace(thread_id=conversation))
        assert thread_texts(upstream, shim) == [
            f"[{m['name']}] {m['content']}" if m["role"] == "user" else m["content"]
            for m in transcript
        ]

        finals = [m for m in transcript if m["role"] == "assistant"]
        for p in stayers:
            sock = p.now
            # Every message by the others, once, in thread order; every answer, in order,
            # each one the exact join of the deltas received.
            others = [m["id"] for m in users if m["user_id"] != p.user_id]
            assert [m["id"] for m in sock.of("message")] == others
            assert sock.answers() == finals
            for final in finals:
                assert sock.streamed(final["id"]) == final["content"]
        # Sockets that came and went: their history is a prefix of the transcript, and whatever
        # part of an answer they saw has no gap and no duplicate.
        by_id = {f["id"]: f for f in finals}
        checked = 0
        for i in flaky:
            for sock in people[i].sockets:
                if "welcome" not in sock.names():
                    continue
                history = history_of(sock)
                assert history == transcript[: len(history)]
                for final in live_answers(sock):
                    assert final == by_id[final["id"]]
                    assert answer_seen_by(sock, final) == final["content"]
                    checked += 1
        assert checked > 0
        print(f"soak: {len(accepted)} messages from {PEOPLE} people "
              f"({sum(len(people[i].sockets) - 1 for i in flaky)} reconnects) "
              f"in {time.monotonic() - started:.1f}s")
    finally:
        await auditor.close()
        for batch in range(0, PEOPLE, 50):
            await asyncio.gather(*(p.close() for p in people[batch : batch + 50]))
        await session.close()
