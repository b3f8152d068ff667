"""FakeUpstream: the aiohttp app, its shared state, the scripting queue and the admin endpoints."""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .assistants_api import ACTIVE_RUN_STATUSES, AssistantsAPI
from .assistants_runs import RunsAPI
from .chat_api import ChatAPI
from .common import BODY_KEY, APIError
from .conversations_api import ConversationsAPI
from .responses_api import ResponsesAPI
from .script import Reply, Text, reply_from_json
from .sse import JSON, error_response, json_response, now

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MODEL_PATH = re.compile(
    r"^/v1/(responses|chat/completions|threads/runs|threads/[^/]+/runs"
    r"|threads/[^/]+/runs/[^/]+/submit_tool_outputs)$"
)
_BETA_PATH = re.compile(r"^/v1/(assistants|threads)(/|$)")
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
    "was not valid JSON. If you have trouble figuring out how to fix this, please contact us "
    "through our help center at help.openai.com.)"
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini"]


@dataclass
class Recorded:
    """One HTTP request as the fake received it (admin `/_fake/*` requests are not recorded)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]


class FakeUpstream:
    """A fake OpenAI-compatible server (Responses+Conversations, Assistants v2, Chat Completions).

    See the package docstring for the scripting contract. Extras beyond the constructor:
    `cancel_latency` (seconds an Assistants run stays "cancelling" after /cancel, default 0),
    `tool_outputs`, `pending_replies()`, `state()` (what `GET /_fake/state` returns).

    `message_metadata` plays Assistants-compatible servers that do not keep our labels:
    "kept" (the real API), "on_create" (metadata given when a message is created is kept, but
    there is no "modify message" endpoint: 404), "dropped" (messages never keep metadata;
    modify answers with the message unchanged).
    """

    def __init__(
        self,
        *,
        require_key: str | None = None,
        context_limit_chars: int | None = None,
        delta_delay: float = 0.0,
        message_metadata: str = "kept",
    ) -> None:
        if message_metadata not in ("kept", "on_create", "dropped"):
            raise ValueError(f"message_metadata {message_metadata!r}")
        self.require_key = require_key
        self.context_limit_chars = context_limit_chars
        self.delta_delay = delta_delay
        self.message_metadata = message_metadata
        # Seconds an Assistants run stays "cancelling" after /cancel before becoming "cancelled".
        self.cancel_latency = 0.0
        self.base_url = ""
        self.requests: list[Recorded] = []
        self.tool_outputs: list[dict[str, str]] = []
        self.conversations: dict[str, list[JSON]] = {}
        self.deleted_conversations: list[str] = []
        self.threads: dict[str, list[JSON]] = {}
        self.deleted_threads: list[str] = []
        self.runs: dict[str, JSON] = {}
        self.assistants: dict[str, JSON] = {}
        self.deleted_assistants: list[str] = []
        self.responses: dict[str, JSON] = {}
        self._queue: deque[Reply] = deque()
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._conversations_api = ConversationsAPI(self)
        self._responses_api = ResponsesAPI(self, self._conversations_api)
        self._assistants_api = AssistantsAPI(self)
        self._runs_api = RunsAPI(self, self._assistants_api)
        self._chat_api = ChatAPI(self)

    # -- scripting -------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies (FIFO); each model turn pops one."""
        self._queue.extend(replies)

    def pending_replies(self) -> int:
        return len(self._queue)

    def pop_reply(self, last_user_text: str) -> Reply:
        """Next scripted reply, or the default echo of the latest user text."""
        if self._queue:
            return self._queue.popleft()
        return Text(f"Echo: {last_user_text}")

    def delay_for(self, delay: float | None) -> float:
        return self.delta_delay if delay is None else delay

    def model_requests(self) -> list[Recorded]:
        """Requests to model-turn endpoints (responses.create, runs create / submit_tool_outputs,
        chat.completions), whatever their outcome (errors and retries included)."""
        return [r for r in self.requests if r.method == "POST" and _MODEL_PATH.match(r.path)]

    def active_runs(self) -> list[str]:
        return [rid for rid, run in self.runs.items() if run["status"] in ACTIVE_RUN_STATUSES]

    def record_tool_output(self, call_id: str, output: str) -> None:
        self.tool_outputs.append({"call_id": call_id, "output": output})

    @property
    def closing(self) -> asyncio.Event:
        return self._closing

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run background work (non-streamed runs, background responses) tracked for stop()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def state(self) -> JSON:
        return {
            "conversations": self.conversations,
            "deleted_conversations": self.deleted_conversations,
            "threads": self.threads,
            "deleted_threads": self.deleted_threads,
            "active_runs": self.active_runs(),
            "assistants": self.assistants,
            "deleted_assistants": self.deleted_assistants,
            "runs": self.runs,
            "responses": self.responses,
            "tool_outputs": self.tool_outputs,
            "pending_replies": len(self._queue),
            "model_requests": len(self.model_requests()),
        }

    # -- app -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.router.add_get("/_fake/state", self._admin_state)
        app.router.add_post("/_fake/enqueue", self._admin_enqueue)
        app.router.add_get("/_fake/requests", self._admin_requests)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_routes(self._conversations_api.routes())
        app.router.add_routes(self._responses_api.routes())
        app.router.add_routes(self._runs_api.routes())  # before /v1/threads/{tid}
        app.router.add_routes(self._assistants_api.routes())
        app.router.add_routes(self._chat_api.routes())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0 = any free port) and set `base_url` to `http://host:port/v1`."""
        self._closing.clear()
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}/v1"

    async def stop(self) -> None:
        """Stop serving: open streams end, background work is cancelled."""
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        raw = await request.read()
        parsed: Any = None
        malformed = False
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                malformed = True
        request[BODY_KEY] = parsed
        self.requests.append(
            Recorded(
                request.method, request.path, dict(request.query), parsed, dict(request.headers)
            )
        )
        if self.require_key is not None:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth.startswith("Bearer ") else ""
            if not key:
                return error_response(401, _NO_KEY, code="invalid_api_key")
            if key != self.require_key:
                masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:]
                return error_response(
                    401,
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
        if malformed:
            return error_response(400, _BAD_JSON)
        if _BETA_PATH.match(request.path) and "assistants=v2" not in request.headers.get(
            "OpenAI-Beta", ""
        ):
            return error_response(
                400,
                "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please "
                "try again by setting the header 'OpenAI-Beta: assistants=v2'.",
                code="invalid_beta",
            )
        try:
            return await handler(request)
        except APIError as exc:
            return exc.response()
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return error_response(404, f"Invalid URL ({request.method} {request.path})")

    # -- admin + models ----------------------------------------------------------------------

    async def _admin_state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _admin_requests(self, request: web.Request) -> web.Response:
        return json_response([asdict(r) for r in self.requests])

    async def _admin_enqueue(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            items = data if isinstance(data, list) else [data]
            replies = [reply_from_json(item) for item in items]
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(400, f"bad reply script: {exc}")
        self.enqueue(*replies)
        return json_response({"queued": len(replies), "pending": len(self._queue)})

    async def _models(self, request: web.Request) -> web.Response:
        data = [_model_obj(m) for m in _MODELS]
        return json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in _MODELS:
            return error_response(
                404,
                f"The model '{name}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return json_response(_model_obj(name))


def _model_obj(name: str) -> JSON:
    return {"id": name, "object": "model", "created": now() - 86400, "owned_by": "system"}
