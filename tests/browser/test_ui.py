"""The page's own behaviour: joining, the phone layout, tools, Stop and following the bottom."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPerson
from tests.browser.people import Person, artifact
from tests.conftest import StartServer
from tests.fake_upstream import Call, FakeUpstream, Text, ToolCalls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PHONE = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


async def deliver(who: Person, event: str, payload: object) -> None:
    """Hand an event to the page's handlers as if the server had sent it."""
    await who.js(
        "([event, payload]) => window.__roundtable_socket.listeners(event)"
        ".forEach((handler) => handler(payload))",
        [event, payload],
    )


async def test_taken_and_invalid_names_can_be_corrected_and_are_remembered(
    person: OpenPerson,
) -> None:
    await person("Alice")
    second = await person()
    await second.join_attempt("alice")
    error = second.by_id("nickname-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("taken")
    await expect(second.by_id("join-button")).to_be_enabled()
    await second.page.screenshot(path=str(artifact("nickname-taken.png")))

    await second.join_attempt("\u200bZed")
    await expect(error).to_contain_text("control characters")
    await second.join("Alicia")
    await expect(second.by_id("online-user")).to_have_count(2)
    user_id = await second.js("() => localStorage.getItem('roundtable.user_id')")
    assert user_id

    await second.page.reload()
    await expect(second.by_id("nickname-input")).to_have_value("Alicia")
    await second.by_id("join-button").click()
    await expect(second.by_id("nickname-dialog")).to_be_hidden()
    assert await second.js("() => localStorage.getItem('roundtable.user_id')") == user_id
    await expect(second.by_id("me")).to_have_text("Alicia")


async def test_a_phone_sized_screen_is_usable(person: OpenPerson) -> None:
    pat = await person("Pat", **PHONE)
    await expect(pat.by_id("online-panel")).to_be_hidden()
    await expect(pat.by_id("online-toggle")).to_be_visible()
    for testid in ("message-input", "send-button"):
        box = await pat.by_id(testid).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, box
        assert box["y"] + box["height"] <= 740, box
    assert await pat.js("() => document.documentElement.scrollWidth") <= 360

    await pat.by_id("message-input").tap()
    await pat.say("Hello from my phone, with a fairly long line that has to wrap nicely")
    await expect(pat.role("assistant")).to_have_count(1)
    await pat.idle()
    assert await pat.js("() => document.documentElement.scrollWidth") <= 360

    await pat.by_id("online-toggle").tap()
    await expect(pat.by_id("online-panel")).to_be_visible()
    await expect(pat.by_id("online-list")).to_contain_text("Pat")
    await pat.page.screenshot(path=str(artifact("phone.png")))


async def test_shift_enter_makes_a_new_line_and_enter_sends(person: OpenPerson) -> None:
    ann = await person("Ann")
    await ann.input.click()
    await ann.input.type("line one")
    await ann.input.press("Shift+Enter")
    await ann.input.type("line two")
    await expect(ann.input).to_have_value("line one\nline two")
    await expect(ann.messages).to_have_count(0)
    await ann.input.press("Enter")
    await expect(ann.role("user")).to_have_count(1)
    await expect(ann.input).to_have_value("")
    assert await ann.role("user").get_by_test_id("message-content").inner_text() == (
        "line one\nline two"
    )


async def test_tool_status_shows_while_the_assistant_uses_a_tool(
    person: OpenPerson, upstream: FakeUpstream
) -> None:
    ann = await person("Ann")
    await ann.js(
        """() => {
          window.__toolLines = [];
          new MutationObserver((changes) => {
            for (const change of changes) for (const node of change.addedNodes)
              if (node.dataset?.testid === 'tool-status') window.__toolLines.push(node.textContent);
          }).observe(document.getElementById('tools'), { childList: true });
        }"""
    )
    upstream.enqueue(
        ToolCalls([Call("current_time", "{}")], delay=0.2), Text("Time for lunch.", delay=0.05)
    )
    await ann.say("What time is it?")
    await expect(ann.role("assistant")).to_contain_text("Time for lunch.")
    await ann.idle()
    assert await ann.js("() => window.__toolLines") == ["Looking up the time…"]
    await expect(ann.by_id("tool-status")).to_have_count(0)


async def test_stop_cuts_the_answer_short_for_everyone(
    person: OpenPerson, upstream: FakeUpstream
) -> None:
    ann = await person("Ann")
    bob = await person("Bob")
    await bob.js(
        """() => {
          const socket = window.__roundtable_socket;
          const emit = socket.emit.bind(socket);
          window.__sent = [];
          socket.emit = (...args) => { window.__sent.push(args); return emit(...args); };
        }"""
    )
    upstream.enqueue(Text(" ".join(["thinking"] * 100), delay=0.05))
    await ann.say("Think about it for a long while")
    await bob.answer_started()

    # Parallel tool calls, some with no friendly label, as the server would announce them.
    tools = bob.by_id("tool-status")
    base = {"message_id": "a_1", "status": "started"}
    await deliver(bob, "tool-call", {**base, "call_id": "c1", "name": "current_time"})
    await deliver(bob, "tool-call", {**base, "call_id": "c2", "name": "web_search"})
    await expect(tools).to_have_text(["Looking up the time…", "Using web_search…"])
    await deliver(bob, "tool-call", {**base, "call_id": "c1", "status": "finished"})
    await expect(tools).to_have_text(["Using web_search…"])
    await bob.page.screenshot(path=str(artifact("typing.png")))

    await bob.by_id("stop-button").click()
    sent = await bob.js("() => window.__sent.filter((args) => args[0] === 'stop')")
    assert sent == [["stop"]], "Stop emits `stop` with no payload"
    for who in (ann, bob):
        await who.idle()
        await expect(who.by_id("stop-button")).to_be_hidden()
        await expect(who.by_id("tool-status")).to_have_count(0)
        answer = who.role("assistant")
        await expect(answer.get_by_test_id("incomplete-marker")).to_have_text("(incomplete)")
        await expect(who.role("system")).to_contain_text("Bob stopped the answer")
    partial = await ann.answer_text() or ""
    assert 0 < len(partial) < len(" ".join(["thinking"] * 100))
    assert partial == await bob.answer_text()


async def test_a_password_room_asks_for_the_password(
    person: OpenPerson, start_server: StartServer
) -> None:
    server = await start_server(room_password="open sesame")
    eve = await person(at=server)
    await expect(eve.by_id("password-input")).to_be_visible()
    await expect(eve.by_id("nickname-error")).to_have_text("This room needs a password.")
    await eve.by_id("nickname-input").fill("Eve")
    await eve.by_id("password-input").fill("guess")
    await eve.by_id("join-button").click()
    await expect(eve.by_id("nickname-error")).to_have_text("Wrong room password.")

    await eve.by_id("password-input").fill("open sesame")
    await eve.join("Eve")
    await eve.js("() => window.__roundtable_socket.io.engine.close()")
    await expect(eve.by_id("reconnect-banner")).to_be_visible()
    await expect(eve.by_id("reconnect-banner")).to_be_hidden()
    await eve.say("Still here")
    await expect(eve.role("assistant")).to_have_count(1)
    assert [u["name"] for u in server.room.users()] == ["Eve"]


async def test_the_view_follows_new_messages_unless_scrolled_up(person: OpenPerson) -> None:
    ann = await person("Ann")
    log = ann.by_id("message-list")

    async def others_say(n: int, start: int) -> None:
        for i in range(start, start + n):
            await deliver(ann, "message", {
                "id": f"x{i}", "user_id": "u-other", "name": "Zoe", "role": "user",
                "content": f"message {i}", "created_at": 1_700_000_000_000 + i,
            })

    async def gap() -> float:
        return await log.evaluate("e => e.scrollHeight - e.scrollTop - e.clientHeight")

    await others_say(40, 0)
    await expect(ann.messages).to_have_count(40)
    assert await gap() < 5

    await log.evaluate("e => { e.scrollTop = 0; }")
    await ann.page.wait_for_timeout(100)
    await others_say(1, 40)
    await expect(ann.messages).to_have_count(41)
    assert await log.evaluate("e => e.scrollTop") < 5, "no forced scroll while reading"
    await expect(ann.by_id("jump-to-latest")).to_be_visible()

    await ann.by_id("jump-to-latest").click()
    await expect(ann.by_id("jump-to-latest")).to_be_hidden()
    await others_say(1, 41)
    await expect(ann.messages).to_have_count(42)
    assert await gap() < 5
