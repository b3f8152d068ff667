"""Several server processes on one real Redis act as one server (docs/cluster.md)."""

from __future__ import annotations

import pytest

from tests.cluster import StartCluster, cluster_fixture, redis_server_fixture  # noqa: F401
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(90)]


async def test_one_room_across_processes(cluster: StartCluster, upstream: FakeUpstream) -> None:
    nodes = await cluster(n=2)
    await nodes.wait_ready()
    alice, bob = Peer(nodes[0].url, "Alice"), Peer(nodes[1].url, "Bob")
    await alice.join()
    welcome = await bob.join()
    assert [u["name"] for u in welcome["users"]] == ["Alice", "Bob"]
    await alice.wait_for("join", where=lambda d: d["name"] == "Bob")
    upstream.enqueue(Text("Hello from the cluster", delay=0.01))
    await bob.say("hi all")
    await alice.wait_for("message", where=lambda d: d["content"] == "hi all")
    for peer in (alice, bob):
        await peer.wait_for("ai-end")
    answer = alice.answers()[-1]
    assert answer["content"] == "Hello from the cluster"
    assert alice.streamed(answer["id"]) == bob.streamed(answer["id"]) == answer["content"]
    for peer in (alice, bob):
        await peer.close()
    print(nodes.dump())
