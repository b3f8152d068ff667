"""Conversations API (`/v1/conversations`): conversations and their items."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import BadRequest, NotFound, body_of, paginate, text_of
from .sse import JSON, json_response, new_id, now

if TYPE_CHECKING:
    from .server import FakeUpstream


def normalize_item(item: Any, where: str) -> JSON:
    """An input item as the Conversations API stores and returns it (with an id)."""
    if not isinstance(item, dict):
        raise BadRequest(f"Invalid type for '{where}': expected an object.", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise BadRequest(
                f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', "
                "'developer', and 'user'.",
                param=f"{where}.role",
            )
        content = item.get("content")
        if isinstance(content, str):
            content = [
                {"type": "output_text" if role == "assistant" else "input_text", "text": content}
            ]
        parts = []
        for raw_part in content or []:
            part = dict(raw_part)
            if part.get("type") == "output_text":
                part.setdefault("annotations", [])
                part.setdefault("logprobs", [])
            parts.append(part)
        return {
            "id": item.get("id") or new_id("msg_", 48, hex_=True),
            "type": "message",
            "status": "completed",
            "role": role,
            "content": parts,
        }
    if kind == "function_call_output":
        if "call_id" not in item:
            raise BadRequest(f"Missing required parameter: '{where}.call_id'.", param=where)
        return {
            "id": item.get("id") or new_id("fco_", 48, hex_=True),
            "type": "function_call_output",
            "call_id": item["call_id"],
            "output": item.get("output", ""),
            "status": "completed",
        }
    if kind == "function_call":
        return {
            "id": item.get("id") or new_id("fc_", 48, hex_=True),
            "type": "function_call",
            "status": "completed",
            "arguments": item.get("arguments", ""),
            "call_id": item.get("call_id"),
            "name": item.get("name"),
        }
    if kind is None:
        raise BadRequest(f"Missing required parameter: '{where}.type'.", param=where)
    return {"id": item.get("id") or new_id("item_", 48, hex_=True), **item}


def check_length(items: list[Any]) -> None:
    """Both endpoints that take `items` accept at most 20 at a time."""
    if len(items) > 20:
        raise BadRequest(
            "Invalid 'items': array too long. Expected an array with maximum length 20, "
            f"but got an array with length {len(items)} instead.",
            param="items",
        )


def last_user_text(items: list[JSON]) -> str:
    """Text of the latest user-role message item ("" if none)."""
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return text_of(item.get("content"))
    return ""


def item_chars(items: list[JSON]) -> int:
    """Characters of text, tool arguments and tool outputs in items (context-limit check)."""
    total = 0
    for item in items:
        total += len(text_of(item.get("content")))
        total += len(str(item.get("output") or "")) + len(str(item.get("arguments") or ""))
    return total


def list_page(items: list[JSON]) -> JSON:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


class ConversationsAPI:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.objects: dict[str, JSON] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/conversations", self.create),
            web.get("/v1/conversations/{cid}", self.retrieve),
            web.post("/v1/conversations/{cid}", self.update),
            web.delete("/v1/conversations/{cid}", self.delete),
            web.post("/v1/conversations/{cid}/items", self.create_items),
            web.get("/v1/conversations/{cid}/items", self.list_items),
            web.get("/v1/conversations/{cid}/items/{iid}", self.get_item),
            web.delete("/v1/conversations/{cid}/items/{iid}", self.delete_item),
        ]

    def _cid(self, request: web.Request) -> str:
        cid = request.match_info["cid"]
        if cid not in self.fake.conversations:
            raise NotFound(f"Conversation with id '{cid}' not found.")
        return cid

    def record_outputs(self, items: list[JSON]) -> None:
        for item in items:
            if item["type"] == "function_call_output":
                self.fake.record_tool_output(item["call_id"], str(item["output"]))

    async def create(self, request: web.Request) -> web.Response:
        body = body_of(request)
        items = body.get("items") or []
        check_length(items)
        stored = [normalize_item(it, f"items[{i}]") for i, it in enumerate(items)]
        cid = new_id("conv_", 48, hex_=True)
        obj = {
            "id": cid,
            "object": "conversation",
            "created_at": now(),
            "metadata": body.get("metadata") or {},
        }
        self.objects[cid] = obj
        self.fake.conversations[cid] = stored
        self.record_outputs(stored)
        return json_response(obj)

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_response(self.objects[self._cid(request)])

    async def update(self, request: web.Request) -> web.Response:
        obj = self.objects[self._cid(request)]
        obj["metadata"] = body_of(request).get("metadata") or {}
        return json_response(obj)

    async def delete(self, request: web.Request) -> web.Response:
        cid = self._cid(request)
        del self.fake.conversations[cid]
        self.fake.deleted_conversations.append(cid)
        return json_response({"id": cid, "object": "conversation.deleted", "deleted": True})

    async def create_items(self, request: web.Request) -> web.Response:
        cid = self._cid(request)
        items = body_of(request).get("items")
        if not isinstance(items, list):
            raise BadRequest("Missing required parameter: 'items'.", param="items")
        check_length(items)
        stored = [normalize_item(it, f"items[{i}]") for i, it in enumerate(items)]
        self.fake.conversations[cid].extend(stored)
        self.record_outputs(stored)
        return json_response(list_page(stored))

    async def list_items(self, request: web.Request) -> web.Response:
        return json_response(paginate(self.fake.conversations[self._cid(request)], request.query))

    def _find_item(self, request: web.Request) -> tuple[str, int]:
        cid = self._cid(request)
        iid = request.match_info["iid"]
        for i, item in enumerate(self.fake.conversations[cid]):
            if item.get("id") == iid:
                return cid, i
        raise NotFound(f"Item with id '{iid}' not found.")

    async def get_item(self, request: web.Request) -> web.Response:
        cid, i = self._find_item(request)
        return json_response(self.fake.conversations[cid][i])

    async def delete_item(self, request: web.Request) -> web.Response:
        cid, i = self._find_item(request)
        del self.fake.conversations[cid][i]
        return json_response(self.objects[cid])
