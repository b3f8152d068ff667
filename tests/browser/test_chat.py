"""The web client end to end: real Chromium pages, real server, fake upstream."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import Person, artifact, side_by_side
from tests.conftest import StartServer
from tests.fake_upstream import CutStream, FakeUpstream, Text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PLAN = (
    "Here is a plan for **Friday**, Alice and Bob:\n\n"
    "1. Alice presents the *roadmap*\n"
    "2. Bob demos the prototype\n"
    "3. Questions and next steps\n\n"
    "```python\nprint('hello, room')\n```\n\n"
    "More in [the notes](https://example.com/notes)."
)
FOLLOW_UP = "Noted: demo on **Friday at 10:00**. I'll keep the list above as the agenda."
STORY = " ".join(f"word{i}" for i in range(60))

async def sample_growth(who: Person) -> list[int]:
    """Lengths of the last assistant message's text, sampled until the AI is done."""
    lengths: list[int] = []
    while not await who.input.is_enabled():
        text = await who.answer_text()
        lengths.append(-1 if text is None else len(text))
        await asyncio.sleep(0.02)
    return lengths


async def assistant_content(who: Person) -> str:
    return await who.role("assistant").last.get_by_test_id("message-content").inner_text()


def assert_unique(ids: list[str]) -> None:
    assert len(ids) == len(set(ids)), f"duplicate messages: {ids}"


async def test_two_pages_chat_with_a_streamed_answer_and_the_lock(
    person: OpenPerson, upstream: FakeUpstream, browser: Browser
) -> None:
    alice = await person("Alice")
    bob = await person("Bob")
    await expect(alice.by_id("presence-line")).to_have_text([re.compile(r"^Bob joined")])
    await expect(alice.by_id("online-user")).to_have_count(2)
    await expect(bob.by_id("online-user")).to_have_count(2)
    await expect(bob.by_id("online-list")).to_contain_text("Alice")

    upstream.enqueue(Text(PLAN, delay=0.05), Text(FOLLOW_UP))
    await alice.say("Can someone plan Friday's meeting?")
    await expect(bob.role("user")).to_have_count(1)
    await expect(bob.role("user").get_by_test_id("message-name")).to_have_text("Alice")
    await expect(bob.role("user").get_by_test_id("message-content")).to_have_text(
        "Can someone plan Friday's meeting?"
    )
    await expect(alice.role("user")).to_have_attribute("data-own", "true")
    await expect(bob.role("user")).to_have_attribute("data-own", "false")

    for who in (alice, bob):
        await who.locked()
        await expect(who.by_id("typing-indicator")).to_have_text("Roundtable AI is typing…")
    lengths = await sample_growth(bob)
    final = len(await bob.answer_text() or "")
    partial = {n for n in lengths if 0 < n < final}
    assert len(partial) >= 3, f"the answer did not grow in place: {lengths}"

    for who in (alice, bob):
        await who.idle()
        await expect(who.by_id("stop-button")).to_be_hidden()
        answer = who.role("assistant")
        await expect(answer).to_have_count(1)
        await expect(answer.get_by_test_id("message-name")).to_have_text("Roundtable AI")
        await expect(answer.locator("ol > li")).to_have_count(3)
        await expect(answer.locator("strong")).to_have_text("Friday")
        await expect(answer.locator("pre code")).to_have_text("print('hello, room')\n")
        await expect(answer.get_by_test_id("copy-button")).to_have_text("Copy")
        link = answer.locator("a")
        await expect(link).to_have_attribute("href", "https://example.com/notes")
        await expect(link).to_have_attribute("target", "_blank")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")

    await bob.say("Sounds good to me")
    await expect(alice.role("user").last).to_contain_text("Sounds good to me")
    for who in (alice, bob):
        await expect(who.role("assistant")).to_have_count(2)
        await who.idle()
    assert await alice.ids() == await bob.ids()
    assert_unique(await alice.ids())
    roles = await alice.messages.evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]

    await alice.input.fill("Great, see you all on Friday!")
    shots = [artifact("alice.png"), artifact("bob.png")]
    await alice.page.screenshot(path=str(shots[0]))
    await bob.page.screenshot(path=str(shots[1]))
    await side_by_side(browser, shots, artifact("two-pages.png"))


