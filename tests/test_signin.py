"""Sign-in by a proxy (TRUSTED_USER_HEADER, TRUSTED_PROXIES): real clients over loopback, where
the test plays the proxy by sending the header itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio

from server.config import ConfigError, load_settings
from tests.conftest import RunningServer, StartServer
from tests.fake_upstream import FakeUpstream, Text
from tests.tools_for_tests import Crowd, Person, wait_until

HEADER = "X-Forwarded-User"


def signed(name: str) -> dict[str, Any]:
    return {"headers": {HEADER: name}}


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    made = Crowd()
    yield made
    await made.close()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server(trusted_user_header=HEADER)


async def refused(person: Person, **connect: Any) -> str:
    """Connect, expect a refusal, return its reason."""
    with pytest.raises(socketio.exceptions.ConnectionError):
        await person.connect(**connect)
    await wait_until(lambda: bool(person.refusals), what="the refusal reason")
    return str(person.refusals[0]["message"])


async def test_the_header_names_the_person_whatever_register_says(
    server: RunningServer, crowd: Crowd, upstream: FakeUpstream
):
    alice, bob = crowd(server, "Mallory"), crowd(server, "Bobby")
    await alice.connect(**signed("alice"))
    await bob.connect(**signed("bob"))
    welcome = await alice.join()
    assert welcome["name"] == "alice"
    await bob.join()
    assert (await alice.wait_for("join"))["name"] == "bob"
    upstream.enqueue(Text("Hello alice"))
    await alice.say("hi", name="carol", user_id="u-other")
    said = await bob.wait_for("message")
    assert (said["name"], said["user_id"]) == ("alice", welcome["user_id"])
    await bob.wait_for("ai-end")
    assert [u["name"] for u in server.room.users()] == ["alice", "bob"]


async def test_two_tabs_of_one_signed_in_person_are_one_person(
    server: RunningServer, crowd: Crowd
):
    first, second, watcher = crowd(server, "x"), crowd(server, "y"), crowd(server, "w")
    await watcher.connect(**signed("watcher"))
    await watcher.join()
    await first.connect(**signed("alice"))
    await second.connect(**signed("Alice"))  # the proxy's spelling may vary: one nickname
    one, two = await first.join(), await second.join()
    assert one["user_id"] == two["user_id"]
    assert "error" not in second.names()
    assert len(server.room.users()) == 2
    assert len(watcher.of("join")) == 1  # one person arrived, in two tabs
    await first.close()
    assert watcher.of("leave") == []  # the second tab is still here


@pytest.mark.parametrize("value", [None, "   ", "x" * 33, "al\u202eice"])
async def test_a_missing_or_invalid_header_is_refused_at_connect(
    server: RunningServer, crowd: Crowd, value: str | None
):
    person = crowd(server, "Mallory")
    reason = await refused(person, **({} if value is None else signed(value)))
    assert reason.startswith(("sign-in required", "sign-in refused")), reason
    assert HEADER in reason
    assert server.rooms.people() == 0


async def test_a_connection_not_from_a_trusted_proxy_is_refused(
    start_server: StartServer, crowd: Crowd
):
    server = await start_server(trusted_user_header=HEADER, trusted_proxies=("10.9.9.9",))
    person = crowd(server, "alice")
    reason = await refused(person, **signed("alice"))
    assert "proxy" in reason and "sign-in required" in reason


async def test_http_routes_need_the_proxy_too(
    start_server: StartServer, server: RunningServer, crowd: Crowd, upstream: FakeUpstream
):
    untrusted = await start_server(trusted_user_header=HEADER, trusted_proxies=("10.9.9.9",))
    alice = crowd(server, "ignored")
    await alice.connect(**signed("alice"))
    await alice.join()
    upstream.enqueue(Text("Streamed to alice"))
    async with aiohttp.ClientSession() as http:
        async def status(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
            async with http.request(method, url, **kwargs) as resp:
                body = await (resp.json() if resp.content_type == "application/json"
                              else resp.text())
                return resp.status, body

        assert (await status("GET", f"{server.url}/api/rooms"))[0] == 401
        assert (await status("GET", f"{untrusted.url}/api/rooms", **signed("alice")))[0] == 403
        assert (await status("GET", f"{server.url}/api/rooms", **signed("alice")))[0] == 200
        assert await status("GET", f"{server.url}/api/session", **signed("alice")) == (
            200, {"user": "alice"})
        code, body = await status("GET", f"{server.url}/api/session")
        assert code == 401 and body["code"] == "unauthorized"
        post = {"user_id": "anyone", "content": "hello from the stream"}
        assert (await status("POST", f"{server.url}/stream", json=post))[0] == 401
        # The body's user_id is ignored: the post is the signed-in person's.
        code, text = await status("POST", f"{server.url}/stream", json=post, **signed("alice"))
        assert (code, text) == (200, "Streamed to alice")


async def test_without_the_setting_the_session_is_nobody(server: RunningServer,
                                                        start_server: StartServer):
    plain = await start_server()
    async with aiohttp.ClientSession() as http, http.get(f"{plain.url}/api/session",
                                                         headers={HEADER: "alice"}) as resp:
        assert await resp.json() == {"user": None}


@pytest.mark.parametrize(("env", "setting"), [
    ({"TRUSTED_USER_HEADER": "X Forwarded User"}, "TRUSTED_USER_HEADER"),
    ({"TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"}, "TRUSTED_PROXIES"),
    ({"TRUSTED_USER_HEADER": "X-Forwarded-User", "TRUSTED_PROXIES": ""}, "TRUSTED_PROXIES"),
])
def test_bad_sign_in_settings_name_the_setting(env: dict[str, str], setting: str):
    with pytest.raises(ConfigError) as err:
        load_settings({"OPENAI_API_KEY": "k", **env}, dotenv=None)
    assert str(err.value).startswith(setting)
