"""A cluster loses a process (kill -9, SIGTERM, SIGSTOP past its lease) while it answers: the
room carries on from another process, nothing accepted is lost and no turn is answered twice."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.cluster import StartCluster, cluster_fixture, redis_server_fixture  # noqa: F401
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer
from tests.test_cluster import close_all, joined, told_to_resync

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(120)]

LONG = "word " * 300  # 15 s at 0.05 s a delta: still streaming when the process goes
CUT_SHORT = "cut short"


def is_cut_notice(message: dict[str, Any]) -> bool:
    return message["role"] == "system" and CUT_SHORT in message["content"]


async def ended_elsewhere(peer: Peer, timeout: float = 15) -> dict[str, Any]:
    """The notice, the partial answer (kept, incomplete) and ai-end; the partial answer."""
    await peer.wait_for("message", where=is_cut_notice, timeout=timeout)
    await peer.wait_for("ai-end", timeout=timeout)
    partial = peer.answers()[0]
    assert partial["incomplete"] is True
    assert partial["content"] and peer.streamed(partial["id"]) == partial["content"]
    return partial


async def metric(url: str, name: str) -> float:
    """One unlabelled sample from the process's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


def answered_once_in_order(peer: Peer, asked: list[str]) -> None:
    answers = peer.answers()
    assert [a["reply_to"] for a in answers] == asked


@pytest.mark.parametrize("llm_api", ["responses", "assistants"])
async def test_kill_9_of_the_answering_process_the_room_carries_on(
    cluster: StartCluster, upstream: FakeUpstream, llm_api: str
) -> None:
    nodes = await cluster(n=3, llm_api=llm_api)
    await nodes.wait_ready()
    alice, bob, carol = await joined(nodes, "Alice", "Bob", "Carol")  # Alice's process owns it
    upstream.enqueue(Text(LONG, delay=0.05), Text("answer two"), Text("answer three"))
    first = await alice.call("message", {"content": "a long one"})
    await bob.wait_for("message-delta", count=3)
    second = await bob.call("message", {"content": "two"})
    third = await carol.call("message", {"content": "three"})
    assert first["ok"] and second["ok"] and third["ok"]
    loop = asyncio.get_running_loop()
    killed = loop.time()
    await nodes[0].kill()
    for peer in (bob, carol):
        await ended_elsewhere(peer)
    assert loop.time() - killed < 15
    for peer in (bob, carol):
        await peer.wait_for("ai-end", count=3, timeout=15)
        answered_once_in_order(peer, [first["id"], second["id"], third["id"]])
        assert [a["content"] for a in peer.answers()[1:]] == ["answer two", "answer three"]
    await bob.wait_for("leave", where=lambda d: d["name"] == "Alice", timeout=15)
    scraped = [await metric(node.url, "roundtable_answers_taken_over_total") for node in nodes[1:]]
    assert sorted(scraped) == [0, 1]
    assert [await metric(node.url, "roundtable_redis_up") for node in nodes[1:]] == [1, 1]
    if llm_api == "assistants":  # the dead process's run was cancelled upstream
        assert upstream.active_runs() == []
        assert any(run["status"] == "cancelled" for run in upstream.runs.values())
    await close_all(bob, carol)


async def test_sigterm_hands_the_room_over_and_deletes_no_thread_in_use(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    alice, bob, carol = await joined(nodes, "Alice", "Bob", "Carol")
    upstream.enqueue(Text(LONG, delay=0.05), Text("answer two"))
    first = await alice.call("message", {"content": "a long one"})
    await bob.wait_for("message-delta", count=3)
    second = await bob.call("message", {"content": "two"})
    assert await nodes[0].terminate() == 0
    for peer in (bob, carol):
        await ended_elsewhere(peer)
        await peer.wait_for("ai-end", count=2, timeout=15)
        answered_once_in_order(peer, [first["id"], second["id"]])
    assert upstream.deleted_conversations == []
    assert len(upstream.conversations) == 1
    await close_all(bob, carol)


async def test_sigterm_of_the_last_process_deletes_every_thread(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    peers = [*await joined(nodes, "Alice", "Bob"), *await joined(nodes, "Carol", "Dave",
                                                                  room="design")]
    upstream.enqueue(Text("one"), Text("two"))
    await peers[0].say("hello main")
    await peers[2].say("hello design")
    for peer in peers:
        await peer.wait_for("ai-end")
    assert len(upstream.conversations) == 2
    assert await nodes[0].terminate() == 0
    assert upstream.deleted_conversations == []
    assert await nodes[1].terminate() == 0
    assert len(upstream.deleted_conversations) == 2
    assert upstream.conversations == {}


async def test_a_paused_process_never_writes_into_a_room_taken_over(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")
    # Upstream, the paused process's response runs on (4 s); until it ends the conversation is
    # locked, and the next answer waits for it (server/providers/responses.py).
    upstream.enqueue(Text("word " * 80, delay=0.05), Text("answer two", delay=0.05))
    first = await alice.call("message", {"content": "a long one"})
    await bob.wait_for("message-delta", count=3)
    second = await bob.call("message", {"content": "two"})
    await nodes[0].pause()
    partial = await ended_elsewhere(bob)
    await bob.wait_for("ai-end", count=2, timeout=15)
    await nodes[0].resume()
    await asyncio.sleep(3)  # the paused owner wakes up mid-answer, past its lease
    answered_once_in_order(bob, [first["id"], second["id"]])
    ends = [i for i, name in enumerate(bob.names()) if name == "ai-end"]
    late = [d for name, d in bob.events[ends[0]:] if name == "message-delta"]
    assert all(d["id"] != partial["id"] for d in late)
    assert bob.names().count("ai-start") == 2
    assert bob.names().count("ai-end") == 2
    await told_to_resync(alice, within=5)  # the woken process was taken for dead
    await close_all(alice, bob)


async def test_a_turn_still_deciding_when_its_process_dies_is_answered_elsewhere(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=2, REPLY_MODE="auto")
    await nodes.wait_ready()
    _alice, bob = await joined(nodes, "Alice", "Bob")
    # "NO" may still become NO_REPLY: nothing is shown while the model hesitates
    upstream.enqueue(Text("NOPE, nothing yet", chunks=["NO", "PE, nothing yet"], delay=5),
                     Text("Here is my answer"))
    asked = await bob.call("message", {"content": "what do you think?"})
    await asyncio.sleep(1)
    assert "ai-start" not in bob.names()
    await nodes[0].kill()
    await bob.wait_for("ai-end", timeout=15)
    answered_once_in_order(bob, [asked["id"]])
    assert bob.answers()[0]["content"] == "Here is my answer"
    late = Peer(nodes[1].url, "Carol")
    await late.join()
    history = await late.wait_for("message-list")
    assert [m["content"] for m in history] == ["what do you think?", "Here is my answer"]
    await close_all(bob, late)
