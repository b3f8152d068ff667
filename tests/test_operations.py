"""What operators watch: /metrics (parsed with prometheus_client's own parser), /readyz."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import Call, FakeUpstream, HTTPError, Text, ToolCalls
from tests.peers import Peer

pytestmark = pytest.mark.timeout(30)


async def scrape(server: RunningServer, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{server.url}/metrics", headers=headers) as resp:
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_turns_tools_failures_and_refusals(
    start_server: StartServer, upstream: FakeUpstream
):
    server = await start_server(provider_max_retries=1)
    alice, bob = Peer(server.url, "Alice"), Peer(server.url, "Bob", room="design")
    for peer in (alice, bob):
        await peer.join()
    status, before = await scrape(server)
    assert status == 200
    start = samples(before)
    assert value(start, "roundtable_rooms_open") == 2
    assert value(start, "roundtable_people") == 2
    assert value(start, "roundtable_connections") == 2
    upstream.enqueue(
        Text("one two three", delay=0.01),  # a plain answer
        ToolCalls([Call("who_is_here", "{}")]), Text("Just you."),  # a tool, then text
        HTTPError(503), Text("after a retry"),  # retried by the SDK, then answered
        HTTPError(401),  # fails: not retried
    )
    for n, text in enumerate(["hi", "who is here?", "again", "and fail"], 1):
        await alice.say(text)
        await alice.wait_for("ai-end", count=n)
    refused = await alice.call("message", {"content": ""})
    assert refused["code"] == "empty_message"
    _, after = await scrape(server)
    found = samples(after)
    assert value(found, "roundtable_turns_started_total") == 4
    assert value(found, "roundtable_turns_completed_total") == 3
    assert value(found, "roundtable_turns_failed_total", kind="ProviderAuthError") == 1
    assert value(found, "roundtable_provider_retries_total") >= 1
    assert value(found, "roundtable_tool_calls_total", tool="who_is_here", outcome="ok") == 1
    assert value(found, "roundtable_refused_requests_total", code="empty_message") == 1
    assert value(found, "roundtable_time_to_first_delta_seconds_count") == 3
    assert value(found, "roundtable_answer_duration_seconds_count") == 4
    assert value(found, "roundtable_deltas_sent_total") >= 3
    # every event of Alice's four turns reached her; Bob, in another room, got none of them
    assert value(found, "roundtable_frames_sent_total") >= len(alice.events)
    assert value(found, "roundtable_turns_waiting") == 0
    for peer in (alice, bob):
        await peer.close()


async def test_metrics_token_is_required_when_set(start_server: StartServer):
    server = await start_server(metrics_token="scrape-me")
    assert (await scrape(server))[0] == 401
    assert (await scrape(server, Authorization="Bearer wrong"))[0] == 401
    status, text = await scrape(server, Authorization="Bearer scrape-me")
    assert status == 200 and "roundtable_turns_started_total" in text


async def test_readyz_says_ready_when_the_provider_is_open(server: RunningServer):
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/readyz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ready", "provider": "open"}


async def test_refused_connections_are_counted(start_server: StartServer):
    server = await start_server(room_password="sesame")
    intruder = Peer(server.url, "Intruder")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await intruder.connect()
    _, text = await scrape(server)
    assert value(samples(text), "roundtable_refused_requests_total", code="unauthorized") == 1
