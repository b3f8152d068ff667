"""`POST /stream`: the original Vue client's streaming toggle goes through the same room."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.fake_upstream import FakeUpstream, Text
from tests.peers import Peer

pytestmark = pytest.mark.timeout(30)


def original_message(user_id: str, content: str) -> dict[str, object]:
    """The body the original client posts: its whole message object."""
    return {"user_id": user_id, "name": "Somebody Else", "content": content, "role": "user",
            "id": "1732212345678abcdefg", "created_at": 1732212345678}


async def test_stream_answers_in_the_body_and_to_every_socket(
    server: RunningServer, peers: Callable[..., Peer], upstream: FakeUpstream
):
    alice, bob = peers("Alice", user_id="1732000000000alice"), peers("Bob")
    await alice.join()
    await bob.join()
    upstream.enqueue(Text("Streamed to the body and the room.", delay=0.01))
    chunks: list[bytes] = []
    async with aiohttp.ClientSession() as http, http.post(
        f"{server.url}/stream", json=original_message(alice.user_id or "", "hello via http")
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        async for chunk in resp.content.iter_any():
            chunks.append(chunk)
    assert b"".join(chunks).decode() == "Streamed to the body and the room."
    await bob.wait_for("ai-end")
    [msg] = bob.of("message")
    assert (msg["name"], msg["user_id"], msg["content"]) == ("Alice", alice.user_id,
                                                             "hello via http")
    assert msg["id"] == "1732212345678abcdefg"
    assert bob.answers()[0]["content"] == "Streamed to the body and the room."
    await alice.wait_for("ai-end")
    # Alice's own client shows her message and the answer from the HTTP exchange.
    assert alice.of("message") == [] and alice.answers() == []
    assert "Please address the user as Alice." in upstream.model_requests()[0].json[
        "instructions"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [(None, 400, "invalid_payload"), ({"content": "x"}, 400, "invalid_payload"),
     ({"user_id": "nobody", "content": "x"}, 403, "not_registered")],
)
async def test_stream_refuses_unknown_users_and_bad_bodies(
    server: RunningServer, peers: Callable[..., Peer], upstream: FakeUpstream,
    body: object, status: int, code: str,
):
    bob = peers("Bob")
    await bob.join()
    async with aiohttp.ClientSession() as http, http.post(
        f"{server.url}/stream", data=b"not json" if body is None else None,
        json=body if body is not None else None,
    ) as resp:
        assert resp.status == status
        assert (await resp.json())["code"] == code
    assert server.room.transcript == [] and upstream.model_requests() == []
    assert bob.of("message") == []


async def test_stream_cors_preflight_follows_the_origin_policy(server: RunningServer):
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"}
        async with http.options(f"{server.url}/stream", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
        headers["Origin"] = "http://evil.example"
        async with http.options(f"{server.url}/stream", headers=headers) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
