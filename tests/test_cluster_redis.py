"""Redis trouble under a cluster: dropped connections lose and repeat nothing; while Redis is
down people are told `unavailable`; when it comes back (empty) the cluster carries on."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.cluster import (  # noqa: F401
    RedisServer,
    StartCluster,
    cluster_fixture,
    redis_server_fixture,
)
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer
from tests.test_cluster import close_all, joined, told_to_resync

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(120)]


async def readyz(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


async def until_ready(url: str, want: int, timeout: float = 15) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await readyz(url)
        if status == want:
            return body
        assert loop.time() < deadline, f"/readyz stayed {status}: {body}"
        await asyncio.sleep(0.2)


async def test_dropped_redis_connections_lose_and_repeat_no_delta(
    cluster: StartCluster, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    peers = await joined(nodes, "Alice", "Bob", "Carol")
    upstream.enqueue(Text(" ".join(f"w{i}" for i in range(120)), delay=0.02))
    await peers[0].say("go")
    await peers[2].wait_for("message-delta", count=5)
    admin = await redis_server.client()
    for _ in range(4):  # every server process's connections, cut mid-answer
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await asyncio.sleep(0.4)
    for peer in peers:
        await peer.wait_for("ai-end", timeout=20)
    answer = peers[0].answers()[-1]
    assert answer["content"] == " ".join(f"w{i}" for i in range(120))
    for peer in peers:
        assert peer.streamed(answer["id"]) == answer["content"]
        assert len(peer.answers()) == 1
        assert peer.names().count("ai-start") == 1
    await close_all(*peers)


async def test_while_redis_is_down_people_are_told_unavailable_then_it_recovers(
    cluster: StartCluster, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")
    upstream.enqueue(Text("first answer"))
    await alice.say("remember this")
    await bob.wait_for("ai-end")
    await redis_server.stop()
    body = await until_ready(nodes[1].url, 503)
    assert body["redis"] == "unreachable"
    ack = await bob.call("message", {"content": "anyone?"}, timeout=10)
    assert ack["ok"] is False and ack["code"] == "unavailable"
    await bob.wait_for("error", where=lambda e: e["code"] == "unavailable")
    carol = Peer(nodes[0].url, "Carol")
    await carol.connect()
    refused = await carol.call("register", {"name": "Carol"}, timeout=10)
    assert refused["code"] == "unavailable"
    await redis_server.start()  # an empty Redis on the same port
    for node in nodes:
        assert (await until_ready(node.url, 200))["redis"] == "ok"
    for peer in (alice, bob, carol):  # they reconnect and register again
        await told_to_resync(peer)
    again = [Peer(nodes[1].url, "Bob"), Peer(nodes[0].url, "Alice")]
    for peer in again:
        await peer.join()
    history = await again[0].wait_for("message-list")
    assert [m["content"] for m in history] == ["remember this", "first answer"]
    upstream.enqueue(Text("second answer"))
    await again[0].say("still there?")
    await again[1].wait_for("ai-end")
    assert again[1].answers()[-1]["content"] == "second answer"
    assert len(upstream.conversations) == 1  # the same thread goes on
    await close_all(*again)


async def test_a_redis_restart_mid_answer_resyncs_clients_and_keeps_history_and_queue(
    cluster: StartCluster, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")  # Alice's process runs the room
    upstream.enqueue(Text("word " * 300, delay=0.05), Text("answer two"))
    first = await alice.call("message", {"content": "a long one"})
    await bob.wait_for("message-delta", count=3)
    second = await bob.call("message", {"content": "two"})
    assert first["ok"] and second["ok"]
    await redis_server.restart()  # its data is gone
    for peer in (alice, bob):
        await told_to_resync(peer, within=15)
    again = [Peer(nodes[0].url, "Alice", user_id=alice.user_id),
             Peer(nodes[1].url, "Bob", user_id=bob.user_id)]
    for peer in again:
        await peer.join()
    history = await again[1].wait_for("message-list")
    assert history[0]["content"] == "a long one"
    assert history[2:] in ([], [m for m in history if m["id"] == second["id"]])  # taken yet?
    assert history[1]["incomplete"] is True and history[1]["content"].startswith("word")
    await again[1].wait_for("ai-end", timeout=20)
    assert again[1].answers()[-1]["reply_to"] == second["id"]
    assert again[1].answers()[-1]["content"] == "answer two"
    assert len(upstream.conversations) == 1
    await close_all(*again)
