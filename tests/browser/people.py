"""A person at one browser page, and screenshot helpers, for the browser tests."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Locator, Page, expect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
LAST_ANSWER = (
    "() => [...document.querySelectorAll("
    "'[data-testid=message][data-role=assistant] [data-testid=message-content]'"
    ")].at(-1)?.textContent ?? null"
)


class Person:
    """One person in one browser context (own localStorage, so own identity)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    # ----- locators -----
    def by_id(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    @property
    def input(self) -> Locator:
        return self.by_id("message-input")

    @property
    def send_button(self) -> Locator:
        return self.by_id("send-button")

    @property
    def messages(self) -> Locator:
        return self.by_id("message")

    def role(self, role: str) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-role="{role}"]')

    def message(self, message_id: str) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-id="{message_id}"]')

    # ----- actions -----
    async def open(self, url: str) -> Person:
        await self.page.goto(url)
        await expect(self.by_id("nickname-input")).to_be_visible()
        return self

    async def join_attempt(self, name: str) -> None:
        """Submit the nickname dialog; the server may refuse."""
        await self.by_id("nickname-input").fill(name)
        await self.by_id("join-button").click()

    async def join(self, name: str) -> Person:
        await self.join_attempt(name)
        await expect(self.by_id("nickname-dialog")).to_be_hidden()
        await expect(self.by_id("me")).to_have_attribute("data-user-id", re.compile(".+"))
        return self

    async def say(self, text: str) -> None:
        """Type and press Enter, as a person would."""
        await expect(self.input).to_be_enabled()
        await self.input.fill(text)
        await self.input.press("Enter")

    async def idle(self) -> None:
        """The AI is not answering: input unlocked, no typing indicator."""
        await expect(self.input).to_be_enabled()
        await expect(self.send_button).to_be_enabled()
        await expect(self.by_id("typing-indicator")).to_be_hidden()

    async def locked(self) -> None:
        """The AI is answering: input and Send disabled, typing indicator and Stop shown."""
        await expect(self.input).to_be_disabled()
        await expect(self.send_button).to_be_disabled()
        await expect(self.by_id("typing-indicator")).to_be_visible()
        await expect(self.by_id("stop-button")).to_be_visible()

    # ----- reading -----
    async def ids(self) -> list[str]:
        return await self.messages.evaluate_all("els => els.map(e => e.dataset.id)")

    async def texts(self) -> list[str]:
        return await self.page.locator('[data-testid="message-content"]').all_inner_texts()

    async def answer_text(self) -> str | None:
        """The last assistant message's text as shown now (None if there is none)."""
        return await self.js(LAST_ANSWER)

    async def answer_started(self, chars: int = 20) -> None:
        """Wait until the streamed answer on this page is longer than `chars`."""
        await self.page.wait_for_function(f"() => ({LAST_ANSWER})()?.length > {chars}")

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)


def png_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def side_by_side(browser: Browser, shots: list[Path], target: Path) -> None:
    """Compose screenshots into one image, using the browser as the image tool."""
    images = "".join(f'<img src="data:image/png;base64,{png_base64(p)}">' for p in shots)
    page = await browser.new_page(viewport={"width": 800, "height": 400})
    style = "body{margin:0;display:flex;gap:8px;background:#9aa0b4;width:max-content}"
    await page.set_content(f"<style>{style}img{{display:block}}</style>{images}")
    await page.locator("body").screenshot(path=str(target))
    await page.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name

