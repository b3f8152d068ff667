"""The terminal client (`python -m client`) end to end: a real subprocess in a pseudo-terminal
(pexpect) or behind pipes, against the real server and the fake upstream, with a second person
in the room as a scripted peer."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pexpect
import pyte
import pytest

from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import Call, FakeUpstream, Text, ToolCalls
from tests.peers import Peer

ROOT = Path(__file__).resolve().parent.parent
# CSI sequences, OSC strings and two-character escapes: what prompt_toolkit writes to a terminal.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_=>]")
HELD = "(AI is answering — your message will be sent when it finishes)"

pytestmark = pytest.mark.slow


class Term:
    """One terminal client in an 80x24 pseudo-terminal; its output is read by a thread so the
    event loop (which runs the server) never blocks.

    Two views of the output: `text()`, everything written with escape codes removed (printed
    lines are written whole, so they can be matched there, in order), and `shown()`, the screen
    as a terminal emulator (pyte) displays it now (for the answer that grows in place)."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
        env.pop("ROUNDTABLE_PASSWORD", None)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "client", "--url", url, *args],
            cwd=str(ROOT),
            env=env,
            dimensions=(24, 80),
            encoding="utf-8",
        )
        self.raw = ""
        self.pos = 0  # where the next expect starts looking, in the cleaned text
        self._screen = pyte.Screen(80, 24)
        self._emulator = pyte.Stream(self._screen)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.child.read_nonblocking(4096, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                return
            with self._lock:
                self.raw += chunk
                self._emulator.feed(chunk)

    def shown(self) -> str:
        """The screen as it looks now."""
        with self._lock:
            return "\n".join(row.rstrip() for row in self._screen.display)

    async def see(self, pattern: str, timeout: float = 10) -> None:
        """Wait until `pattern` is on the screen now."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.shown()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen:\n{self.shown()}")
            await asyncio.sleep(0.05)

    def text(self) -> str:
        """Everything shown so far, without escape sequences or carriage returns."""
        with self._lock:
            raw = self.raw
        return ANSI.sub("", raw).replace("\r", "")

    async def expect(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait until `pattern` appears after the previous match; move past it."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text(), self.pos)
            if found:
                self.pos = found.end()
                return found
            if time.monotonic() > deadline:
                tail = self.text()[self.pos :][-1500:]
                raise AssertionError(f"{pattern!r} not shown; screen since last match:\n{tail}")
            await asyncio.sleep(0.05)

    async def ready(self, name: str) -> None:
        """Wait until joined as `name` and the input line is up (keys typed before that would
        reach a terminal still in cooked mode, where Ctrl-D is not a key)."""
        await self.expect(f"joined as {name}")
        await self.see(r"(?m)^>")

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    async def exit_code(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise AssertionError(f"client still running:\n{self.text()[-1500:]}")
            await asyncio.sleep(0.05)
        self._reader.join(timeout=2)
        status = self.child.exitstatus
        assert status is not None, f"killed by signal {self.child.signalstatus}"
        return int(status)

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


MakeTerm = Callable[..., Term]


@pytest.fixture
async def any_terms() -> AsyncIterator[MakeTerm]:
    """Factory: `make(url, *args)` starts a terminal client; all are stopped at the end."""
    made: list[Term] = []

    def make(url: str, *args: str) -> Term:
        term = Term(url, *args)
        made.append(term)
        return term

    yield make
    for term in made:
        term.close()


@pytest.fixture
def terms(server: RunningServer, any_terms: MakeTerm) -> Callable[[str], Term]:
    """Factory: `make(name)` starts a terminal client on `server` as `name`."""
    return lambda name: any_terms(server.url, "--name", name)


def is_message(content: str) -> Callable[[dict[str, object]], bool]:
    return lambda m: m.get("content") == content


@pytest.mark.timeout(60)
async def test_join_chat_stream_who_and_quit(
    upstream: FakeUpstream, peers: Callable[..., Peer], terms: Callable[[str], Term]
) -> None:
    bob = peers("Bob")
    await bob.join()
    await bob.say("hello from bob")
    await bob.wait_for("ai-end")

    alice = terms("Alice")
    await alice.ready("Alice")
    await alice.expect(r"\[\d\d:\d\d\] Bob: hello from bob")  # the history, with times
    await alice.expect(r"Roundtable AI: Echo: .*hello from bob")
    await bob.wait_for("join", where=lambda d: d["name"] == "Alice")

    upstream.enqueue(Text("alpha beta gamma delta epsilon", delay=0.3))
    alice.type("tell us a story")
    await bob.wait_for("message", where=is_message("tell us a story"))
    await alice.see(r"\[\d\d:\d\d\] Roundtable AI: alpha")  # shown while it arrives
    screen = alice.shown()
    assert "epsilon" not in screen and "is answering" in screen, screen
    await alice.see(r"Roundtable AI: alpha beta gamma delta epsilon")
    await bob.wait_for("ai-end", count=2)
    await alice.expect(r"Roundtable AI: alpha beta gamma delta epsilon\n")  # printed once done

    await bob.say("nice one")
    await alice.expect(r"\[\d\d:\d\d\] Bob: nice one")
    await bob.wait_for("ai-end", count=3)

    carol = peers("Carol")
    await carol.join()
    await alice.expect(r"→ Carol joined")
    await carol.close()
    await alice.expect(r"← Carol left")

    alice.type("/who")
    await alice.expect(r"Online now \(2\):")
    listing = await alice.expect(r"Alice \(you\).*\n.*Bob|Bob.*\n.*Alice \(you\)")
    assert "Carol" not in listing.group(0)

    alice.type("/quit")
    assert await alice.exit_code() == 0
    await bob.wait_for("leave", where=lambda d: d["name"] == "Alice")
    assert "Traceback" not in alice.text()


@pytest.mark.timeout(60)
async def test_line_typed_while_ai_answers_waits_for_the_end(
    upstream: FakeUpstream, peers: Callable[..., Peer], terms: Callable[[str], Term]
) -> None:
    bob = peers("Bob")
    await bob.join()
    alice = terms("Alice")
    await alice.ready("Alice")
    await bob.wait_for("join")

    upstream.enqueue(Text("one two three four five six", delay=0.25))
    alice.type("first question")
    await alice.see(r"Roundtable AI: one")
    alice.type("second question")
    await alice.expect(re.escape(HELD))
    assert not [m for m in bob.of("message") if m["content"] == "second question"]

    await bob.wait_for("message", where=is_message("second question"))
    names = bob.names()
    first_end = names.index("ai-end")
    held = next(
        i for i, (name, data) in enumerate(bob.events)
        if name == "message" and data["content"] == "second question"
    )
    assert first_end < held, "the held line must be sent only after ai-end"
    await alice.expect(r"Alice: second question")
    await alice.expect(r"Roundtable AI: Echo: .*second question")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key", ["c", "d"])
async def test_ctrl_c_and_ctrl_d_leave_cleanly(
    key: str, peers: Callable[..., Peer], terms: Callable[[str], Term]
) -> None:
    bob = peers("Bob")
    await bob.join()
    alice = terms("Alice")
    await alice.ready("Alice")
    await bob.wait_for("join")

    alice.child.sendcontrol(key)
    assert await alice.exit_code() == 0
    await bob.wait_for("leave", where=lambda d: d["name"] == "Alice")
    assert "Traceback" not in alice.text()


@pytest.mark.timeout(60)
async def test_piped_mode_reads_lines_and_prints_plain_lines(
    server: RunningServer, peers: Callable[..., Peer]
) -> None:
    bob = peers("Bob")
    await bob.join()
    await bob.say("hi before the pipe")
    await bob.wait_for("ai-end")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", server.url, "--name", "Piper",
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        proc.communicate(b"hello through a pipe\n/who\n"), timeout=30
    )
    out = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "\x1b" not in out
    lines = out.splitlines()
    assert any(re.fullmatch(r"\[\d\d:\d\d\] Bob: hi before the pipe", ln) for ln in lines), out
    assert any(re.fullmatch(r"\[\d\d:\d\d\] Piper: hello through a pipe", ln) for ln in lines)
    answer = r"\[\d\d:\d\d\] Roundtable AI: Echo: .*hello through a pipe"
    assert any(re.fullmatch(answer, ln) for ln in lines), out
    assert "Online now (2):" in lines
    await bob.wait_for("message", where=is_message("hello through a pipe"))
    await bob.wait_for("leave", where=lambda d: d["name"] == "Piper")


@pytest.mark.timeout(60)
async def test_stop_and_tool_status(upstream: FakeUpstream, terms: Callable[[str], Term]) -> None:
    alice = terms("Alice")
    await alice.ready("Alice")

    upstream.enqueue(ToolCalls([Call("current_time", "{}")]), Text("It is noon."))
    alice.type("what time is it?")
    await alice.expect(r"⋯ using current_time…")
    await alice.expect(r"Roundtable AI: It is noon\.")

    upstream.enqueue(Text(" ".join(f"w{i}" for i in range(40)), delay=0.2))
    alice.type("count slowly")
    await alice.see(r"Roundtable AI: w0 w1")
    alice.type("/stop")
    await alice.expect(r"Alice stopped the answer\.")
    await alice.expect(r"Roundtable AI: w0 w1.*\[cut short\]")
    assert "w39" not in alice.text()


@pytest.mark.timeout(60)
async def test_room_password_is_asked_for(
    start_server: StartServer, any_terms: MakeTerm
) -> None:
    server = await start_server(room_password="sesame")
    alice = any_terms(server.url, "--name", "Alice")
    await alice.expect(r"error: unauthorized: this server needs a password")
    await alice.expect(r"Room password:")
    alice.type("sesame")
    await alice.ready("Alice")
    alice.type("/quit")
    assert await alice.exit_code() == 0

    piped = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", server.url, "--name", "Bob",
        "--password", "wrong",
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(piped.communicate(b"hello\n"), timeout=20)
    assert piped.returncode == 1
    assert "needs a password" in stdout.decode()
