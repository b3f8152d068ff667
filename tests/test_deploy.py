"""docs/deploy.md, tested: Debian's nginx running deploy/nginx/roundtable.conf verbatim (only the
listen address, upstream and password file substituted) in front of a Roundtable server with
TRUSTED_USER_HEADER, and two people through it: a python-socketio client over websocket and the
web page in Chromium, each signed in by nginx's basic auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import socketio
from playwright.async_api import Browser, async_playwright, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP, missing_prerequisite
from tests.browser.people import Person
from tests.conftest import RunningServer, StartServer, free_port
from tests.fake_upstream import FakeUpstream, Text
from tests.nginx import DEPLOY_CONF, Proxy, missing_nginx, running_nginx, substitute
from tests.peers import Peer

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def htpasswd(passwords: dict[str, str]) -> str:
    """nginx's auth_basic file with {SHA} entries (base64 of the password's SHA-1)."""
    return "".join(
        f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()}\n"
        for user, pw in passwords.items())


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


@pytest.fixture
async def roundtable(start_server: StartServer) -> RunningServer:
    return await start_server(trusted_user_header="X-Forwarded-User")


@pytest.fixture
async def nginx(tmp_path: Path, roundtable: RunningServer) -> AsyncIterator[Proxy]:
    reason = missing_nginx()
    if reason is not None:
        pytest.skip(reason)
    port = free_port()
    upstream = roundtable.url.removeprefix("http://")
    (tmp_path / "htpasswd").write_text(htpasswd(PASSWORDS))
    conf = DEPLOY_CONF.read_text()
    conf = substitute(conf, "server 127.0.0.1:5020;", f"server {upstream};")
    conf = substitute(conf, "listen 80;", f"listen 127.0.0.1:{port};")
    conf = substitute(conf, "/etc/nginx/roundtable.htpasswd", str(tmp_path / "htpasswd"))
    async with running_nginx(tmp_path, conf, port) as proxy:
        yield proxy


async def test_nginx_signs_people_in_and_both_clients_chat_through_it(
    nginx: Proxy, roundtable: RunningServer, upstream: FakeUpstream, browser: Browser
):
    # Not signed in: nginx refuses; a forged header does not get past it either.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{nginx.url}/api/rooms") as resp:
            assert resp.status == 401
        async with http.get(f"{nginx.url}/api/session",
                            headers={"Authorization": basic("alice"),
                                     "X-Forwarded-User": "mallory"}) as resp:
            assert await resp.json() == {"user": "alice"}
    # Straight to Roundtable's port without the header: refused.
    direct = Peer(roundtable.url, "alice")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await direct.connect()

    alice = Peer(nginx.url, "Mallory")  # the nickname asked for is ignored
    await alice.connect(headers={"Authorization": basic("alice"), "X-Forwarded-User": "mallory"})
    assert alice.sio.transport() == "websocket"
    assert (await alice.join())["name"] == "alice"

    context = await browser.new_context(
        viewport=DESKTOP, http_credentials={"username": "bob", "password": PASSWORDS["bob"]})
    bob = Person(await context.new_page())
    try:
        await bob.page.goto(nginx.url)
        await expect(bob.by_id("me")).to_have_text("bob")
        await expect(bob.by_id("signed-in")).to_be_visible()
        await expect(bob.by_id("nickname-dialog")).to_be_hidden()
        await alice.wait_for("join", where=lambda user: user["name"] == "bob")

        upstream.enqueue(Text("Hello alice, nice to see you through nginx", delay=0.02))
        await alice.say("hello from python")
        await alice.wait_for("ai-end")
        answer = alice.answers()[-1]
        assert alice.streamed(answer["id"]) == answer["content"]
        await expect(bob.page.get_by_text("hello from python")).to_be_visible()
        await expect(bob.role("assistant").last).to_contain_text("through nginx")
        await bob.idle()

        upstream.enqueue(Text("Hi bob"))
        await bob.say("hello from chromium")
        said = await alice.wait_for("message", where=lambda m: m.get("role") == "user")
        assert (said["name"], said["content"]) == ("bob", "hello from chromium")
        await alice.wait_for("ai-end", count=2)
        await expect(bob.role("assistant").last).to_have_text(re.compile("Hi bob"))
        assert [u["name"] for u in roundtable.room.users()] == ["alice", "bob"]
        assert not bob.errors
    finally:
        await context.close()
        await alice.close()
    # Both talked websocket through nginx (101 Switching Protocols; logged once closed), each
    # as the person nginx signed in.
    signed_in: set[str] = set()
    for _ in range(100):
        signed_in = {line.split()[2] for line in (nginx.dir / "access.log").read_text()
                     .splitlines() if "transport=websocket" in line and '" 101 ' in line}
        if signed_in >= {"alice", "bob"}:
            break
        await asyncio.sleep(0.05)
    assert signed_in == {"alice", "bob"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
