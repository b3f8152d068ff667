"""Hostile nicknames, messages and model output are shown as text and never run."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import Person
from tests.conftest import StartServer
from tests.fake_upstream import FakeUpstream, Text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=1</script>"
HOSTILE = f"{IMG} and {SCRIPT} and [a link](javascript:window.__xss=1)"
MODEL_OUTPUT = (
    f"Sure! {IMG}\n\n{SCRIPT}\n\n"
    '<a href="javascript:window.__xss=1">click</a> <svg onload="window.__xss=1"></svg>\n\n'
    "[another](javascript:window.__xss=1)"
)


async def assert_nothing_ran(who: Person) -> None:
    await asyncio.sleep(0.3)  # an injected onerror/onload would fire by now
    assert await who.js("() => window.__xss") is None
    assert await who.js("() => typeof window.__xss") == "undefined"
    log = who.by_id("message-list")
    await expect(log.locator("script")).to_have_count(0)
    await expect(log.locator("img")).to_have_count(0)
    await expect(log.locator("svg")).to_have_count(0)
    await expect(log.locator("[onerror], [onload]")).to_have_count(0)
    await expect(log.locator('a[href^="javascript"]')).to_have_count(0)
    await expect(who.by_id("online-list").locator("img, script")).to_have_count(0)


async def test_hostile_names_messages_and_model_output_stay_text(
    person: OpenPerson, upstream: FakeUpstream, start_server: StartServer
) -> None:
    server = await start_server(max_name_length=64)
    mallory = await person(IMG, at=server)
    trudy = await person(SCRIPT, at=server)
    bob = await person("Bob", at=server)

    upstream.enqueue(Text(MODEL_OUTPUT, delay=0.01))
    await mallory.say(HOSTILE)
    for who in (mallory, trudy, bob):
        await expect(who.role("assistant")).to_have_count(1)
        await who.idle()

    for who in (mallory, trudy, bob):
        await assert_nothing_ran(who)
        question = who.role("user").get_by_test_id("message-content")
        await expect(question).to_contain_text(IMG)
        await expect(question).to_contain_text(SCRIPT)
        answer = who.role("assistant").get_by_test_id("message-content")
        await expect(answer).to_contain_text(IMG)
        await expect(answer).to_contain_text(SCRIPT)
        await expect(who.by_id("online-list")).to_contain_text(IMG)
        await expect(who.by_id("online-list")).to_contain_text(SCRIPT)

    await expect(bob.role("user").get_by_test_id("message-name")).to_have_text(IMG)
    presence = await mallory.by_id("presence-line").all_inner_texts()
    assert presence[0].startswith(f"{SCRIPT} joined"), presence
