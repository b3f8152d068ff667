"""create_app(settings): the aiohttp application with Socket.IO, the web client and health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from .config import Settings
from .http import OriginPolicy, StreamRoute, index_handler
from .local import LocalModelServer
from .providers import OpenAISettings, Provider, create_provider
from .room import Room, RoomLimits
from .sockets import RoomHandlers, RoomServer, SocketEmitter
from .tools import ToolRegistry, load_registry

logger = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "client" / "web" / "dist"

SETTINGS_KEY = web.AppKey("settings", Settings)
SIO_KEY = web.AppKey("sio", socketio.AsyncServer)
ROOM_KEY = web.AppKey("room", Room)
PROVIDER_KEY = web.AppKey("provider", Provider)
LOCAL_MODEL_KEY = web.AppKey("local_model", LocalModelServer)
HANDLERS_KEY = web.AppKey("handlers", RoomHandlers)


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


def create_app(settings: Settings, provider: Provider | None = None) -> web.Application:
    """Build the application; the provider and room are opened in the app's start-up.
    Raises ToolError when TOOLS_MODULE/TOOLS_ENABLED name something unusable."""
    tools = load_registry(settings.tools_enabled, settings.tools_module)
    app = web.Application()
    policy = OriginPolicy(settings.cors_origins)
    sio = RoomServer(
        async_mode="aiohttp",
        cors_allowed_origins=policy,
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=settings.max_payload_bytes,
        compression=settings.ws_compression,
    )
    sio.attach(app)
    app[SETTINGS_KEY] = settings
    app[SIO_KEY] = sio
    def room_of() -> Room:
        return app[ROOM_KEY]

    emitter = SocketEmitter(sio)
    handlers = RoomHandlers(
        sio, room_of, emitter, settings.room_password, settings.rate_limit_per_minute
    )
    handlers.attach()
    app[HANDLERS_KEY] = handlers
    app.cleanup_ctx.append(_room_context(provider, tools, emitter))
    app.on_shutdown.append(_disconnect_everyone)
    stream = StreamRoute(room_of, policy)
    app.router.add_post("/stream", stream.post)
    app.router.add_route("OPTIONS", "/stream", stream.preflight)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/", index_handler(WEB_DIST))
    if WEB_DIST.is_dir():
        app.router.add_static("/", WEB_DIST, show_index=False)
    return app


def _room_context(injected: Provider | None, tools: ToolRegistry, emitter: SocketEmitter) -> Any:
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
        if local is not None:
            profile = replace(profile, model=local.description, demo=local.bundled)
        limits = RoomLimits(
            max_name_length=settings.max_name_length,
            max_message_length=settings.max_message_length,
            max_queued_turns=settings.max_queued_turns,
            max_participants=settings.max_participants,
            run_timeout=settings.run_timeout,
            tool_timeout=settings.tool_timeout,
            max_tool_rounds=settings.tool_max_rounds,
        )
        room = Room(provider, profile, emitter, limits, tools=tools)
        app[PROVIDER_KEY], app[ROOM_KEY] = provider, room
        await room.start()
        logger.info("room ready: assistant %r via %s", profile.name, settings.llm_api)
        yield
        await _close_room(app)
        await provider.close()
        if local is not None:
            await local.stop()

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
    await app[HANDLERS_KEY].close()
    await sio.shutdown()


async def _health(request: web.Request) -> web.Response:
    room = request.app[ROOM_KEY]
    settings = request.app[SETTINGS_KEY]
    return web.json_response(
        {"status": "ok", "users": len(room.users()), "busy": room.busy,
         "provider": settings.llm_api}
    )
