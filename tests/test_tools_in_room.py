"""Function tools through the whole room, for every provider: status events, outputs, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.fake_upstream import Call, FakeUpstream, Text, ToolCalls
from tests.peers import Peer
from tests.threads import LLM_APIS

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=LLM_APIS)
def llm_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def turn(start_server: StartServer, upstream: FakeUpstream, *script: Any,
               **settings: Any) -> tuple[list[Peer], list[dict[str, Any]]]:
    """Two people; Ann asks; the model follows `script`. Returns the peers and tool outputs."""
    server = await start_server(tools_module="tests.room_tools", **settings)
    ann, ben = Peer(server.url, "Ann"), Peer(server.url, "Ben")
    await ann.join()
    await ben.join()
    upstream.enqueue(*script)
    await ann.say("who presents first?")
    for peer in (ann, ben):
        await peer.wait_for("ai-end")
    return [ann, ben], list(upstream.tool_outputs)


def statuses(peer: Peer) -> list[tuple[str, str]]:
    return [(e["name"], e["status"]) for e in peer.of("tool-call")]


def errors(outputs: list[dict[str, Any]]) -> list[str]:
    return [json.loads(o["output"]).get("error", "") for o in outputs]


async def close(peers: list[Peer]) -> None:
    for peer in peers:
        await peer.close()


async def test_one_call(start_server: StartServer, upstream: FakeUpstream):
    peers, outputs = await turn(start_server, upstream,
                                ToolCalls([Call("pick_participant", '{"count": 2}')]),
                                Text("Ben goes first, then Ann."))
    for peer in peers:
        assert statuses(peer) == [("pick_participant", "started"),
                                  ("pick_participant", "finished")]
        [answer] = peer.answers()
        assert answer["content"] == "Ben goes first, then Ann."
        assert {e["message_id"] for e in peer.of("tool-call")} == {answer["id"]}
        assert not [m for m in peer.of("message") if m["role"] == "system"]
    picked = json.loads(outputs[0]["output"])["picked"]
    assert sorted(picked) == ["Ann", "Ben"]
    await close(peers)


async def test_two_parallel_calls(start_server: StartServer, upstream: FakeUpstream):
    peers, outputs = await turn(
        start_server, upstream,
        ToolCalls([Call("current_time", '{"timezone": "Europe/Oslo"}'),
                   Call("who_is_here", "{}")]),
        Text("It is morning in Oslo and Ann and Ben are here."))
    for peer in peers:
        assert sorted(statuses(peer)) == sorted([
            ("current_time", "started"), ("who_is_here", "started"),
            ("current_time", "finished"), ("who_is_here", "finished")])
        assert peer.answers()[0]["content"] == "It is morning in Oslo and Ann and Ben are here."
    assert json.loads(outputs[0]["output"])["timezone"] == "Europe/Oslo"
    assert [p["name"] for p in json.loads(outputs[1]["output"])] == ["Ann", "Ben"]
    await close(peers)


async def test_two_rounds(start_server: StartServer, upstream: FakeUpstream):
    peers, outputs = await turn(
        start_server, upstream,
        ToolCalls([Call("roll_dice", '{"sides": 6}')]),
        ToolCalls([Call("roll_dice", '{"sides": 20, "count": 2}')]),
        Text("Rolled twice."))
    for peer in peers:
        assert [s for s in statuses(peer) if s[1] == "finished"] == [("roll_dice", "finished")] * 2
        assert peer.answers()[0]["content"] == "Rolled twice."
    assert len(json.loads(outputs[1]["output"])["rolls"]) == 2
    await close(peers)


@pytest.mark.parametrize(
    ("call", "expected"),
    [(Call("no_such_tool", "{}"), "unknown tool 'no_such_tool'"),
     (Call("roll_dice", "{not json"), "invalid arguments"),
     (Call("roll_dice", '{"sides": "six"}'), "sides"),
     (Call("explode", '{"reason": "kaboom"}'), "RuntimeError: kaboom"),
     (Call("slow_tool", '{"seconds": 5}'), "timed out")],
    ids=["unknown", "bad-json", "bad-schema", "raises", "times-out"],
)
async def test_failing_calls_are_reported_to_the_model_and_the_room(
    start_server: StartServer, upstream: FakeUpstream, call: Call, expected: str
):
    peers, outputs = await turn(start_server, upstream, ToolCalls([call]),
                                Text("Sorry, that did not work."), tool_timeout=0.3)
    [error] = errors(outputs)
    assert expected in error
    for peer in peers:
        assert statuses(peer) == [(call.name, "started"), (call.name, "failed")]
        assert peer.answers()[0]["content"] == "Sorry, that did not work."
        assert peer.names()[-1] == "ai-end"
    # The room carries on normally afterwards.
    await peers[1].say("and now?")
    await peers[0].wait_for("ai-end", count=2)
    assert peers[0].answers()[-1]["content"] == "Echo: [Ben] and now?"
    await close(peers)


async def test_round_limit_makes_the_model_answer(start_server: StartServer,
                                                  upstream: FakeUpstream):
    peers, outputs = await turn(
        start_server, upstream,
        ToolCalls([Call("roll_dice", "{}")]), ToolCalls([Call("roll_dice", "{}")]),
        Text("Fine, one roll it is."), tool_max_rounds=1)
    assert "round limit (1) reached" in errors(outputs)[1]
    for peer in peers:
        assert peer.answers()[0]["content"] == "Fine, one roll it is."
        assert statuses(peer) == [("roll_dice", "started"), ("roll_dice", "finished")]
    await close(peers)


async def test_a_model_that_never_stops_calling_tools_is_cut_off(
    start_server: StartServer, upstream: FakeUpstream
):
    loop = [ToolCalls([Call("roll_dice", "{}")]) for _ in range(4)]
    peers, _ = await turn(start_server, upstream, *loop, tool_max_rounds=1)
    for peer in peers:
        notice = [m for m in peer.of("message") if m["role"] == "system"]
        assert notice and "kept calling tools" in notice[0]["content"]
        assert peer.names()[-1] == "ai-end"
    await close(peers)


async def test_tools_can_be_switched_off(start_server: StartServer, upstream: FakeUpstream,
                                         llm_api: str):
    server = await start_server(tools_enabled="none")
    ann = Peer(server.url, "Ann")
    await ann.join()
    await ann.say("hi")
    await ann.wait_for("ai-end")
    body = upstream.model_requests()[-1].json
    assert not body.get("tools")
    await ann.close()


