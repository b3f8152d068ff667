"""Responses API (`/v1/responses`), streamed and not, on top of Conversations."""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import BadRequest, NotFound, body_of, http_error_response, paginate
from .conversations_api import ConversationsAPI, item_chars, last_user_text, normalize_item
from .script import (
    CutStream,
    HTTPError,
    Reply,
    Stall,
    Text,
    ToolCalls,
    split_args,
    text_plan,
    with_stop,
)
from .sse import (
    JSON,
    ClientGone,
    Cut,
    Emits,
    Event,
    Pause,
    RawData,
    SSEStream,
    background_pauser,
    drain,
    json_response,
    new_id,
    now,
    pump,
    truncated_json,
)

if TYPE_CHECKING:
    from .server import FakeUpstream

_TERMINAL = ("completed", "failed", "cancelled", "incomplete")


class ResponsesAPI:
    def __init__(self, fake: FakeUpstream, conversations: ConversationsAPI) -> None:
        self.fake = fake
        self.conversations = conversations
        self._busy: set[str] = set()  # conversations with a response in flight
        self._contexts: dict[str, list[JSON]] = {}  # response id -> context + output
        self._inputs: dict[str, list[JSON]] = {}
        self._unstored: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/responses", self.create),
            web.get("/v1/responses/{rid}", self.retrieve),
            web.delete("/v1/responses/{rid}", self.delete),
            web.post("/v1/responses/{rid}/cancel", self.cancel),
            web.get("/v1/responses/{rid}/input_items", self.input_items),
        ]

    def _response(self, request: web.Request) -> JSON:
        rid = request.match_info["rid"]
        if rid not in self.fake.responses or rid in self._unstored:
            raise NotFound(f"Response with id '{rid}' not found.")
        return self.fake.responses[rid]

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_response(self._response(request))

    async def delete(self, request: web.Request) -> web.Response:
        resp = self._response(request)
        self._unstored.add(resp["id"])
        return json_response({"id": resp["id"], "object": "response", "deleted": True})

    async def input_items(self, request: web.Request) -> web.Response:
        rid = self._response(request)["id"]
        return json_response(paginate(self._inputs.get(rid, []), request.query))

    async def cancel(self, request: web.Request) -> web.Response:
        resp = self._response(request)
        if not resp.get("background"):
            raise BadRequest("Cannot cancel a synchronous response.")
        if resp["status"] in ("completed", "failed", "incomplete"):
            raise BadRequest(f"Cannot cancel a response with status '{resp['status']}'.")
        resp["status"] = "cancelled"
        return json_response(resp)

    def _check_tool_pairing(self, context: list[JSON], inputs: list[JSON]) -> None:
        calls = [i["call_id"] for i in context if i["type"] == "function_call"]
        outputs = {i["call_id"] for i in context if i["type"] == "function_call_output"}
        for item in inputs:
            if item["type"] == "function_call_output" and item["call_id"] not in calls:
                raise BadRequest(
                    f"No tool call found for function call output with call_id {item['call_id']}.",
                    param="input",
                )
        for call_id in calls:
            if call_id not in outputs:
                raise BadRequest(f"No tool output found for function call {call_id}.", "input")

    async def create(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        body = body_of(request)
        conv = body.get("conversation")
        conv_id: str | None = conv.get("id") if isinstance(conv, dict) else conv
        prev_id: str | None = body.get("previous_response_id")
        if conv_id and prev_id:
            raise BadRequest(
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                code="mutually_exclusive_parameters",
            )
        if conv_id and conv_id not in fake.conversations:
            raise NotFound(f"Conversation with id '{conv_id}' not found.", "conversation")
        if prev_id and prev_id not in self._contexts:
            raise NotFound(
                f"Previous response with id '{prev_id}' not found.", "previous_response_id"
            )
        raw = body.get("input")
        if isinstance(raw, str):
            raw = [{"type": "message", "role": "user", "content": raw}]
        inputs = [normalize_item(it, f"input[{i}]") for i, it in enumerate(raw or [])]
        history = fake.conversations[conv_id] if conv_id else self._contexts.get(prev_id or "", [])
        context = history + inputs
        self._check_tool_pairing(context, inputs)
        limit = fake.context_limit_chars
        if limit is not None and item_chars(context) + len(body.get("instructions") or "") > limit:
            raise BadRequest(
                "Your input exceeds the context window of this model. Please adjust your input "
                "and try again.",
                param="input",
                code="context_length_exceeded",
            )
        if conv_id in self._busy:
            raise BadRequest(
                "Another process is currently operating on this conversation. Please retry in a "
                "few seconds.",
                param="conversation",
                code="conversation_locked",
            )
        user_text = last_user_text(context)
        reply = fake.pop_reply(user_text)
        if isinstance(reply, HTTPError):
            return http_error_response(reply)
        self.conversations.record_outputs(inputs)
        background = bool(body.get("background"))
        resp = _response_obj(body, conv_id, prev_id, background)
        rid = resp["id"]
        fake.responses[rid] = resp
        self._inputs[rid] = inputs
        if body.get("store") is False:
            self._unstored.add(rid)
        if conv_id:
            self._busy.add(conv_id)
        emits = self._turn(resp, reply, inputs, context, conv_id, user_text)
        if body.get("stream"):
            return await self._stream(request, emits, resp, conv_id)
        if background:
            queued = copy.deepcopy(resp)
            fake.spawn(self._background(emits, conv_id))
            return json_response(queued)
        try:
            outcome = await drain(emits, SSEStream(request, fake.closing).pause)
        finally:
            self._busy.discard(conv_id or "")
        if outcome == "gone":
            resp.update(status="cancelled", client_disconnected=True)
        elif outcome == "cut" and request.transport is not None:
            request.transport.close()
        elif outcome == "malformed":
            broken = '{"id": "' + rid + '", "object": "resp'
            return web.Response(text=broken, content_type="application/json")
        return json_response(resp)

    async def _stream(
        self, request: web.Request, emits: Emits, resp: JSON, conv_id: str | None
    ) -> web.StreamResponse:
        stream = SSEStream(request, self.fake.closing)
        handed_off = False
        try:
            try:
                await stream.open()
                outcome = await pump(stream, emits)
            except (ConnectionError, ClientGone):
                outcome = "gone"
            if outcome == "gone":
                resp["client_disconnected"] = True
                if resp.get("background") and not self.fake.closing.is_set():
                    # Background responses keep running server-side until done or cancelled.
                    self.fake.spawn(self._background(emits, conv_id))
                    handed_off = True
                else:
                    await emits.aclose()
                    if resp["status"] not in _TERMINAL:
                        resp["status"] = "cancelled"
        finally:
            if not handed_off:
                self._busy.discard(conv_id or "")
        return stream.response

    async def _background(self, emits: Emits, conv_id: str | None) -> None:
        try:
            await drain(emits, background_pauser(self.fake.closing))
        finally:
            self._busy.discard(conv_id or "")

    async def _turn(
        self,
        resp: JSON,
        reply: Reply,
        inputs: list[JSON],
        context: list[JSON],
        conv_id: str | None,
        user_text: str,
    ) -> Emits:
        """The model turn as SSE events; applies the result to the stored state on completion."""
        seq = itertools.count()
        fake = self.fake

        def ev(kind: str, **fields: Any) -> Event:
            data = {"type": kind, **copy.deepcopy(fields), "sequence_number": next(seq)}
            return Event(kind, data)

        def cancelled() -> bool:
            return bool(resp["status"] == "cancelled")

        yield ev("response.created", response=resp)
        if resp["background"]:
            yield ev("response.queued", response=resp)
            resp["status"] = "in_progress"
        yield ev("response.in_progress", response=resp)
        if isinstance(reply, Stall):
            yield Pause(reply.seconds)
            reply = reply.then or Text(f"Echo: {user_text}")
        if cancelled():
            return
        output: list[JSON] = []
        if isinstance(reply, ToolCalls):
            delay = fake.delay_for(reply.delay)
            for index, call in enumerate(reply.calls):
                item: JSON = {
                    "id": new_id("fc_", 48, hex_=True),
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": call.call_id or new_id("call_"),
                    "name": call.name,
                }
                ids = {"item_id": item["id"], "output_index": index}
                yield ev("response.output_item.added", output_index=index, item=item)
                for piece in split_args(call.arguments):
                    if delay:
                        yield Pause(delay)
                        if cancelled():
                            return
                    yield ev("response.function_call_arguments.delta", delta=piece, **ids)
                yield ev("response.function_call_arguments.done", arguments=call.arguments, **ids)
                item.update(status="completed", arguments=call.arguments)
                yield ev("response.output_item.done", output_index=index, item=item)
                output.append(item)
        else:
            pieces, stop_at, delay = text_plan(reply, fake.delta_delay)
            item = {
                "id": new_id("msg_", 48, hex_=True),
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }
            part: JSON = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            yield ev("response.output_item.added", output_index=0, item=item)
            yield ev("response.content_part.added", part=part, **ids)
            for i, piece in with_stop(pieces, stop_at):
                if i < 0:
                    if isinstance(reply, CutStream):
                        yield Cut(clean=reply.clean)
                    else:
                        delta = ev("response.output_text.delta", delta="", logprobs=[], **ids)
                        yield RawData(truncated_json(delta.data), delta.event)
                    return
                if i and delay:
                    yield Pause(delay)
                    if cancelled():
                        return
                yield ev("response.output_text.delta", delta=piece, logprobs=[], **ids)
            text = "".join(pieces)
            part["text"] = text
            yield ev("response.output_text.done", text=text, logprobs=[], **ids)
            yield ev("response.content_part.done", part=part, **ids)
            item.update(status="completed", content=[part])
            yield ev("response.output_item.done", output_index=0, item=item)
            output.append(item)
        in_tokens = item_chars(context) // 4 + 1
        out_tokens = item_chars(output) // 4 + 1
        resp.update(
            status="completed",
            completed_at=now(),
            output=output,
            usage={
                "input_tokens": in_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": out_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": in_tokens + out_tokens,
            },
        )
        if conv_id and conv_id in fake.conversations:
            fake.conversations[conv_id].extend(copy.deepcopy(inputs + output))
        self._contexts[resp["id"]] = context + copy.deepcopy(output)
        yield ev("response.completed", response=resp)


def _response_obj(body: JSON, conv_id: str | None, prev_id: str | None, background: bool) -> JSON:
    return {
        "id": new_id("resp_", 48, hex_=True),
        "object": "response",
        "created_at": now(),
        "status": "queued" if background else "in_progress",
        "background": background,
        "completed_at": None,
        "conversation": {"id": conv_id} if conv_id else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model") or "gpt-4o",
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": prev_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