async def test_a_late_joiner_gets_the_history_once(
    person: OpenPerson, upstream: FakeUpstream
) -> None:
    alice = await person("Alice")
    bob = await person("Bob")
    await alice.say("First question")
    await expect(bob.role("assistant")).to_have_count(1)
    await bob.idle()
    await bob.say("Second question")
    await expect(alice.role("assistant")).to_have_count(2)
    await alice.idle()

    carol = await person("Carol")
    await expect(carol.messages).to_have_count(4)
    await asyncio.sleep(0.5)  # anything replayed twice would show up by now
    assert await carol.ids() == await alice.ids()
    assert_unique(await carol.ids())
    assert await carol.texts() == await alice.texts()
    await expect(carol.role("user").first).to_have_attribute("data-own", "false")

    upstream.enqueue(Text(STORY, delay=0.05))
    await carol.say("Tell us a story")
    await alice.answer_started()
    dave = await person("Dave")
    await dave.locked()
    first_seen = await dave.answer_text()
    assert first_seen, "a late joiner mid-answer sees the answer so far"
    for who in (alice, carol, dave):
        await who.idle()
    assert await assistant_content(dave) == await assistant_content(alice) == STORY
    assert await dave.ids() == await alice.ids()
    assert_unique(await dave.ids())


async def test_reconnect_re_registers_without_duplicating_history(
    person: OpenPerson, upstream: FakeUpstream, start_server: StartServer
) -> None:
    server = await start_server()
    alice = await person("Alice", at=server)
    bob = await person("Bob", at=server)
    await alice.say("Before the drop")
    await alice.idle()
    await expect(alice.role("assistant")).to_have_count(1)
    user_id = await alice.js("() => localStorage.getItem('roundtable.user_id')")
    first_sid = await alice.js("() => window.__roundtable_socket.id")

    upstream.enqueue(Text(STORY, delay=0.05))
    await bob.say("Tell us a long story")
    await alice.answer_started()
    await alice.js("() => window.__roundtable_socket.io.engine.close()")
    await expect(alice.by_id("reconnect-banner")).to_be_visible()
    await expect(alice.by_id("message-input")).to_be_disabled()
    await expect(alice.by_id("reconnect-banner")).to_be_hidden()
    assert await alice.js("() => window.__roundtable_socket.id") != first_sid

    for who in (alice, bob):
        await who.idle()
    assert await assistant_content(alice) == STORY
    assert await alice.ids() == await bob.ids()
    assert_unique(await alice.ids())
    await expect(alice.messages).to_have_count(4)
    users = server.room.users()
    assert sorted(u["name"] for u in users) == ["Alice", "Bob"]
    assert user_id in {u["user_id"] for u in users}
    await expect(alice.by_id("online-user")).to_have_count(2)
    await expect(bob.by_id("online-user")).to_have_count(2)

    await alice.say("After the drop")
    await expect(bob.role("user").last).to_contain_text("After the drop")
    await alice.idle()
    assert_unique(await alice.ids())


async def test_a_cut_short_answer_is_marked_and_the_notice_shown(
    person: OpenPerson, upstream: FakeUpstream
) -> None:
    alice = await person("Alice")
    upstream.enqueue(CutStream(after_chunks=4, text="This answer will be cut off half way"))
    await alice.say("Go")
    await alice.idle()
    answer = alice.role("assistant")
    await expect(answer).to_have_count(1)
    await expect(answer.get_by_test_id("incomplete-marker")).to_have_text("(incomplete)")
    notice = alice.role("system")
    await expect(notice).to_have_count(1)
    await expect(notice).to_have_css("justify-content", "center")

