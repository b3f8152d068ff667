"""Rooms in the web client: a room per address (`/r/<name>`), kept apart from the default room,
named in the header and title, listed in the rooms panel, shared by link, and a room with its own
password. Needs the server's rooms (register's `room`, `welcome.room`, `/r/<name>`,
`/api/rooms`, `ROOMS_FILE`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import Person, artifact
from tests.conftest import StartServer
from tests.fake_upstream import FakeUpstream, Text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STORY = " ".join(f"word{i}" for i in range(80))
CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}


async def in_room(who: Person, room: str) -> None:
    """The header and the tab title name `room`."""
    await expect(who.by_id("room-name")).to_have_text(room)
    await expect(who.page).to_have_title(f"{room} · Roundtable")


async def listed_rooms(who: Person) -> list[str]:
    items = who.by_id("room-item")
    return await items.evaluate_all("els => els.map(e => e.dataset.room)")


def room_item(who: Person, room: str) -> Locator:
    return who.page.locator(f'[data-testid="room-item"][data-room="{room}"]')


async def test_a_room_keeps_its_conversation_apart_from_the_default_room(
    person: OpenPerson, upstream: FakeUpstream, start_server: StartServer
) -> None:
    server = await start_server()
    alice = await person("Alice", at=server, path="/r/design", **CLIPBOARD)
    bob = await person("Bob", at=server, path="/r/Design")  # the address is normalised
    carol = await person("Carol", at=server)
    for who in (alice, bob):
        await in_room(who, "design")
        await expect(who.by_id("online-user")).to_have_count(2)
    await in_room(carol, "main")
    await expect(carol.by_id("online-user")).to_have_count(1)
    await expect(alice.by_id("presence-line")).to_have_text([re.compile(r"^Bob joined")])

    upstream.enqueue(Text(STORY, delay=0.05))
    await alice.say("A question for the design room")
    await expect(bob.role("user")).to_contain_text("A question for the design room")
    await bob.answer_started()
    await carol.idle()  # the default room's assistant is free while design's answers

    await carol.by_id("rooms-toggle").click()
    await expect(carol.by_id("rooms-panel")).to_be_visible()
    await expect(carol.by_id("room-item")).to_have_count(2)
    assert await listed_rooms(carol) == ["main", "design"]
    await expect(room_item(carol, "design").get_by_test_id("room-busy")).to_be_visible()
    await expect(room_item(carol, "design").get_by_test_id("room-people")).to_have_text("2 people")
    await expect(room_item(carol, "main").get_by_test_id("room-people")).to_have_text("1 person")
    await expect(room_item(carol, "design").locator("a")).to_have_attribute("href", "/r/design")
    await carol.by_id("rooms-toggle").click()
    await expect(carol.by_id("rooms-panel")).to_be_hidden()

    await carol.say("A question for the main room")
    await expect(carol.role("assistant")).to_contain_text(
        re.compile(r"Echo: .*A question for the main room")
    )
    await carol.idle()
    for who in (alice, bob):
        await who.idle()
        await expect(who.role("assistant")).to_have_count(1)
        assert (await who.answer_text() or "").strip() == STORY
        await expect(who.messages).to_have_count(2)
        assert not [t for t in await who.texts() if "main room" in t]
    await expect(carol.messages).to_have_count(2)
    assert not [t for t in await carol.texts() if "design" in t or "word1" in t]
    await expect(alice.by_id("presence-line")).to_have_count(1)  # no word of Carol

    await alice.by_id("rooms-toggle").click()
    await expect(room_item(alice, "design").get_by_test_id("room-busy")).to_have_count(0)
    await expect(room_item(alice, "design").locator("a")).to_have_attribute(
        "aria-current", "page"
    )
    link = f"{server.url}/r/design"
    await expect(alice.by_id("room-share-link")).to_have_value(link)
    await alice.by_id("room-copy-button").click()
    await expect(alice.by_id("room-copy-button")).to_have_text("Copied")
    assert await alice.js("() => navigator.clipboard.readText()") == link
    await alice.page.screenshot(path=str(artifact("rooms-panel.png")))

    await alice.by_id("room-open-input").fill("not a room!")
    await alice.by_id("room-open-button").click()
    await expect(alice.by_id("room-open-error")).to_contain_text("lower-case letters")
    assert alice.page.url == link
    await alice.by_id("room-open-input").fill("  Planning ")
    await alice.by_id("room-open-button").click()
    await alice.page.wait_for_url(f"{server.url}/r/planning")
    await expect(alice.by_id("nickname-input")).to_have_value("Alice")  # remembered
    await alice.by_id("join-button").click()
    await expect(alice.by_id("nickname-dialog")).to_be_hidden()
    await in_room(alice, "planning")
    await expect(alice.by_id("online-user")).to_have_count(1)
    await expect(alice.messages).to_have_count(0)
    await expect(bob.by_id("presence-line").last).to_have_text(re.compile(r"^Alice left"))


async def test_a_room_with_its_own_password_asks_for_it(
    person: OpenPerson, start_server: StartServer, tmp_path: Path
) -> None:
    rooms_file = tmp_path / "rooms.toml"
    rooms_file.write_text('[rooms.secret]\npassword = "pw"\n', encoding="utf-8")
    server = await start_server(rooms_file=str(rooms_file))
    sam = await person(at=server, path="/r/secret")
    await expect(sam.by_id("join-room")).to_have_text("Room: secret")
    await expect(sam.by_id("room-password-input")).to_be_hidden()
    await sam.join_attempt("Sam")
    error = sam.by_id("nickname-error")
    await expect(sam.by_id("room-password-input")).to_be_visible()
    await expect(sam.by_id("room-password-input")).to_be_focused()
    await expect(error).to_be_visible()
    missing = await error.inner_text()
    assert missing.strip()

    await sam.by_id("room-password-input").fill("guess")
    await sam.by_id("join-button").click()
    await expect(error).not_to_have_text(missing)  # the server says it was wrong, not missing
    await expect(sam.by_id("join-button")).to_be_enabled()
    await sam.page.screenshot(path=str(artifact("room-password.png")))

    await sam.by_id("room-password-input").fill("pw")
    await sam.join("Sam")
    await in_room(sam, "secret")
    await sam.js("() => window.__roundtable_socket.io.engine.close()")
    await expect(sam.by_id("reconnect-banner")).to_be_visible()
    await expect(sam.by_id("reconnect-banner")).to_be_hidden()  # rejoined with the password
    await sam.say("Still in the secret room")
    await expect(sam.role("assistant")).to_have_count(1)

    await sam.page.reload()  # the password is remembered for this tab's session
    await expect(sam.by_id("nickname-input")).to_have_value("Sam")
    await expect(sam.by_id("room-password-input")).to_be_hidden()
    await sam.by_id("join-button").click()
    await expect(sam.by_id("nickname-dialog")).to_be_hidden()
    await in_room(sam, "secret")


async def test_an_invalid_room_in_the_address_joins_nothing(
    person: OpenPerson, start_server: StartServer
) -> None:
    server = await start_server()
    ann = await person(at=server, path="/r/no%20spaces!")
    await expect(ann.by_id("nickname-error")).to_contain_text("is not a room name")
    await expect(ann.by_id("nickname-error")).to_contain_text("no spaces!")
    await expect(ann.by_id("join-button")).to_be_disabled()
    await expect(ann.by_id("join-default-room")).to_have_attribute("href", "/")
    assert await ann.js("() => window.__roundtable_socket.connected") is False
    await ann.by_id("join-default-room").click()
    await ann.page.wait_for_url(f"{server.url}/")
    await ann.join("Ann")
    await in_room(ann, "main")
