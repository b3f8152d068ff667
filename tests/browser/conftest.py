"""Browser fixtures: Debian's Chromium driven by Playwright, one context per person."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.browser.people import ROOT, Person
from tests.conftest import RunningServer, StartServer

DIST_INDEX = ROOT / "client" / "web" / "dist" / "index.html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1100, "height": 720}

expect.set_options(timeout=10_000)

OpenPerson = Callable[..., Awaitable[Person]]


def missing_prerequisite() -> str | None:
    """Why the browser tests cannot run here (`make test` provides both), or None."""
    if not CHROMIUM.exists():
        return "Chromium is not installed: run `make browser-deps`"
    if not DIST_INDEX.is_file():
        return "the web client is not built: run `make client`"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def person(browser: Browser, start_server: StartServer) -> AsyncIterator[OpenPerson]:
    """Factory: a person in a new browser context at the room (`at`, else a default server; `path`
    e.g. "/r/design"), joined as `name` unless `name` is None. Any uncaught page error fails the
    test."""
    people: list[Person] = []
    default: list[RunningServer] = []

    async def open_person(
        name: str | None = None,
        *,
        at: RunningServer | None = None,
        path: str = "",
        **context_options: Any,
    ) -> Person:
        if at is None:
            if not default:
                default.append(await start_server())
            at = default[0]
        options: dict[str, Any] = {"viewport": DESKTOP, **context_options}
        context = await browser.new_context(**options)
        who = Person(await context.new_page())
        people.append(who)
        await who.open(at.url + path)
        if name is not None:
            await who.join(name)
        return who

    yield open_person
    for who in people:
        await who.page.context.close()
    errors = [e for who in people for e in who.errors]
    assert not errors, f"uncaught errors in the page: {errors}"
