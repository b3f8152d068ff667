"""Several server processes on one real Redis act as one server (docs/cluster.md): clients spread
over three processes see one room, whichever process they reach."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.cluster import Cluster, StartCluster, cluster_fixture, redis_server_fixture  # noqa: F401
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(120)]


async def joined(nodes: Cluster, *names: str, room: str | None = None) -> list[Peer]:
    """One peer per name, the i-th on process i % n, registered in order."""
    peers = [Peer(nodes[i % len(nodes)].url, name, room=room) for i, name in enumerate(names)]
    for peer in peers:
        await peer.join()
    return peers


def room_events(peer: Peer) -> list[tuple[str, Any]]:
    """What the peer received from its first `message` on: the part every member shares."""
    names = peer.names()
    first = names.index("message")
    return [(e, d) for e, d in peer.events[first:] if e not in ("join", "leave")]


async def told_to_resync(peer: Peer, within: float = 10) -> None:
    """The server disconnected the peer (so that it reconnects and registers again)."""
    for _ in range(int(within * 10)):
        if not peer.sio.connected:
            break
        await asyncio.sleep(0.1)
    assert not peer.sio.connected


async def close_all(*peers: Peer) -> None:
    await asyncio.gather(*(peer.close() for peer in peers))


@pytest.mark.parametrize("llm_api", ["responses", "assistants", "chat"])
async def test_one_room_same_events_in_the_same_order_on_every_process(
    cluster: StartCluster, upstream: FakeUpstream, llm_api: str
) -> None:
    nodes = await cluster(n=3, llm_api=llm_api)
    await nodes.wait_ready()
    peers = await joined(nodes, "Alice", "Bob", "Carol", "Dave", "Erin", "Frank")
    welcome = peers[-1].of("welcome")[0]
    assert [u["name"] for u in welcome["users"]] == ["Alice", "Bob", "Carol", "Dave", "Erin",
                                                      "Frank"]
    upstream.enqueue(Text("First answer, streamed in pieces", delay=0.01),
                     Text("Second answer", delay=0.01))
    assert (await peers[1].call("message", {"content": "question one"}))["ok"]
    await peers[2].say("question two")
    for peer in peers:
        await peer.wait_for("ai-end", count=2)
    reference = room_events(peers[0])
    assert [e for e, _ in reference if e not in ("message-delta", "message")] == [
        "ai-start", "message-start", "message-list", "ai-end",
        "ai-start", "message-start", "message-list", "ai-end",
    ]
    for peer in peers[3:]:  # the senders' own messages are not echoed to them
        assert room_events(peer) == reference
    for answer in peers[0].answers():
        for peer in peers:
            assert peer.streamed(answer["id"]) == answer["content"]
    late = Peer(nodes[0].url, "Grace")  # the thread, as a newcomer sees it
    await late.join()
    assert [m["content"] for m in await late.wait_for("message-list")] == [
        "question one", "First answer, streamed in pieces", "question two", "Second answer"]
    await close_all(*peers, late)


async def test_join_and_leave_once_per_person_across_processes(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    (carol,) = await joined(nodes, "Carol")
    tab1 = Peer(nodes[1].url, "Alice")
    await tab1.join()
    tab2 = Peer(nodes[2].url, "Alice", user_id=tab1.user_id)
    welcome = await tab2.join()
    assert welcome["user_id"] == tab1.user_id
    assert [u["name"] for u in welcome["users"]] == ["Carol", "Alice"]
    await tab1.close()
    await asyncio.sleep(0.5)
    assert [d["name"] for d in carol.of("join")] == ["Alice"]
    assert carol.of("leave") == []
    await tab2.close()
    await carol.wait_for("leave")
    assert [d["name"] for d in carol.of("leave")] == ["Alice"]
    await carol.close()


async def test_fifty_registrations_of_one_name_spread_over_processes_have_one_winner(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    peers = [Peer(nodes[i % 3].url, "Zed") for i in range(50)]
    await asyncio.gather(*(peer.connect() for peer in peers))
    acks = await asyncio.gather(*(peer.call("register", {"name": "zed"}) for peer in peers))
    assert sum(1 for ack in acks if ack["ok"]) == 1
    assert {ack["code"] for ack in acks if not ack["ok"]} == {"name_taken"}
    await close_all(*peers)


async def test_stop_sent_through_another_process_cancels_the_answer_upstream(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    alice, bob, carol = await joined(nodes, "Alice", "Bob", "Carol")  # Alice's process owns it
    upstream.enqueue(Text("word " * 200, delay=0.05))
    await alice.say("tell me a long story")
    await carol.wait_for("message-delta")
    ack = await bob.call("stop")
    assert ack == {"ok": True, "stopped": True}
    for peer in (alice, bob, carol):
        await peer.wait_for("ai-end")
        await peer.wait_for("message", where=lambda m: m["content"] == "Bob stopped the answer.")
    answer = carol.answers()[-1]
    assert answer["incomplete"] is True
    assert carol.streamed(answer["id"]) == answer["content"]
    await asyncio.sleep(0.5)
    (response,) = upstream.responses.values()
    assert response.get("client_disconnected") is True
    await close_all(alice, bob, carol)


async def test_a_late_joiner_on_another_process_gets_the_answer_so_far_then_the_rest(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")
    upstream.enqueue(Text("earlier answer"), Text(" ".join(f"w{i}" for i in range(60)),
                                                  delay=0.03))
    await alice.say("first")
    await bob.wait_for("ai-end")
    await alice.say("second")
    await bob.wait_for("message-delta", count=5)
    carol = Peer(nodes[2].url, "Carol")
    welcome = await carol.join()
    assert welcome["busy"] is True
    await carol.wait_for("ai-end")
    history = await carol.wait_for("message-list")
    assert [m["content"] for m in history] == ["first", "earlier answer", "second"]
    (start,) = carol.of("message-start")
    final = carol.answers()[-1]
    assert start["id"] == final["id"]
    assert start["content"] + carol.streamed(final["id"]) == final["content"]
    await bob.wait_for("ai-end", count=2)
    assert final["content"] == bob.answers()[-1]["content"]
    await close_all(alice, bob, carol)


async def test_the_thread_is_deleted_once_when_the_last_person_of_the_cluster_leaves(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")
    upstream.enqueue(Text("hi"))
    await alice.say("hello")
    await bob.wait_for("ai-end")
    await alice.close()  # the owner's last person: the room goes on elsewhere
    await bob.wait_for("leave")
    upstream.enqueue(Text("still here"))
    await bob.say("anyone?")
    await bob.wait_for("ai-end", count=2)
    assert bob.answers()[-1]["content"] == "still here"
    assert upstream.deleted_conversations == []
    await bob.close()
    for _ in range(50):
        if upstream.deleted_conversations:
            break
        await asyncio.sleep(0.1)
    assert len(upstream.deleted_conversations) == 1
    assert upstream.conversations == {}  # deleted ones are gone


async def test_stream_route_answers_from_any_process_of_the_person(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    alice, bob = await joined(nodes, "Alice", "Bob")  # the answer runs on Alice's process
    tab = Peer(nodes[2].url, "Bob", user_id=bob.user_id)  # Bob's second tab, elsewhere
    await tab.join()
    upstream.enqueue(Text("Streamed to the body and the room.", delay=0.01))
    async with aiohttp.ClientSession() as http, http.post(
        f"{nodes[1].url}/stream", json={"user_id": bob.user_id, "content": "via http"}
    ) as resp:
        assert resp.status == 200
        body = await resp.text()
    assert body == "Streamed to the body and the room."
    await alice.wait_for("ai-end")
    assert alice.answers()[0]["content"] == body
    await asyncio.sleep(0.3)
    for own in (bob, tab):  # the asker's own sockets show both from the HTTP exchange
        assert own.of("message") == [] and own.answers() == []
    await close_all(alice, bob, tab)


async def test_every_process_lists_the_rooms_open_anywhere(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=3)
    await nodes.wait_ready()
    peers = [*await joined(nodes, "Alice", "Bob"), Peer(nodes[2].url, "Carol", room="design")]
    await peers[-1].join()
    async with aiohttp.ClientSession() as http:
        for node in nodes:
            async with http.get(f"{node.url}/api/rooms") as resp:
                rooms = {r["name"]: r["people"] for r in (await resp.json())["rooms"]}
            assert rooms == {"main": 2, "design": 1}
        await peers[-1].close()
        await peers[0].wait_for("join")  # Bob's, after Alice's welcome: the room is settled
        await asyncio.sleep(0.3)
        async with http.get(f"{nodes[0].url}/api/rooms") as resp:
            assert [r["name"] for r in (await resp.json())["rooms"]] == ["main"]
    await close_all(*peers)


async def test_a_burst_of_registrations_on_one_process_opens_the_room_once(
    cluster: StartCluster, upstream: FakeUpstream
) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    peers = [Peer(nodes[1].url, f"P{i}") for i in range(30)]
    await asyncio.gather(*(peer.connect() for peer in peers))
    acks = await asyncio.gather(*(peer.call("register", {"name": p.name}) for p in peers
                                  for peer in [p]))
    assert all(ack["ok"] for ack in acks)
    assert nodes[1].output().count("opened room main") == 1
    await close_all(*peers)
