"""create_app(settings): the aiohttp application with Socket.IO, the web client and health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from .config import Settings
from .providers import OpenAISettings, Provider, create_provider
from .room import Room, RoomLimits
from .sockets import RoomHandlers, SocketEmitter

logger = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "client" / "web" / "dist"

SETTINGS_KEY = web.AppKey("settings", Settings)
SIO_KEY = web.AppKey("sio", socketio.AsyncServer)
ROOM_KEY = web.AppKey("room", Room)
PROVIDER_KEY = web.AppKey("provider", Provider)


class OriginPolicy:
    """Which browser origins may connect: the server's own, plus the configured list."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        self._any = "*" in extra
        self._extra = frozenset(extra)

    def allows(self, origin: str | None, host: str | None, scheme: str = "http") -> bool:
        """True for non-browser clients (no Origin), same-origin pages and listed origins."""
        if origin is None or self._any or origin in self._extra:
            return True
        return host is not None and origin == f"{scheme}://{host}"

    def __call__(self, origin: str | None, environ: dict[str, Any]) -> bool:
        return self.allows(origin, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http"))


def provider_settings(settings: Settings) -> OpenAISettings:
    """The slice of settings a provider sees."""
    return OpenAISettings(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        model=settings.openai_model,
        assistant_name=settings.assistant_name,
        instructions=settings.assistant_instructions,
        request_timeout=settings.request_timeout,
    )


def create_app(settings: Settings, provider: Provider | None = None) -> web.Application:
    """Build the application; the provider and room are opened in the app's start-up."""
    app = web.Application()
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins=OriginPolicy(settings.cors_origins),
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    app[SETTINGS_KEY] = settings
    app[SIO_KEY] = sio
    RoomHandlers(sio, lambda: app[ROOM_KEY]).attach()
    app.cleanup_ctx.append(_room_context(provider))
    app.on_shutdown.append(_disconnect_everyone)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/", _index)
    if WEB_DIST.is_dir():
        app.router.add_static("/", WEB_DIST, show_index=False)
    return app


def _room_context(injected: Provider | None) -> Any:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        provider = injected or create_provider(settings.llm_api, provider_settings(settings))
        profile = await provider.open()
        limits = RoomLimits(
            settings.max_name_length, settings.max_message_length, settings.max_queued_turns
        )
        room = Room(provider, profile, SocketEmitter(app[SIO_KEY]), limits)
        app[PROVIDER_KEY], app[ROOM_KEY] = provider, room
        await room.start()
        logger.info("room ready: assistant %r via %s", profile.name, settings.llm_api)
        yield
        await _close_room(app)
        await provider.close()

    return context


async def _close_room(app: web.Application) -> None:
    """Cancel any run and delete the thread, within the shutdown time budget."""
    timeout = app[SETTINGS_KEY].shutdown_timeout
    try:
        await asyncio.wait_for(app[ROOM_KEY].close(), timeout)
    except TimeoutError:
        logger.warning("room clean-up took longer than %ss; giving up", timeout)


async def _disconnect_everyone(app: web.Application) -> None:
    """Close the room, then every socket, so aiohttp need not wait for open websockets."""
    sio = app[SIO_KEY]
    await _close_room(app)
    sids = [sid for sid, _ in sio.manager.get_participants("/", None)]
    await asyncio.gather(*(sio.disconnect(sid) for sid in sids), return_exceptions=True)
    await sio.shutdown()


async def _health(request: web.Request) -> web.Response:
    room = request.app[ROOM_KEY]
    settings = request.app[SETTINGS_KEY]
    return web.json_response(
        {"status": "ok", "users": len(room.users()), "busy": room.busy,
         "provider": settings.llm_api}
    )


async def _index(request: web.Request) -> web.StreamResponse:
    index = WEB_DIST / "index.html"
    if index.is_file():
        return web.FileResponse(index)
    return web.Response(
        status=503, text="The web client is not built yet: run `make client` (or `make run`).\n"
    )
