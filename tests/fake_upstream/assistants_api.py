"""Assistants API v2: assistants, threads and messages (runs live in `assistants_runs.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import BadRequest, NotFound, body_of, paginate, text_of
from .sse import JSON, json_response, new_id, now

if TYPE_CHECKING:
    from .server import FakeUpstream

ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")


def active_run(fake: FakeUpstream, thread_id: str) -> str | None:
    """The id of the thread's active run, if any (the real API allows one at a time)."""
    for rid, run in fake.runs.items():
        if run["thread_id"] == thread_id and run["status"] in ACTIVE_RUN_STATUSES:
            return rid
    return None


def message_content(content: Any, where: str = "content") -> list[JSON]:
    """Message `content` (string or parts) as the API returns it."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    if not isinstance(content, list):
        raise BadRequest(f"Missing required parameter: '{where}'.", param=where)
    parts: list[JSON] = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            text = part.get("text")
            value = text.get("value", "") if isinstance(text, dict) else str(text or "")
            parts.append({"type": "text", "text": {"value": value, "annotations": []}})
        elif isinstance(part, dict):
            parts.append(dict(part))
    return parts


def make_message(
    thread_id: str,
    role: str,
    content: list[JSON],
    *,
    metadata: JSON | None = None,
    attachments: list[JSON] | None = None,
    run_id: str | None = None,
    assistant_id: str | None = None,
    status: str = "completed",
) -> JSON:
    created = now()
    return {
        "id": new_id("msg_"),
        "object": "thread.message",
        "created_at": created,
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "run_id": run_id,
        "role": role,
        "content": content,
        "attachments": attachments or [],
        "metadata": metadata or {},
        "status": status,
        "completed_at": created if status == "completed" else None,
        "incomplete_at": None,
        "incomplete_details": None,
    }


def new_run(thread_id: str, assistant: JSON, body: JSON) -> JSON:
    """A run object in status "queued", from the assistant and the run-create body."""
    instructions = body.get("instructions") or assistant.get("instructions") or ""
    if body.get("additional_instructions"):
        instructions = f"{instructions}\n\n{body['additional_instructions']}".strip()
    tools = body.get("tools")
    return {
        "id": new_id("run_"),
        "object": "thread.run",
        "created_at": now(),
        "assistant_id": assistant["id"],
        "thread_id": thread_id,
        "status": "queued",
        "started_at": None,
        "expires_at": now() + 600,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": body.get("model") or assistant["model"],
        "instructions": instructions,
        "tools": tools if tools is not None else assistant["tools"],
        "tool_resources": {},
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", assistant.get("temperature", 1.0)),
        "top_p": body.get("top_p", assistant.get("top_p", 1.0)),
        "reasoning_effort": body.get("reasoning_effort"),
        "max_completion_tokens": body.get("max_completion_tokens"),
        "max_prompt_tokens": body.get("max_prompt_tokens"),
        "truncation_strategy": body.get("truncation_strategy")
        or {"type": "auto", "last_messages": None},
        "incomplete_details": None,
        "usage": None,
        "response_format": body.get("response_format", "auto"),
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
    }


def user_message(thread_id: str, spec: Any, where: str) -> JSON:
    """A message from a `messages.create` body or a `messages` / `additional_messages` entry."""
    if not isinstance(spec, dict):
        raise BadRequest(f"Invalid type for '{where}': expected an object.", param=where)
    role = spec.get("role")
    if role not in ("user", "assistant"):
        raise BadRequest(
            f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
            param=f"{where}.role" if where else "role",
        )
    prefix = f"{where}." if where else ""
    return make_message(
        thread_id,
        role,
        message_content(spec.get("content"), f"{prefix}content"),
        metadata=spec.get("metadata"),
        attachments=spec.get("attachments"),
    )


def last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return text_of(message["content"])
    return ""


class AssistantsAPI:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.thread_objs: dict[str, JSON] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/assistants", self.create_assistant),
            web.get("/v1/assistants", self.list_assistants),
            web.get("/v1/assistants/{aid}", self.get_assistant),
            web.post("/v1/assistants/{aid}", self.update_assistant),
            web.delete("/v1/assistants/{aid}", self.delete_assistant),
            web.post("/v1/threads", self.create_thread),
            web.get("/v1/threads/{tid}", self.get_thread),
            web.post("/v1/threads/{tid}", self.update_thread),
            web.delete("/v1/threads/{tid}", self.delete_thread),
            web.post("/v1/threads/{tid}/messages", self.create_message),
            web.get("/v1/threads/{tid}/messages", self.list_messages),
            web.get("/v1/threads/{tid}/messages/{mid}", self.get_message),
            web.post("/v1/threads/{tid}/messages/{mid}", self.update_message),
            web.delete("/v1/threads/{tid}/messages/{mid}", self.delete_message),
        ]

    def received(self, tid: str, spec: Any, where: str) -> JSON:
        """A user message as this server stores it: without its metadata when the fake plays
        a compatible server that does not keep message metadata."""
        message = user_message(tid, spec, where)
        if self.fake.message_metadata == "dropped":
            message["metadata"] = {}
        return message

    # -- assistants ---------------------------------------------------------------------------

    def assistant(self, aid: str) -> JSON:
        if aid not in self.fake.assistants:
            raise NotFound(f"No assistant found with id '{aid}'.")
        return self.fake.assistants[aid]

    async def create_assistant(self, request: web.Request) -> web.Response:
        body = body_of(request)
        if not body.get("model"):
            raise BadRequest("Missing required parameter: 'model'.", param="model")
        obj = {
            "id": new_id("asst_"),
            "object": "assistant",
            "created_at": now(),
            "name": body.get("name"),
            "description": body.get("description"),
            "model": body["model"],
            "instructions": body.get("instructions"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "temperature": body.get("temperature", 1.0),
            "reasoning_effort": body.get("reasoning_effort"),
            "tool_resources": body.get("tool_resources") or {},
            "metadata": body.get("metadata") or {},
            "response_format": body.get("response_format", "auto"),
        }
        self.fake.assistants[obj["id"]] = obj
        return json_response(obj)

    async def list_assistants(self, request: web.Request) -> web.Response:
        return json_response(paginate(list(self.fake.assistants.values()), request.query))

    async def get_assistant(self, request: web.Request) -> web.Response:
        return json_response(self.assistant(request.match_info["aid"]))

    async def update_assistant(self, request: web.Request) -> web.Response:
        obj = self.assistant(request.match_info["aid"])
        obj.update({k: v for k, v in body_of(request).items() if k in obj and k != "id"})
        return json_response(obj)

    async def delete_assistant(self, request: web.Request) -> web.Response:
        aid = self.assistant(request.match_info["aid"])["id"]
        del self.fake.assistants[aid]
        self.fake.deleted_assistants.append(aid)
        return json_response({"id": aid, "object": "assistant.deleted", "deleted": True})

    # -- threads ------------------------------------------------------------------------------

    def thread_id(self, request: web.Request) -> str:
        tid = request.match_info["tid"]
        if tid not in self.fake.threads:
            raise NotFound(f"No thread found with id '{tid}'.")
        return tid

    def new_thread(self, body: JSON) -> JSON:
        tid = new_id("thread_")
        specs = body.get("messages") or []
        messages = [self.received(tid, m, f"messages[{i}]") for i, m in enumerate(specs)]
        obj = {
            "id": tid,
            "object": "thread",
            "created_at": now(),
            "metadata": body.get("metadata") or {},
            "tool_resources": body.get("tool_resources") or {},
        }
        self.thread_objs[tid] = obj
        self.fake.threads[tid] = messages
        return obj

    async def create_thread(self, request: web.Request) -> web.Response:
        return json_response(self.new_thread(body_of(request)))

    async def get_thread(self, request: web.Request) -> web.Response:
        return json_response(self.thread_objs[self.thread_id(request)])

    async def update_thread(self, request: web.Request) -> web.Response:
        obj = self.thread_objs[self.thread_id(request)]
        body = body_of(request)
        if "metadata" in body:
            obj["metadata"] = body["metadata"] or {}
        return json_response(obj)

    async def delete_thread(self, request: web.Request) -> web.Response:
        tid = self.thread_id(request)
        del self.fake.threads[tid]
        self.fake.deleted_threads.append(tid)
        return json_response({"id": tid, "object": "thread.deleted", "deleted": True})

    # -- messages -----------------------------------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        tid = self.thread_id(request)
        message = self.received(tid, body_of(request), "")
        running = active_run(self.fake, tid)
        if running:
            raise BadRequest(f"Can't add messages to {tid} while a run {running} is active.")
        self.fake.threads[tid].append(message)
        return json_response(message)

    async def list_messages(self, request: web.Request) -> web.Response:
        messages = self.fake.threads[self.thread_id(request)]
        run_id = request.query.get("run_id")
        if run_id:
            messages = [m for m in messages if m["run_id"] == run_id]
        return json_response(paginate(messages, request.query))

    def message(self, request: web.Request) -> tuple[str, int]:
        tid = self.thread_id(request)
        mid = request.match_info["mid"]
        for i, message in enumerate(self.fake.threads[tid]):
            if message["id"] == mid:
                return tid, i
        raise NotFound(f"No message found with id '{mid}'.")

    async def get_message(self, request: web.Request) -> web.Response:
        tid, i = self.message(request)
        return json_response(self.fake.threads[tid][i])

    async def update_message(self, request: web.Request) -> web.Response:
        if self.fake.message_metadata == "on_create":  # a server without "modify message"
            raise web.HTTPNotFound()
        tid, i = self.message(request)
        message = self.fake.threads[tid][i]
        body = body_of(request)
        if "metadata" in body and self.fake.message_metadata == "kept":
            message["metadata"] = body["metadata"] or {}
        return json_response(message)

    async def delete_message(self, request: web.Request) -> web.Response:
        tid, i = self.message(request)
        message = self.fake.threads[tid].pop(i)
        return json_response(
            {"id": message["id"], "object": "thread.message.deleted", "deleted": True}
        )
