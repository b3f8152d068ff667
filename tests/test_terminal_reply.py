"""Reply modes in the terminal client: nothing is held in a `mention` room while an answer
streams, `/reply MODE` switches (and shows the server's refusal), and a message that mentions
you is highlighted and rings the bell. A real subprocess in a pseudo-terminal against the real
server, the fake upstream and a scripted peer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer
from tests.test_terminal_client import HELD, Term

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SLOW = " ".join(f"w{i}" for i in range(30))
BELL = "\x07"


@pytest.fixture
async def made() -> AsyncIterator[list[Term | Peer]]:
    """Terminals and peers to stop at the end."""
    things: list[Term | Peer] = []
    yield things
    for thing in things:
        if isinstance(thing, Term):
            thing.close()
        else:
            await thing.close()


def says(content: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("content") == content


async def test_a_mention_room_sends_at_once_and_reply_switches_back_to_holding(
    start_server: StartServer, upstream: FakeUpstream, made: list[Term | Peer]
) -> None:
    server = await start_server(reply_mode="mention")
    bob = Peer(server.url, "Bob")
    made.append(bob)
    await bob.join()
    alice = Term(server.url, "--name", "Alice")
    made.append(alice)
    await alice.ready("Alice")
    await alice.expect(r"Roundtable AI answers when mentioned \(@ai\) · /reply to change")
    await bob.wait_for("join")

    alice.type("just chatting")
    await bob.wait_for("message", where=says("just chatting"))
    upstream.enqueue(Text(SLOW, delay=0.1))
    alice.type("@ai count slowly")
    await alice.see(r"Roundtable AI: w0 w1")
    alice.type("meanwhile, hello")
    await bob.wait_for("message", where=says("meanwhile, hello"))
    assert bob.of("ai-end") == [], "sent while the answer was still streaming"
    assert HELD not in alice.text()
    await bob.wait_for("ai-end")
    assert len(upstream.model_requests()) == 1  # only the mention started a run

    alice.type("/reply always")
    await alice.expect(r"— Alice switched reply mode: Roundtable AI answers every message")
    settings = await bob.wait_for("room-settings")
    assert settings == {"reply": "always", "by": "Alice"}
    upstream.enqueue(Text(SLOW, delay=0.1))
    alice.type("count again")
    await alice.see(r"Roundtable AI: w0 w1")
    alice.type("held until the end")
    await alice.expect(re.escape(HELD))
    await bob.wait_for("message", where=says("held until the end"))
    held_at = next(i for i, (n, d) in enumerate(bob.events)
                   if n == "message" and d["content"] == "held until the end")
    assert bob.names()[:held_at].count("ai-end") == 2, "the held line waited for ai-end"

    alice.type("/reply sometimes")
    await alice.expect(r"error: reply must be one of always, mention, auto")
    assert "Traceback" not in alice.text()


async def test_a_mention_of_you_is_highlighted_and_rings_the_bell(
    start_server: StartServer, made: list[Term | Peer]
) -> None:
    server = await start_server(reply_mode="mention")
    bob = Peer(server.url, "Bob")
    made.append(bob)
    await bob.join()
    alice = Term(server.url, "--name", "Alice")
    made.append(alice)
    await alice.ready("Alice")
    await bob.wait_for("join")

    await bob.say("not you: @alicette, mail@alice")
    await alice.expect(r"Bob: not you: @alicette, mail@alice")
    assert BELL not in alice.raw

    await bob.say("hey @alice, over to you")
    await alice.expect(r"Bob: hey @alice, over to you")
    assert BELL in alice.raw
    # the mention is printed in its own style: an SGR sequence right before it
    assert re.search(r"hey \x1b\[[0-9;]*m@alice", alice.raw), alice.raw[-600:]
    assert not re.search(r"\x1b\[[0-9;]*m@alicette", alice.raw)


async def test_a_mode_fixed_by_the_server_is_shown_and_reply_is_refused(
    start_server: StartServer, made: list[Term | Peer], tmp_path: Path
) -> None:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text('[rooms.team]\nreply = "mention"\n', encoding="utf-8")
    server = await start_server(rooms_file=str(rooms))
    alice = Term(server.url, "--name", "Alice", "--room", "team")
    made.append(alice)
    await alice.ready("Alice")
    await alice.expect(r"answers when mentioned \(@ai\) \(fixed by the server\)")
    alice.type("/reply always")
    await alice.expect(r"error: This room's settings are fixed by the server\.")
    alice.type("/reply")
    await alice.expect(r"Roundtable AI answers when mentioned \(@ai\) \(fixed by the server\); "
                       r"usage: /reply always\|mention\|auto")
