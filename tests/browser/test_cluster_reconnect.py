"""docs/deploy.md, "Several processes behind nginx", tested: a process dies (kill -9) and its
clients' browsers reconnect through nginx to another process and carry on.

Three `python -m server` processes share one redis-server (tests/cluster.py). A real nginx runs
deploy/nginx/roundtable.conf with the upstream block of docs/deploy.md (processes 0 and 1, the
ports substituted) and its sign-in turned off, so that Chromium joins with a nickname; Bob, a
scripted participant, is connected straight to process 2, which nothing kills.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import DESKTOP
from tests.browser.people import Person
from tests.cluster import (  # noqa: F401
    Cluster,
    ServerProcess,
    StartCluster,
    cluster_fixture,
    redis_server_fixture,
)
from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream, Text
from tests.nginx import DEPLOY_CONF, ROOT, Proxy, missing_nginx, running_nginx, substitute
from tests.peers import Peer

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(180)]

DOCS = ROOT / "docs" / "deploy.md"
DOCS_PORTS = ("127.0.0.1:5020", "127.0.0.1:5021")  # the two servers in the docs' block
UPSTREAM_BLOCK = re.compile(r"^upstream roundtable \{\n.*?^\}", re.MULTILINE | re.DOTALL)
CONNECTIONS = re.compile(r"^roundtable_connections (\S+)$", re.MULTILINE)

FIRST_QUESTION = "Hello from Chromium, through nginx"
FIRST_ANSWER = "Hello Alice, this answer came through nginx"
SECOND_QUESTION = "Still here after the crash?"
SECOND_ANSWER = "Yes Alice, answered after the crash"
THIRD_QUESTION = "And once the dead process is cleaned up?"
THIRD_ANSWER = "Still here, Alice, after the clean-up"


def shows(*texts: str) -> list[re.Pattern[str]]:
    """For `to_have_text`: elements containing each text, in order."""
    return [re.compile(re.escape(text)) for text in texts]


def documented_upstream() -> str:
    """The upstream block under "Several processes behind nginx" in docs/deploy.md."""
    section = DOCS.read_text().split("## Several processes behind nginx", 1)[1]
    blocks = re.findall(r"```nginx\n(.*?)```", section, re.DOTALL)
    assert blocks, "docs/deploy.md shows no nginx block for several processes"
    found = UPSTREAM_BLOCK.search(blocks[0])
    assert found, "the first nginx block of the section is not `upstream roundtable { ... }`"
    return found.group(0)


def cluster_site(port: int, processes: list[ServerProcess]) -> str:
    """deploy/nginx/roundtable.conf with the documented upstream block over `processes`."""
    block = documented_upstream()
    assert len(processes) == len(DOCS_PORTS)
    for documented, process in zip(DOCS_PORTS, processes, strict=True):
        block = substitute(block, f"server {documented} ",
                           f"server {process.url.removeprefix('http://')} ")
    conf = DEPLOY_CONF.read_text()
    found = UPSTREAM_BLOCK.findall(conf)
    assert len(found) == 1, "deploy/nginx/roundtable.conf must have one upstream block"
    conf = substitute(conf, found[0], block)
    conf = substitute(conf, "listen 80;", f"listen 127.0.0.1:{port};")
    # People pick nicknames here; the sign-in through nginx is tests/test_deploy.py's subject.
    return substitute(conf, 'auth_basic "Roundtable";', "auth_basic off;")


async def connections(process: ServerProcess) -> float:
    """The process's `roundtable_connections` gauge (Socket.IO connections open), from /metrics."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"{process.url}/metrics") as resp:
            assert resp.status == 200, await resp.text()
            text = await resp.text()
    found = CONNECTIONS.search(text)
    assert found, f"no roundtable_connections gauge in {process.name}'s /metrics"
    return float(found.group(1))


async def cleaned_up_after(dead: ServerProcess, nodes: Cluster, timeout: float = 20) -> None:
    """Wait until a surviving process has cleaned up after `dead` (past the lease: its
    connections leave the rooms). Only the processes' log says when (server/cluster/node.py)."""
    started = re.search(r"cluster node (\S+) started", dead.output())
    assert started, f"{dead.name} never logged its node id"
    line = f"cleaned up after node {started.group(1)} "
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(line in p.output() for p in nodes if p is not dead):
        assert loop.time() < deadline, f"nobody cleaned up after {dead.name} in {timeout} s"
        await asyncio.sleep(0.1)


def online_for(peer: Peer, name: str) -> bool:
    """Whether `name` is in the room as `peer` was told: joined, and not left since."""
    presence = [event for event, data in peer.events
                if event in ("join", "leave") and data["name"] == name]
    return bool(presence) and presence[-1] == "join"


