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
from .local_model import LocalModelServer
from .providers import OpenAISettings, Provider, create_provider
from .rooms import RegistryPolicy, Room, RoomConfig, RoomLimits, RoomRegistry, load_rooms_file
from .tools import ToolRegistry, load_registry
from .transport.emitter import SocketEmitter
from .transport.engine import NAMESPACE, RoomServer
from .transport.handlers import RoomHandlers
from .transport.http import (
    OriginPolicy,
    StreamRoute,
    index_handler,
    rooms_handler,
    session_handler,
)
from .transport.signin import ProxySignIn

logger = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "client" / "web" / "dist"

SETTINGS_KEY = web.AppKey("settings", Settings)
SIO_KEY = web.AppKey("sio", socketio.AsyncServer)
ROOMS_KEY = web.AppKey("rooms", RoomRegistry)
PROVIDER_KEY = web.AppKey("provider", Provider)
LOCAL_MODEL_KEY = web.AppKey("local_model", LocalModelServer)
HANDLERS_KEY = web.AppKey("handlers", RoomHandlers)
EMITTER_KEY = web.AppKey("emitter", SocketEmitter)


def provider_settings(settings: Settings) -> OpenAISettings:
    """The slice of settings a provider sees."""
    return OpenAISettings(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        model=settings.openai_model,
        assistant_name=settings.assistant_name,
        instructions=settings.assistant_instructions,
        request_timeout=settings.request_timeout,
        max_retries=settings.provider_max_retries,
        assistant_id=settings.openai_assistant_id,
        context_budget=settings.context_budget,
    )


def room_limits(settings: Settings) -> RoomLimits:
    """The per-room limits from the settings."""
    return RoomLimits(
        max_name_length=settings.max_name_length,
        max_message_length=settings.max_message_length,
        max_queued_turns=settings.max_queued_turns,
        max_participants=settings.max_participants,
        run_timeout=settings.run_timeout,
        tool_timeout=settings.tool_timeout,
        max_tool_rounds=settings.tool_max_rounds,
    )


def create_app(settings: Settings, provider: Provider | None = None) -> web.Application:
    """Build the application; the provider and rooms are opened in the app's start-up.
    Raises ToolError when TOOLS_MODULE/TOOLS_ENABLED name something unusable, and
    RoomsFileError when ROOMS_FILE cannot be used."""
    tools = load_registry(settings.tools_enabled, settings.tools_module)
    policy = RegistryPolicy(settings.default_room, settings.max_rooms, settings.rooms_ad_hoc,
                            load_rooms_file(settings.rooms_file))
    app = web.Application()
    origins = OriginPolicy(settings.cors_origins)
    sio = RoomServer(
        async_mode="aiohttp",
        cors_allowed_origins=origins,
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=settings.max_payload_bytes,
        compression=settings.ws_compression,
    )
    sio.attach(app)
    app[SETTINGS_KEY] = settings
    app[SIO_KEY] = sio

    def registry() -> RoomRegistry:
        return app[ROOMS_KEY]

    emitter = app[EMITTER_KEY] = SocketEmitter(sio)
    signin = ProxySignIn(settings.trusted_user_header, settings.trusted_proxies,
                         settings.max_name_length)
    handlers = RoomHandlers(
        sio, registry, emitter, settings.room_password, settings.rate_limit_per_minute, signin
    )
    handlers.attach()
    app[HANDLERS_KEY] = handlers
    app.cleanup_ctx.append(_rooms_context(provider, tools, emitter, policy))
    app.on_shutdown.append(_disconnect_everyone)
    stream = StreamRoute(registry, origins, signin)
    app.router.add_post("/stream", stream.post)
    app.router.add_route("OPTIONS", "/stream", stream.preflight)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/rooms", rooms_handler(registry, settings.room_password, signin))
    app.router.add_get("/api/session", session_handler(signin))
    index = index_handler(WEB_DIST)
    app.router.add_get("/", index)
    app.router.add_get("/r/{room}", index)
    if WEB_DIST.is_dir():
        app.router.add_static("/", WEB_DIST, show_index=False)
    return app


def _rooms_context(
    injected: Provider | None, tools: ToolRegistry, emitter: SocketEmitter,
    policy: RegistryPolicy,
) -> Any:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        local = None
        if injected is None and settings.llm_api == "local":  # the owned llama.cpp child
            local = app[LOCAL_MODEL_KEY] = LocalModelServer.from_settings(settings)
            await local.start()
            provider = create_provider("chat", local.provider_settings(provider_settings(settings)))
        else:
            provider = injected or create_provider(settings.llm_api, provider_settings(settings))
        profile = await provider.open()
        limits = room_limits(settings)

        def make_room(config: RoomConfig) -> Room:
            return Room(provider, profile, emitter, limits, tools=tools, config=config,
                        reply=settings.reply_mode, handle=settings.assistant_handle)

        app[PROVIDER_KEY] = provider
        app[ROOMS_KEY] = RoomRegistry(make_room, policy)
        logger.info("rooms ready: assistant %r via %s", profile.name, settings.llm_api)
        yield
        await _close_rooms(app)
        await provider.close()
        if local is not None:
            await local.stop()

    return context


async def _close_rooms(app: web.Application) -> None:
    """Cancel every run and delete every room's thread, within the shutdown time budget."""
    timeout = app[SETTINGS_KEY].shutdown_timeout
    try:
        await asyncio.wait_for(app[ROOMS_KEY].close(), timeout)
    except TimeoutError:
        logger.warning("room clean-up took longer than %ss; giving up", timeout)


async def _disconnect_everyone(app: web.Application) -> None:
    """Close the rooms, then every socket, so aiohttp need not wait for open websockets."""
    sio = app[SIO_KEY]
    await _close_rooms(app)
    sids = [sid for sid, _ in sio.manager.get_participants(NAMESPACE, None)]
    await asyncio.gather(*(sio.disconnect(sid) for sid in sids), return_exceptions=True)
    await app[HANDLERS_KEY].close()
    await app[EMITTER_KEY].close()
    await sio.shutdown()


async def _health(request: web.Request) -> web.Response:
    registry = request.app[ROOMS_KEY]
    settings = request.app[SETTINGS_KEY]
    return web.json_response(
        {"status": "ok", "users": registry.people(),
         "busy": any(room.busy for room in registry.open_rooms()),
         "rooms": len(registry.open_rooms()), "provider": settings.llm_api}
    )
