"""Shared fixtures: the fake upstream, a Roundtable server on loopback, and peers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web

from server.app import SERVICE_KEY, SETTINGS_KEY, create_app
from server.config import Settings
from server.rooms import Room, RoomRegistry
from tests.fake_upstream import FakeUpstream
from tests.peers import Peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


@dataclass
class RunningServer:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def rooms(self) -> RoomRegistry:
        registry = self.app[SERVICE_KEY].registry
        assert registry is not None, "the provider is not open"
        return registry

    @property
    def room(self) -> Room:
        """The default room (open while anyone is in it)."""
        room = self.rooms.get(self.settings.default_room)
        assert room is not None, "the default room is not open: nobody is in it"
        return room

    @property
    def settings(self) -> Settings:
        return self.app[SETTINGS_KEY]

    async def stop(self) -> None:
        await self.runner.cleanup()


def test_settings(upstream: FakeUpstream, **overrides: Any) -> Settings:
    base = Settings(
        openai_api_key="test-key",
        openai_base_url=upstream.base_url,
        openai_model="fake-model",
        assistant_name="Roundtable AI",
        server_port=0,
        shutdown_timeout=3,
        request_timeout=10,
    )
    return replace(base, **overrides)


StartServer = Callable[..., Awaitable[RunningServer]]


async def launch(upstream: FakeUpstream, **overrides: Any) -> RunningServer:
    """Start Roundtable on 127.0.0.1 (any free port) against `upstream`; the caller stops it."""
    settings = test_settings(upstream, **overrides)
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningServer(f"http://127.0.0.1:{port}", app, runner)


@pytest.fixture
def llm_api() -> str:
    """The provider API under test; modules override this fixture to parametrize it."""
    return "responses"


@pytest.fixture
async def start_server(upstream: FakeUpstream, llm_api: str) -> AsyncIterator[StartServer]:
    """Factory: start Roundtable on 127.0.0.1 with settings overrides."""
    started: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        server = await launch(upstream, **{"llm_api": llm_api, **overrides})
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()


@pytest.fixture
async def peers(server: RunningServer) -> AsyncIterator[Callable[..., Peer]]:
    """Factory for peers connected to `server`; all are closed at the end."""
    made: list[Peer] = []

    def make(name: str | None = None, user_id: str | None = None, **kwargs: Any) -> Peer:
        peer = Peer(server.url, name, user_id, **kwargs)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.close()