@pytest.fixture
async def proxied(
    cluster: StartCluster, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, Proxy]]:
    """Three ready processes, and nginx balancing processes 0 and 1."""
    reason = missing_nginx()
    if reason is not None:
        pytest.skip(reason)
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    port = free_port()
    async with running_nginx(tmp_path, cluster_site(port, [nodes[0], nodes[1]]), port) as proxy:
        try:
            yield nodes, proxy
        finally:
            print(f"===== nginx error.log =====\n{proxy.error_log()}\n"
                  f"===== nginx access.log =====\n{proxy.access_log()}", file=sys.stderr)


async def test_a_process_killed_its_browser_reconnects_through_nginx_and_carries_on(
    proxied: tuple[Cluster, Proxy], upstream: FakeUpstream, browser: Browser
) -> None:
    nodes, proxy = proxied
    bob = Peer(nodes[2].url, "Bob")
    await bob.join()
    options: dict[str, Any] = {"viewport": DESKTOP}
    context = await browser.new_context(**options)
    alice = Person(await context.new_page())
    console: list[str] = []
    alice.page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        await alice.open(proxy.url)
        await alice.join("Alice")
        await bob.wait_for("join", where=lambda user: user["name"] == "Alice")

        upstream.enqueue(Text(FIRST_ANSWER, delay=0.02))
        await alice.say(FIRST_QUESTION)
        said = await bob.wait_for("message", where=lambda m: m.get("role") == "user")
        assert (said["name"], said["content"]) == ("Alice", FIRST_QUESTION)
        await bob.wait_for("ai-end")
        await expect(alice.role("assistant").last).to_contain_text(FIRST_ANSWER)
        await alice.idle()
        before = await alice.ids()
        assert len(before) == 2

        # Which of the two processes behind nginx holds the page's connection.
        counts = [await connections(nodes[0]), await connections(nodes[1])]
        assert sorted(counts) == [0, 1], counts
        held, other = (nodes[0], nodes[1]) if counts[0] == 1 else (nodes[1], nodes[0])
        first_sid = await alice.js("() => window.__roundtable_socket.id")

        await held.kill()
        await expect(alice.by_id("reconnect-banner")).to_be_visible()
        await expect(alice.by_id("reconnect-banner")).to_be_hidden(timeout=15_000)
        assert await alice.js("() => window.__roundtable_socket.id") != first_sid
        assert await connections(other) == 1  # through nginx, to the process still running

        # The conversation so far is still there, once; Alice carries on.
        assert await alice.ids() == before
        await expect(alice.role("user")).to_have_text(shows(FIRST_QUESTION))
        await expect(alice.role("assistant")).to_have_text(shows(FIRST_ANSWER))
        upstream.enqueue(Text(SECOND_ANSWER, delay=0.02))
        await alice.say(SECOND_QUESTION)
        said = await bob.wait_for("message", count=2, where=lambda m: m.get("role") == "user")
        assert (said["name"], said["content"]) == ("Alice", SECOND_QUESTION)
        await bob.wait_for("ai-end", count=2)
        await expect(alice.role("assistant").last).to_contain_text(SECOND_ANSWER)
        await alice.idle()

        # Past the lease, a surviving process cleans up after the dead one (Alice's old
        # connection leaves the roster). Alice, connected again, stays in the room for herself
        # and for Bob, and carries on.
        await cleaned_up_after(held, nodes)
        upstream.enqueue(Text(THIRD_ANSWER, delay=0.02))
        await alice.say(THIRD_QUESTION)
        said = await bob.wait_for("message", count=3, where=lambda m: m.get("role") == "user")
        assert (said["name"], said["content"]) == ("Alice", THIRD_QUESTION)
        await bob.wait_for("ai-end", count=3)
        await expect(alice.role("assistant").last).to_contain_text(THIRD_ANSWER)
        await alice.idle()
        asked = [FIRST_QUESTION, SECOND_QUESTION, THIRD_QUESTION]
        answered = [FIRST_ANSWER, SECOND_ANSWER, THIRD_ANSWER]
        await expect(alice.role("user")).to_have_text(shows(*asked))
        await expect(alice.role("assistant")).to_have_text(shows(*answered))
        assert [a["content"] for a in bob.answers()] == answered
        # (Any presence change from the clean-up came before the third message, in the room's
        # one order of events.)
        await expect(alice.by_id("reconnect-banner")).to_be_hidden()
        await expect(alice.by_id("online-user")).to_have_count(2)
        assert online_for(bob, "Alice")

        # A reload through nginx gets the whole conversation from the surviving process.
        after = await alice.ids()
        await alice.open(proxy.url)
        await alice.join("Alice")
        await expect(alice.messages).to_have_count(len(after))
        assert await alice.ids() == after
        assert not alice.errors, alice.errors
    finally:
        await context.close()
        await bob.close()
        print("===== Chromium console =====\n" + "\n".join(console), file=sys.stderr)
