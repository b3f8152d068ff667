"""Reply modes in the web client: no input lock in `mention` rooms, `@` completion, mention
highlights and the hidden-tab title count, and the header's control that switches the mode for
everyone. Real Chromium pages, real server, fake upstream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import Person
from tests.conftest import StartServer
from tests.fake_upstream import FakeUpstream, Text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STORY = " ".join(f"word{i}" for i in range(80))
# Playwright cannot hide a tab; the page is told it is hidden the way the browser would.
SET_VISIBILITY = """(state) => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
  Object.defineProperty(document, 'hidden', {configurable: true, get: () => state === 'hidden'});
  document.dispatchEvent(new Event('visibilitychange'));
}"""


async def open_while_answering(who: Person) -> None:
    """The AI is answering and this person can still type and send."""
    await expect(who.by_id("typing-indicator")).to_have_text("Roundtable AI is answering…")
    await expect(who.input).to_be_enabled()
    await expect(who.send_button).to_be_enabled()
    await expect(who.by_id("stop-button")).to_be_visible()


async def test_a_mention_room_keeps_the_composer_open_while_an_answer_streams(
    person: OpenPerson, upstream: FakeUpstream, start_server: StartServer
) -> None:
    server = await start_server(reply_mode="mention")
    alice = await person("Alice", at=server)
    bob = await person("Bob", at=server)
    await expect(alice.by_id("reply-mode")).to_have_value("mention")

    await alice.say("just chatting, no answer wanted")
    await expect(bob.role("user")).to_have_count(1)
    await expect(bob.by_id("typing-indicator")).to_be_hidden()

    upstream.enqueue(Text(STORY, delay=0.05))
    await alice.say("@ai tell us a long story")
    await bob.answer_started()
    for who in (alice, bob):
        await open_while_answering(who)
    await bob.say("meanwhile, hello")
    await expect(alice.role("user").last).to_contain_text("meanwhile, hello")
    assert "word79" not in (await alice.answer_text() or ""), "the answer had already ended"
    await expect(alice.by_id("typing-indicator")).to_be_visible()

    await alice.by_id("stop-button").click()
    for who in (alice, bob):
        await who.idle()
        await expect(who.page.get_by_text("Alice stopped the answer.")).to_be_visible()
    mention = bob.role("user").nth(1).get_by_test_id("mention")
    await expect(mention).to_have_text("@ai")
    assert len(upstream.model_requests()) == 1  # the plain messages started no run


async def test_at_completion_offers_the_handle_and_people_and_inserts_the_choice(
    person: OpenPerson, start_server: StartServer
) -> None:
    server = await start_server(reply_mode="mention")
    alice = await person("Alice", at=server)
    await person("Bob", at=server)
    await expect(alice.by_id("online-user")).to_have_count(2)
    options = alice.by_id("mention-option")
    listbox = alice.page.get_by_role("listbox", name="Mention someone")

    await alice.input.press_sequentially("hi @")
    await expect(listbox).to_be_visible()
    await expect(options).to_have_count(2)  # the handle and Bob, not Alice herself
    await expect(options.nth(0)).to_contain_text("@ai")
    await expect(options.nth(0)).to_contain_text("Roundtable AI")
    await expect(options.nth(1)).to_have_text("@Bob")
    await expect(listbox.get_by_role("option", selected=True)).to_contain_text("@ai")
    first_id = await options.nth(0).get_attribute("id")
    await expect(alice.input).to_have_attribute("aria-activedescendant", first_id or "")
    await expect(alice.input).to_have_attribute("aria-controls", "mention-list")

    await alice.input.press("ArrowDown")
    await expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    await alice.input.press("Enter")  # chooses; does not send
    await expect(listbox).to_be_hidden()
    await expect(alice.input).to_have_value("hi @Bob ")
    await expect(alice.role("user")).to_have_count(0)

    await alice.input.press_sequentially("and @A")
    await expect(options).to_have_count(1)
    await alice.input.press("Tab")
    await expect(alice.input).to_have_value("hi @Bob and @ai ")

    await alice.input.press_sequentially("@")
    await expect(listbox).to_be_visible()
    await alice.input.press("Escape")
    await expect(listbox).to_be_hidden()
    await alice.input.press("Backspace")
    await alice.input.press_sequentially("@b")
    await listbox.get_by_role("option", name="@Bob").click()
    await expect(alice.input).to_have_value("hi @Bob and @ai @Bob ")
    await expect(alice.input).to_be_focused()


async def test_a_mention_of_you_is_highlighted_marked_and_counted_in_a_hidden_tab(
    person: OpenPerson, start_server: StartServer
) -> None:
    server = await start_server(reply_mode="mention")
    alice = await person("Alice", at=server, path="/r/design")
    bob = await person("Bob", at=server, path="/r/design")
    await expect(bob.page).to_have_title("design · Roundtable")

    await alice.say("not for anyone, @bobby and mail@Bob")
    await expect(bob.role("user")).to_have_count(1)
    await expect(bob.role("user").get_by_test_id("mention")).to_have_count(0)
    await expect(bob.role("user")).not_to_have_class(re.compile("mentions-me"))

    await bob.js(SET_VISIBILITY, "hidden")
    await alice.say("@Bob can you look? <b>@Bob</b>")
    await alice.say("also @bob, with **@Alice**")
    await expect(bob.role("user")).to_have_count(3)
    second = bob.role("user").nth(1)
    await expect(second).to_have_class(re.compile("mentions-me"))
    await expect(second.locator(".mention.mention-me")).to_have_text(["@Bob", "@Bob"])
    assert await second.locator("b").count() == 0  # typed HTML stays text
    third = bob.role("user").nth(2)
    await expect(third.get_by_test_id("mention")).to_have_text(["@bob", "@Alice"])
    await expect(bob.page).to_have_title("(2) design · Roundtable")
    # Alice's own page highlights them too, but marks nothing of hers
    await expect(alice.role("user").nth(1).get_by_test_id("mention")).to_have_count(2)
    await expect(alice.page.locator(".mentions-me")).to_have_count(0)
    await expect(alice.page).to_have_title("design · Roundtable")

    await bob.js(SET_VISIBILITY, "visible")
    await expect(bob.page).to_have_title("design · Roundtable")


async def test_switching_the_mode_updates_every_page_and_the_lock(
    person: OpenPerson, upstream: FakeUpstream, start_server: StartServer
) -> None:
    server = await start_server()
    alice = await person("Alice", at=server)
    bob = await person("Bob", at=server)
    for who in (alice, bob):
        await expect(who.by_id("reply-mode")).to_have_value("always")
        await expect(who.by_id("reply-mode")).to_be_enabled()

    await alice.by_id("reply-mode").select_option("mention")
    await expect(bob.by_id("reply-mode")).to_have_value("mention")
    notice = "Alice set the assistant to answer when mentioned."
    await expect(bob.role("system").last).to_have_text(re.compile(re.escape(notice)))
    upstream.enqueue(Text(STORY, delay=0.05))
    await alice.say("@ai a long one please")
    await bob.answer_started()
    await open_while_answering(bob)

    await bob.by_id("reply-mode").select_option("always")  # mid-answer: the lock is back
    await expect(alice.by_id("reply-mode")).to_have_value("always")
    await alice.locked()
    await expect(alice.by_id("typing-indicator")).to_have_text("Roundtable AI is typing…")
    for who in (alice, bob):
        await who.idle()


async def test_a_mode_fixed_by_the_server_cannot_be_switched(
    person: OpenPerson, start_server: StartServer, tmp_path: Path
) -> None:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text('[rooms.team]\nreply = "mention"\n', encoding="utf-8")
    server = await start_server(rooms_file=str(rooms))
    alice = await person("Alice", at=server, path="/r/team")
    control = alice.by_id("reply-mode")
    await expect(control).to_have_value("mention")
    await expect(control).to_be_disabled()
    await expect(alice.by_id("reply-mode-field")).to_have_attribute(
        "title", re.compile("server fixes")
    )
