"""Chat Completions API (`/v1/chat/completions`), streamed (`data:` chunks + `[DONE]`) and not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import BadRequest, body_of, http_error_response, text_of
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
    drain,
    json_response,
    new_id,
    now,
    pump,
    truncated_json,
)

if TYPE_CHECKING:
    from .server import FakeUpstream

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _check_messages(messages: Any) -> list[JSON]:
    if not isinstance(messages, list):
        raise BadRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not messages:
        raise BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    open_ids: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            role = message.get("role") if isinstance(message, dict) else None
            raise BadRequest(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
            )
        if message["role"] == "tool":
            if message.get("tool_call_id") not in open_ids:
                raise BadRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            open_ids.remove(message["tool_call_id"])
            continue
        if open_ids:
            break
        if message["role"] == "assistant":
            open_ids = [c.get("id") for c in message.get("tool_calls") or []]
    if open_ids:
        raise BadRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(map(str, open_ids)),
            "messages",
        )
    return messages


def _chars(messages: list[JSON]) -> int:
    total = 0
    for message in messages:
        total += len(text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            total += len(str((call.get("function") or {}).get("arguments") or ""))
    return total


def _usage(prompt_chars: int, completion_chars: int) -> JSON:
    prompt, completion = prompt_chars // 4 + 1, completion_chars // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChatAPI:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self._seen_outputs: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.create)]

    async def create(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        body = body_of(request)
        if not body.get("model"):
            raise BadRequest("you must provide a model parameter")
        messages = _check_messages(body.get("messages"))
        prompt_chars = _chars(messages)
        limit = fake.context_limit_chars
        if limit is not None and prompt_chars > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {prompt_chars} tokens. Please reduce the length of the messages.",
                "messages",
                "context_length_exceeded",
            )
        user_text = next(
            (text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), ""
        )
        reply = fake.pop_reply(user_text)
        if isinstance(reply, HTTPError):
            return http_error_response(reply)
        for message in messages:
            call_id = str(message.get("tool_call_id"))
            if message["role"] == "tool" and call_id not in self._seen_outputs:
                self._seen_outputs.add(call_id)
                fake.record_tool_output(call_id, text_of(message.get("content")))
        result: JSON = {}
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        emits = self._turn(body["model"], reply, usage, user_text, prompt_chars, result)
        if body.get("stream"):
            stream = SSEStream(request, fake.closing)
            try:
                await stream.open()
                outcome = await pump(stream, emits)
            except (ConnectionError, ClientGone):
                outcome = "gone"
            if outcome == "gone":
                await emits.aclose()
            return stream.response
        outcome = await drain(emits, SSEStream(request, fake.closing).pause)
        if outcome == "malformed":
            return web.Response(text='{"id": "chatcmpl-', content_type="application/json")
        if outcome in ("cut", "gone") and request.transport is not None:
            request.transport.close()
        return json_response(result.get("completion", {}))

    async def _turn(
        self,
        model: str,
        reply: Reply,
        include_usage: bool,
        user_text: str,
        prompt_chars: int,
        result: JSON,
    ) -> Emits:
        fake = self.fake
        base: JSON = {
            "id": "chatcmpl-" + new_id("", 29),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: JSON, finish: str | None = None) -> Event:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Event(None, {**base, "choices": [choice]})

        if isinstance(reply, Stall):
            yield Pause(reply.seconds)
            reply = reply.then or Text(f"Echo: {user_text}")
        message: JSON = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        if isinstance(reply, ToolCalls):
            delay = fake.delay_for(reply.delay)
            calls: list[JSON] = []
            for index, call in enumerate(reply.calls):
                call_id = call.call_id or new_id("call_")
                head = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                if index == 0:
                    yield chunk(
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [head],
                            "refusal": None,
                        }
                    )
                else:
                    yield chunk({"tool_calls": [head]})
                for piece in split_args(call.arguments):
                    if delay:
                        yield Pause(delay)
                    yield chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    )
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                )
            message["tool_calls"] = calls
            finish = "tool_calls"
            completion_chars = sum(len(c.arguments) for c in reply.calls)
        else:
            pieces, stop_at, delay = text_plan(reply, fake.delta_delay)
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            for i, piece in with_stop(pieces, stop_at):
                if i < 0:
                    if isinstance(reply, CutStream):
                        yield Cut(clean=reply.clean)
                    else:
                        yield RawData(truncated_json(chunk({"content": "x"}).data))
                    return
                if i and delay:
                    yield Pause(delay)
                yield chunk({"content": piece})
            message["content"] = "".join(pieces)
            finish = "stop"
            completion_chars = len(message["content"])
        yield chunk({}, finish)
        usage = _usage(prompt_chars, completion_chars)
        if include_usage:
            yield Event(None, {**base, "choices": [], "usage": usage})
        result["completion"] = {
            **{k: v for k, v in base.items() if k != "usage"},
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }
        yield Event(None, "[DONE]")
