"""The web client on the embedded local model: the demo note, and a real streamed answer."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import artifact
from tests.conftest import StartServer

pytestmark = [pytest.mark.slow, pytest.mark.local_model, pytest.mark.timeout(120)]

NOTE = "a small local demo model: set OPENAI_API_KEY or OPENAI_BASE_URL for real answers"


async def test_the_bundled_model_is_named_and_noted_as_a_demo(
    person: OpenPerson, start_server: StartServer
) -> None:
    hosted = await person("Hana")  # the default test server: a hosted provider (fake upstream)
    await expect(hosted.by_id("demo-note")).to_be_hidden()

    local = await start_server(llm_api="local", local_max_tokens=24)
    lee = await person("Lee", at=local)
    note = lee.by_id("demo-note")
    await expect(note).to_be_visible()
    await expect(note).to_have_text(NOTE)
    await expect(lee.by_id("assistant-name")).to_have_attribute(
        "title", "SmolLM2 135M Instruct (Q4_1)")
    await lee.say("Say hello.")
    await expect(lee.role("assistant")).to_have_count(1, timeout=60_000)
    await lee.idle()
    answer = await lee.answer_text()
    assert answer and answer.strip() and "<|im_" not in answer
    await lee.page.screenshot(path=str(artifact("local-demo-note.png")))
