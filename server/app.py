"""create_app(settings): the aiohttp application with Socket.IO, the web client and health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from redis.exceptions import RedisError

from .cluster import ClusterNode, ClusterRoom, RedisThreadStore
from .config import Settings
from .lifecycle import Service
from .local import LocalModelServer
from .metrics import Metrics
from .providers import OpenAISettings, Provider, create_provider
from .providers.base import AssistantProfile
from .providers.errors import ProviderError
from .rooms import (
    OpenRoom,
    RegistryPolicy,
    Room,
    RoomConfig,
    RoomLimits,
    RoomRegistry,
    load_rooms_file,
)
from .tools import ToolRegistry, load_registry
from .transport.emitter import SocketEmitter
from .transport.engine import NAMESPACE, RoomServer
from .transport.handlers import RoomHandlers
from .transport.http import (
    OriginPolicy,
    StreamRoute,
    health_handlers,
    index_handler,
    metrics_handler,
    rooms_handler,
    session_handler,
)
from .transport.signin import ProxySignIn

logger = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "client" / "web" / "dist"

SETTINGS_KEY = web.AppKey("settings", Settings)
SIO_KEY = web.AppKey("sio", socketio.AsyncServer)
SERVICE_KEY = web.AppKey("service", Service)
METRICS_KEY = web.AppKey("metrics", Metrics)
PROVIDER_KEY = web.AppKey("provider", Provider)
LOCAL_MODEL_KEY = web.AppKey("local_model", LocalModelServer)
HANDLERS_KEY = web.AppKey("handlers", RoomHandlers)
EMITTER_KEY = web.AppKey("emitter", SocketEmitter)
NODE_KEY = web.AppKey("cluster_node", ClusterNode)


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
    metrics = app[METRICS_KEY] = Metrics()

    def service() -> Service | None:
        return app.get(SERVICE_KEY)

    emitter = app[EMITTER_KEY] = SocketEmitter(sio, metrics)
    signin = ProxySignIn(settings.trusted_user_header, settings.trusted_proxies,
                         settings.max_name_length)
    handlers = RoomHandlers(sio, service, emitter, settings.room_password,
                            settings.rate_limit_per_minute, metrics, signin)
    handlers.attach()
    app[HANDLERS_KEY] = handlers
    app.cleanup_ctx.append(_service_context(provider, tools, emitter, policy, metrics))
    app.on_shutdown.append(_drain_and_disconnect)
    _gauges(app, metrics)
    stream = StreamRoute(service, origins, metrics, signin)
    app.router.add_post("/stream", stream.post)
    app.router.add_route("OPTIONS", "/stream", stream.preflight)
    health, ready = health_handlers(service, settings.llm_api)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/metrics", metrics_handler(metrics, settings.metrics_token))
    app.router.add_get("/api/rooms",
                       rooms_handler(service, settings.room_password, metrics, signin))
    app.router.add_get("/api/session", session_handler(signin, metrics))
    index = index_handler(WEB_DIST)
    app.router.add_get("/", index)
    app.router.add_get("/r/{room}", index)
    if WEB_DIST.is_dir():
        app.router.add_static("/", WEB_DIST, show_index=False)
    return app


def _gauges(app: web.Application, metrics: Metrics) -> None:
    def registry() -> RoomRegistry | None:
        found = app.get(SERVICE_KEY)
        return None if found is None else found.registry

    def of(read: Any) -> Any:
        return lambda: 0 if (r := registry()) is None else read(r)

    metrics.gauges(
        rooms=of(lambda r: len(r.open_rooms())), people=of(RoomRegistry.people),
        connections=lambda: len(app[SIO_KEY].eio.sockets), waiting=of(RoomRegistry.waiting),
    )


def _service_context(
    injected: Provider | None, tools: ToolRegistry, emitter: SocketEmitter,
    policy: RegistryPolicy, metrics: Metrics,
) -> Any:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS_KEY]
        local = None
        node = _cluster_node(app, settings, emitter)
        store = None if node is None else RedisThreadStore(node.redis)
        opened = replace(provider_settings(settings), on_retry=metrics.provider_retries.inc)
        if injected is None and settings.llm_api == "local":  # the owned llama.cpp child
            local = app[LOCAL_MODEL_KEY] = LocalModelServer.from_settings(settings)
            await local.start()
            provider = create_provider("chat", local.provider_settings(opened), store)
        else:
            provider = injected or create_provider(settings.llm_api, opened, store)
        limits = room_limits(settings)

        def make_registry(profile: AssistantProfile) -> RoomRegistry:
            if local is not None:  # what the room tells people they are talking to
                profile = replace(profile, model=local.description, demo=local.bundled)

            def make_room(config: RoomConfig) -> OpenRoom:
                if node is not None:
                    return ClusterRoom(node, provider, profile, limits, tools, config,
                                       settings.reply_mode, settings.assistant_handle, metrics)
                return Room(provider, profile, emitter, limits, tools=tools, config=config,
                            reply=settings.reply_mode, handle=settings.assistant_handle,
                            metrics=metrics)

            return RoomRegistry(make_room, policy)

        store_ok = None if node is None else (lambda: node.healthy)
        directory = None if node is None else node.rooms
        service = app[SERVICE_KEY] = Service(provider, make_registry, store_ok, directory)
        app[PROVIDER_KEY] = provider
        if node is not None:
            metrics.cluster(lambda: float(node.healthy), lambda: _rooms_owned(service))
            node.delete_thread = _thread_deleter(provider)
            node.on_reset = _resync(app, service, node)
            await node.start()
        await service.start()
        yield
        await service.close_rooms(settings.shutdown_timeout)
        if node is not None:
            await node.close()
        await provider.close()
        if local is not None:
            await local.stop()

    return context


def _cluster_node(
    app: web.Application, settings: Settings, emitter: SocketEmitter
) -> ClusterNode | None:
    """This process as a node of the cluster, with REDIS_URL (docs/cluster.md)."""
    if not settings.redis_url:
        return None
    node = app[NODE_KEY] = ClusterNode(settings.redis_url, settings.cluster_lease, emitter)
    return node


def _resync(app: web.Application, service: Service, node: ClusterNode) -> Any:
    """The cluster's view here can no longer be trusted: rooms this process ran write back what
    they hold (when Redis lost its data), then every client reconnects and gets a fresh
    snapshot (web and terminal clients reconnect on their own)."""

    async def resync(lost: bool) -> None:
        with contextlib.suppress(TimeoutError):  # so that the clients' registrations go through
            async with asyncio.timeout(5.0):
                await node.wait_healthy()
        registry = service.registry
        if lost and registry is not None:
            for room in registry.open_rooms():
                if isinstance(room, ClusterRoom):
                    try:
                        await room.reseed()
                    except RedisError:
                        logger.exception("could not write room %s back to Redis", room.name)
        sio = app[SIO_KEY]
        sids = [sid for sid, _ in sio.manager.get_participants(NAMESPACE, None)]
        await asyncio.gather(*(sio.disconnect(sid) for sid in sids), return_exceptions=True)

    return resync


def _rooms_owned(service: Service) -> float:
    rooms = [] if service.registry is None else service.registry.open_rooms()
    return float(sum(isinstance(room, ClusterRoom) and room.owner is not None for room in rooms))


def _thread_deleter(provider: Provider) -> Any:
    async def delete(thread_id: str) -> None:
        try:
            await provider.delete_thread(thread_id)
            logger.info("deleted thread %s", thread_id)
        except ProviderError:
            logger.exception("could not delete thread %s", thread_id)

    return delete


async def _drain_and_disconnect(app: web.Application) -> None:
    """On SIGTERM (the listening socket is already closed): let answers in flight finish for
    up to DRAIN_TIMEOUT, close the rooms, then every socket, so aiohttp need not wait for open
    websockets."""
    settings, sio = app[SETTINGS_KEY], app[SIO_KEY]
    service = app.get(SERVICE_KEY)
    if service is not None:
        await service.drain(settings.drain_timeout)
        await service.close_rooms(settings.shutdown_timeout)
    sids = [sid for sid, _ in sio.manager.get_participants(NAMESPACE, None)]
    await asyncio.gather(*(sio.disconnect(sid) for sid in sids), return_exceptions=True)
    await app[HANDLERS_KEY].close()
    await app[EMITTER_KEY].close()
    await sio.shutdown()
