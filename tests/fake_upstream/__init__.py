"""A faithful fake of the OpenAI HTTP API for tests, served by aiohttp on loopback.

Three APIs, speaking the real wire formats (JSON shapes, SSE framing, error bodies, status codes)
so the official `openai` SDK talks to it unchanged (`AsyncOpenAI(base_url=fake.base_url,
api_key="test-key")`):

- Responses + Conversations (`/v1/responses`, `/v1/conversations`): streamed events
  `event: response.*` with increasing `sequence_number`; input and output items are appended to
  the conversation when a response completes. Real rejections are reproduced:
  `conversation_locked` (a second response on a conversation while one is in flight),
  "No tool output found for function call ..." / "No tool call found for function call output
  ..." (unpaired function calls), more than 20 `items` in one request,
  `context_length_exceeded` (with `context_limit_chars`).
- Assistants v2 (`/v1/assistants`, `/v1/threads/...`, header `OpenAI-Beta: assistants=v2`):
  streamed runs `event: thread.*` ending with `event: done` / `data: [DONE]`; tool calls end the
  stream with `thread.run.requires_action`; `submit_tool_outputs` continues the same run. One
  active run per thread: adding a message or starting a run meanwhile is a 400.
  `FakeUpstream(message_metadata="on_create" | "dropped")` plays compatible servers that cannot
  modify a message's metadata, or keep none at all.
- Chat Completions (`/v1/chat/completions`): `data:` chunks then `data: [DONE]`.

Scripting: `fake.enqueue(Text(...), ToolCalls([Call(...)]), HTTPError(429), ...)`. Each model turn
(one Responses response, one Assistants run start or tool-output submission, one chat completion)
pops one reply, FIFO. When the queue is empty the model answers `Text(f"Echo: {text}")` where
`text` is the latest user text it sees: for Responses the last user-role message among the
conversation's items (or the previous response's context) plus this request's `input`; for
Assistants the last user message of the thread (including `additional_messages`); for Chat the
last `role: "user"` message. Multi-part contents are joined with newlines.

Observation: `fake.requests` (every HTTP request), `fake.model_requests()` (POSTs to model-turn
endpoints, including rejected ones and SDK retries), `fake.tool_outputs` (submitted
`{"call_id", "output"}` in submission order, all APIs; Chat dedupes by `tool_call_id` because the
history is resent), live state dicts (`conversations`, `threads`, `runs`, `responses`,
`assistants`) and `deleted_*` lists.

Client disconnects: a Responses stream closed early marks the response `cancelled` with
`client_disconnected: True` (background responses instead keep running to completion); an
Assistants run keeps its status (still active, so the thread stays locked) until `/cancel`, and
gets `client_disconnected: True`.

Subprocess mode: `python -m tests.fake_upstream --port N` prints `FAKE_UPSTREAM <base_url>`;
admin endpoints `GET /_fake/state`, `GET /_fake/requests`, `POST /_fake/enqueue` (JSON list of
replies, see `script.reply_from_json`).
"""

from .script import (
    Call,
    CutStream,
    HTTPError,
    Malformed,
    Reply,
    Stall,
    Text,
    ToolCalls,
    reply_from_json,
    split_words,
)
from .server import FakeUpstream, Recorded

__all__ = [
    "Call",
    "CutStream",
    "FakeUpstream",
    "HTTPError",
    "Malformed",
    "Recorded",
    "Reply",
    "Stall",
    "Text",
    "ToolCalls",
    "reply_from_json",
    "split_words",
]
