"""Rooms in the terminal client: `--room` joins a room apart from the default one, `/rooms` lists
the rooms, and a room's own password is asked for. A real subprocess in a pseudo-terminal (or
behind pipes) against the real server; needs the server's rooms (register's `room`,
`welcome.room`, `/api/rooms`, `ROOMS_FILE`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, StartServer
from tests.peers import Peer
from tests.test_terminal_client import ROOT, Term

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MakeTerm = Callable[..., Term]


@pytest.fixture
async def room_terms() -> AsyncIterator[MakeTerm]:
    """Factory: `make(url, *args)` starts a terminal client; all are stopped at the end."""
    made: list[Term] = []

    def make(url: str, *args: str) -> Term:
        term = Term(url, *args)
        made.append(term)
        return term

    yield make
    for term in made:
        term.close()


async def join_room(peer: Peer, room: str) -> dict[str, Any]:
    """Connect `peer` and register it in `room`; the welcome."""
    await peer.connect()
    reply = await peer.call("register", {"name": peer.name, "room": room})
    assert reply["ok"], reply
    return await peer.wait_for("welcome")


def says(content: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("content") == content


def rooms_file(tmp_path: Path) -> str:
    path = tmp_path / "rooms.toml"
    path.write_text('[rooms.secret]\npassword = "pw"\n', encoding="utf-8")
    return str(path)


async def test_room_flag_joins_a_room_apart_from_the_default_one(
    server: RunningServer, peers: Callable[..., Peer], room_terms: MakeTerm
) -> None:
    bob = peers("Bob")
    await bob.join()  # the default room
    dana = peers("Dana")
    welcome = await join_room(dana, "design")
    assert welcome["room"]["name"] == "design"

    alice = room_terms(server.url, "--name", "Alice", "--room", "Design")
    await alice.expect(rf"— room design · {server.url}/r/design")
    await alice.ready("Alice")
    await alice.expect(r"online: .*Dana")
    await dana.wait_for("join", where=lambda d: d["name"] == "Alice")

    alice.type("hello design")
    await dana.wait_for("message", where=says("hello design"))
    await alice.expect(r"Roundtable AI: Echo: .*hello design")
    await dana.wait_for("ai-end")
    await bob.say("hello main")
    await bob.wait_for("ai-end")

    alice.type("/rooms")
    await alice.expect(r"Rooms \(2\):")
    await alice.expect(r"main  1 person")
    await alice.expect(r"design  2 people \(you are here\)")
    alice.type("/quit")
    assert await alice.exit_code() == 0
    await dana.wait_for("leave", where=lambda d: d["name"] == "Alice")

    assert "hello main" not in alice.text()
    assert "design" not in "".join(d["delta"] for d in bob.of("message-delta"))
    assert not [m for m in bob.of("message") if m["content"] == "hello design"]
    assert not [j for j in bob.of("join") if j["name"] == "Alice"]
    assert not [m for m in dana.of("message") if m["content"] == "hello main"]
    assert "Traceback" not in alice.text()


async def test_a_room_password_is_asked_for_and_rooms_are_listed_with_the_server_password(
    start_server: StartServer, room_terms: MakeTerm, tmp_path: Path
) -> None:
    server = await start_server(room_password="sesame", rooms_file=rooms_file(tmp_path))
    alice = room_terms(
        server.url, "--name", "Alice", "--password", "sesame", "--room", "secret"
    )
    await alice.expect(r"error: ")  # the server's wrong_password message
    await alice.expect(r"Password for room secret:")
    alice.type("pw")
    await alice.expect(r"— room secret")
    await alice.ready("Alice")
    alice.type("/rooms")  # GET /api/rooms with `Authorization: Bearer sesame`
    await alice.expect(r"Rooms \(\d+\):")
    await alice.expect(r"secret  1 person \(you are here\)")
    alice.type("/quit")
    assert await alice.exit_code() == 0

    piped = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", server.url, "--name", "Bob",
        "--password", "sesame", "--room", "secret", "--room-password", "wrong",
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(piped.communicate(b"hello\n"), timeout=20)
    assert piped.returncode == 1, stderr.decode()
    out = stdout.decode()
    assert "error: " in out and "Traceback" not in out + stderr.decode()
    assert "hello" not in out


async def test_an_invalid_room_name_is_refused_before_connecting() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", "http://127.0.0.1:9", "--room", "no spaces",
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    assert "room names are 1-40 characters" in stderr.decode()
