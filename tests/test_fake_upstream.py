"""The fake upstream, proven against the official `openai` SDK's own helpers and types."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from openai import AsyncAssistantEventHandler, AsyncOpenAI
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import Text as ThreadText
from openai.types.beta.threads import TextDelta
from openai.types.beta.threads.runs import ToolCall
from openai.types.responses import ResponseFunctionToolCall

from tests.fake_upstream import (
    Call,
    CutStream,
    FakeUpstream,
    HTTPError,
    Malformed,
    Stall,
    Text,
    ToolCalls,
    reply_from_json,
)

pytestmark = [
    pytest.mark.timeout(15),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.stop()


def make_client(fake: FakeUpstream, **kwargs: Any) -> AsyncOpenAI:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 5.0, **kwargs}
    return AsyncOpenAI(base_url=fake.base_url, api_key="test-key", **options)


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    sdk = make_client(fake)
    yield sdk
    await sdk.close()


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Collector(AsyncAssistantEventHandler):
    """An SDK event handler that records what a UI would consume."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.deltas: list[str] = []
        self.tool_calls: dict[str, ToolCall] = {}

    async def on_event(self, event: AssistantStreamEvent) -> None:
        self.events.append(event.event)

    async def on_text_delta(self, delta: TextDelta, snapshot: ThreadText) -> None:
        self.deltas.append(delta.value or "")

    async def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.tool_calls[tool_call.id] = tool_call


# -- Responses + Conversations ------------------------------------------------------------------


async def test_responses_stream_event_sequence(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    conv = await client.conversations.create(metadata={"room": "r1"})
    fake.enqueue(Text("Hello there, world", chunks=["Hel", "lo there", ", world"]))
    stream = await client.responses.create(
        model="gpt-4o",
        conversation=conv.id,
        input="[Ann] hi",
        instructions="Be brief",
        stream=True,
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert [d.delta for d in deltas] == ["Hel", "lo there", ", world"]
    assert all(d.logprobs == [] and d.item_id == deltas[0].item_id for d in deltas)
    added = events[2]
    assert added.type == "response.output_item.added"
    assert added.item.type == "message" and added.item.status == "in_progress"
    completed = events[-1]
    assert completed.type == "response.completed"
    response = completed.response
    assert response.status == "completed" and response.output_text == "Hello there, world"
    assert response.conversation is not None and response.conversation.id == conv.id
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.instructions == "Be brief"
    items = fake.conversations[conv.id]
    assert [(i["type"], i["role"]) for i in items] == [
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[0]["content"] == [{"type": "input_text", "text": "[Ann] hi"}]
    assert items[1]["id"] == added.item.id
    assert fake.responses[response.id]["status"] == "completed"
    assert (await client.responses.retrieve(response.id)).output_text == "Hello there, world"


async def test_responses_stream_helper_and_default_echo(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    conv = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "[Bob] what is up?"}]
    )
    fake.enqueue(Text("Scripted answer."))
    async with client.responses.stream(model="gpt-4o", conversation=conv.id, input=[]) as stream:
        snapshots = [e.snapshot async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert final.output_text == "Scripted answer."
    assert snapshots[-1] == "Scripted answer."
    # Queue empty: the model echoes the latest user text it sees (conversation + input).
    response = await client.responses.create(
        model="gpt-4o", conversation={"id": conv.id}, input="[Cy] and now?"
    )
    assert response.output_text == "Echo: [Cy] and now?"
    response = await client.responses.create(model="gpt-4o", conversation=conv.id)
    assert response.output_text == "Echo: [Cy] and now?"
    assert len(fake.conversations[conv.id]) == 5
    assert [r.json["conversation"] for r in fake.model_requests()][1] == {"id": conv.id}


async def test_conversation_items_pagination_and_delete(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    conv = await client.conversations.create(
        items=[{"type": "message", "role": "developer", "content": "rules"}]
    )
    said: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": f"m{i}"}], "type": "message"}
        for i in range(24)
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.conversations.items.create(conv.id, items=said)
    assert refused.value.param == "items" and "maximum length 20" in refused.value.message
    created = await client.conversations.items.create(conv.id, items=said[:20])
    assert created.object == "list" and len(created.data) == 20
    assert created.first_id == created.data[0].id and created.last_id == created.data[-1].id
    await client.conversations.items.create(conv.id, items=said[20:])
    asc = [item.id async for item in client.conversations.items.list(conv.id, limit=7, order="asc")]
    assert asc == [i["id"] for i in fake.conversations[conv.id]] and len(asc) == 25
    desc = [item.id async for item in client.conversations.items.list(conv.id, limit=10)]
    assert desc == asc[::-1]
    page = await client.conversations.items.list(conv.id, limit=3, order="asc")
    assert page.has_more and page.last_id == asc[2] and len(page.data) == 3
    item = await client.conversations.items.retrieve(str(asc[1]), conversation_id=conv.id)
    assert item.type == "message" and item.content[0].type == "input_text"
    assert (await client.conversations.retrieve(conv.id)).id == conv.id
    deleted = await client.conversations.delete(conv.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    assert fake.deleted_conversations == [conv.id] and conv.id not in fake.conversations
    with pytest.raises(openai.NotFoundError) as info:
        await client.conversations.retrieve(conv.id)
    assert info.value.body == {
        "message": f"Conversation with id '{conv.id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


async def test_responses_function_call_round_trip(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    conv = await client.conversations.create()
    await client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "[Ann] weather?"}]
    )
    fake.enqueue(
        ToolCalls([Call("get_weather", '{"city": "Paris"}'), Call("get_weather", "{not json")]),
        Text("It is sunny."),
    )
    async with client.responses.stream(
        model="gpt-4o", conversation=conv.id, input=[], tools=TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds.count("response.output_item.added") == 2
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.index("response.function_call_arguments.delta") > kinds.index(
        "response.output_item.added"
    )
    calls = [o for o in final.output if isinstance(o, ResponseFunctionToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", "{not json"),
    ]
    assert all(c.call_id.startswith("call_") and c.status == "completed" for c in calls)
    # A turn without the outputs is rejected like the real API does.
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt-4o", conversation=conv.id, input="hello?")
    assert info.value.body == {
        "message": f"No tool output found for function call {calls[0].call_id}.",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    outputs: list[Any] = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"out{n}"}
        for n, c in enumerate(calls)
    ]
    stream2 = await client.responses.create(
        model="gpt-4o", conversation=conv.id, input=outputs, tools=TOOLS, stream=True
    )
    done = [e async for e in stream2 if e.type == "response.completed"]
    assert done[0].response.output_text == "It is sunny."
    assert fake.tool_outputs == [
        {"call_id": calls[0].call_id, "output": "out0"},
        {"call_id": calls[1].call_id, "output": "out1"},
    ]
    assert [i["type"] for i in fake.conversations[conv.id]] == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]
    assert [r.json.get("input") for r in fake.model_requests()] == [[], "hello?", outputs]


async def test_responses_conversation_locked_and_disconnect(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    conv = await client.conversations.create()
    fake.enqueue(Text("one two three four five six seven eight", delay=0.05))
    stream = await client.responses.create(
        model="gpt-4o", conversation=conv.id, input="[Ann] long please", stream=True
    )
    response_id = ""
    async for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt-4o", conversation=conv.id, input="[Bob] me too")
    assert info.value.code == "conversation_locked"
    assert info.value.param == "conversation"
    await stream.close()
    await eventually(lambda: fake.responses[response_id]["status"] == "cancelled")
    assert fake.responses[response_id]["client_disconnected"] is True
    assert fake.conversations[conv.id] == []  # an unfinished response adds nothing
    after = await client.responses.create(model="gpt-4o", conversation=conv.id, input="[Bob] hi")
    assert after.output_text == "Echo: [Bob] hi"


async def test_responses_background_and_cancel(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    fake.enqueue(Text("a b c", delay=0.01), Text("x " * 50, delay=0.05))
    queued = await client.responses.create(model="gpt-4o", input="hi", background=True)
    assert queued.status == "queued" and queued.background
    await eventually(lambda: fake.responses[queued.id]["status"] == "completed")
    assert (await client.responses.retrieve(queued.id)).output_text == "a b c"
    slow = await client.responses.create(model="gpt-4o", input="hi", background=True)
    cancelled = await client.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(queued.id)


async def test_responses_previous_response_id_store_and_pairing(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    first = await client.responses.create(model="gpt-4o", input="first")
    second = await client.responses.create(model="gpt-4o", previous_response_id=first.id, input=[])
    assert second.output_text == "Echo: first" and second.previous_response_id == first.id
    hidden = await client.responses.create(model="gpt-4o", input="secret", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(hidden.id)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(
            model="gpt-4o",
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
        )
    assert info.value.message.endswith(
        "No tool call found for function call output with call_id call_nope."
    )
    assert fake.tool_outputs == []


def test_reply_scripts() -> None:
    assert Text("Hi there,  you").chunks == ["Hi ", "there,  ", "you"]
    with pytest.raises(ValueError):
        Text("abc", chunks=["a", "b"])
    scripts: list[dict[str, Any]] = [
        {"type": "text", "text": "hi", "delay": 0.5},
        {"type": "tool_calls", "calls": [{"name": "f", "arguments": "{", "call_id": "c1"}]},
        {"type": "http_error", "status": 429, "retry_after": 1},
        {"type": "cut_stream", "after_chunks": 2, "text": "a b c"},
        {"type": "stall", "seconds": 1, "then": {"type": "text", "text": "late"}},
        {"type": "malformed", "after_chunks": 1},
    ]
    replies = [reply_from_json(item) for item in scripts]
    assert replies == [
        Text("hi", delay=0.5),
        ToolCalls([Call("f", "{", "c1")]),
        HTTPError(429, retry_after=1),
        CutStream(2, "a b c"),
        Stall(1, then=Text("late")),
        Malformed(1),
    ]


# -- Assistants v2 ------------------------------------------------------------------------------


async def test_assistants_run_stream_text(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o", instructions="Be nice")
    thread = await client.beta.threads.create()
    await client.beta.threads.messages.create(thread.id, role="user", content="[Ann] hello")
    fake.enqueue(Text("Hi Ann, welcome!", chunks=["Hi Ann", ", ", "welcome!"]))
    handler = Collector()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        additional_instructions="Room: r1",
        event_handler=handler,
    ) as stream:
        await stream.until_done()
    assert handler.events == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    assert handler.deltas == ["Hi Ann", ", ", "welcome!"]
    run = await handler.get_final_run()
    assert run.status == "completed" and run.instructions == "Be nice\n\nRoom: r1"
    messages = await handler.get_final_messages()
    assert messages[0].content[0].type == "text"
    assert messages[0].content[0].text.value == "Hi Ann, welcome!"
    stored = fake.threads[thread.id]
    assert [(m["role"], m["metadata"]) for m in stored] == [("user", {}), ("assistant", {})]
    assert fake.runs[run.id]["status"] == "completed" and fake.active_runs() == []
    listed = await client.beta.threads.messages.list(thread.id)
    assert [m.role for m in listed.data] == ["assistant", "user"]  # default order: desc


async def test_assistants_parallel_calls_then_second_step(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "plan it"}])
    fake.enqueue(
        ToolCalls([Call("lookup", '{"q": "a long query string"}', "call_a"), Call("time", "{}")]),
        ToolCalls([Call("lookup", '{"q": "more"}')]),
        Text("All done."),
    )
    first = Collector()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=first
    ) as stream:
        await stream.until_done()
    run = await first.get_final_run()
    assert run.status == "requires_action" and run.required_action is not None
    required = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.id == "call_a", c.function.name, c.function.arguments) for c in required] == [
        (True, "lookup", '{"q": "a long query string"}'),
        (False, "time", "{}"),
    ]
    assert first.events[-1] == "thread.run.requires_action"
    assert "thread.run.step.delta" in first.events
    assert {c.id for c in first.tool_calls.values()} == {c.id for c in required}
    assert fake.active_runs() == [run.id]
    second = Collector()
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        event_handler=second,
        tool_outputs=[{"tool_call_id": c.id, "output": f"r-{c.function.name}"} for c in required],
    ) as stream:
        await stream.until_done()
    run2 = await second.get_final_run()
    assert run2.id == run.id and run2.status == "requires_action"
    assert second.events[:3] == [
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.completed",
    ]
    (call,) = run2.required_action.submit_tool_outputs.tool_calls if run2.required_action else []
    third = Collector()
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        event_handler=third,
        tool_outputs=[{"tool_call_id": call.id, "output": "r3"}],
    ) as stream:
        await stream.until_done()
    assert "".join(third.deltas) == "All done."
    assert (await third.get_final_run()).status == "completed"
    assert [o["output"] for o in fake.tool_outputs] == ["r-lookup", "r-time", "r3"]
    steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "tool_calls", "message_creation"]
    first_step = steps.data[0].step_details
    assert first_step.type == "tool_calls"
    assert [tc.function.output for tc in first_step.tool_calls if tc.type == "function"] == [
        "r-lookup",
        "r-time",
    ]
    assert len(fake.model_requests()) == 3


async def test_assistants_message_metadata_as_compatible_servers_keep_it() -> None:
    """`message_metadata` plays servers that cannot modify a message's metadata (no such
    endpoint: 404) or keep none at all."""
    for mode, kept_on_create in (("on_create", {"id": "m1"}), ("dropped", {})):
        async with FakeUpstream(message_metadata=mode) as fake:
            client = make_client(fake)
            thread = await client.beta.threads.create()
            made = await client.beta.threads.messages.create(
                thread.id, role="user", content="[Ann] hi", metadata={"id": "m1"}
            )
            assert made.metadata == kept_on_create
            if mode == "on_create":
                with pytest.raises(openai.NotFoundError):
                    await client.beta.threads.messages.update(
                        made.id, thread_id=thread.id, metadata={"id": "m2"}
                    )
            else:
                updated = await client.beta.threads.messages.update(
                    made.id, thread_id=thread.id, metadata={"id": "m2"}
                )
                assert updated.metadata == {}
            listed = [m.metadata async for m in client.beta.threads.messages.list(thread.id)]
            assert listed == [kept_on_create]
            await client.close()


async def test_assistants_active_run_conflict_and_cancel(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o")
    thread = await client.beta.threads.create()
    await client.beta.threads.messages.create(thread.id, role="user", content="go")
    fake.enqueue(ToolCalls([Call("slow_tool", "{}")]))
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        await stream.until_done()
    run = await stream.get_final_run()
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.messages.create(thread.id, role="user", content="[Bob] hey")
    assert info.value.body == {
        "message": f"Can't add messages to {thread.id} while a run {run.id} is active.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert info.value.message.endswith(f"Thread {thread.id} already has an active run {run.id}.")
    cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    assert (await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == (
        "cancelled"
    )
    assert fake.active_runs() == []
    await client.beta.threads.messages.create(thread.id, role="user", content="[Bob] hey")
    polled = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    assert polled.status == "completed"
    assert fake.threads[thread.id][-1]["content"][0]["text"]["value"] == "Echo: [Bob] hey"


async def test_assistants_disconnect_leaves_run_active(
    fake: FakeUpstream, client: AsyncOpenAI
) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "talk"}])
    fake.enqueue(Text("w " * 40, delay=0.05))
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        async for event in stream:
            if event.event == "thread.message.delta":
                break
    (run_id,) = fake.runs
    await eventually(lambda: fake.runs[run_id].get("client_disconnected") is True)
    assert fake.active_runs() == [run_id] and fake.runs[run_id]["status"] == "in_progress"
    await client.beta.threads.runs.cancel(run_id, thread_id=thread.id)
    assert fake.runs[run_id]["status"] == "cancelled"
    assert fake.threads[thread.id][-1]["status"] == "incomplete"


async def test_assistants_crud(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o", name="Roundtable")
    assert (await client.beta.assistants.retrieve(assistant.id)).name == "Roundtable"
    thread = await client.beta.threads.create(metadata={"room": "r"})
    ids = []
    for i in range(5):
        message = await client.beta.threads.messages.create(
            thread.id, role="user", content=f"m{i}", metadata={"n": str(i)}
        )
        ids.append(message.id)
    page = await client.beta.threads.messages.list(thread.id, limit=2, order="asc")
    assert [m.id for m in page.data] == ids[:2] and page.has_more
    every = [m.id async for m in client.beta.threads.messages.list(thread.id, limit=2)]
    assert every == ids[::-1]
    before = await client.beta.threads.messages.list(thread.id, order="asc", before=ids[3])
    assert [m.id for m in before.data] == ids[:3]
    updated = await client.beta.threads.messages.update(
        ids[0], thread_id=thread.id, metadata={"seen": "yes"}
    )
    assert updated.metadata == {"seen": "yes"} and fake.threads[thread.id][0]["metadata"] == {
        "seen": "yes"
    }
    assert (await client.beta.threads.delete(thread.id)).deleted
    assert fake.deleted_threads == [thread.id] and thread.id not in fake.threads
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.list(thread.id)
    deleted = await client.beta.assistants.delete(assistant.id)
    assert deleted.deleted and fake.deleted_assistants == [assistant.id]
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.threads.create(extra_headers={"OpenAI-Beta": "assistants=v1"})
    assert info.value.code == "invalid_beta"


# -- Chat Completions ---------------------------------------------------------------------------


async def test_chat_stream_tool_calls_then_text(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    fake.enqueue(
        ToolCalls([Call("get_weather", '{"city": "Lisbon, Portugal"}'), Call("noop", "")]),
        Text("Sunny in Lisbon."),
    )
    messages: list[Any] = [{"role": "user", "content": "[Ann] weather in Lisbon?"}]
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage_seen = False
    first_delta_role = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage_seen = True
        for choice in chunk.choices:
            first_delta_role = first_delta_role or choice.delta.role
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += tc.id or ""
                if tc.function is not None:
                    entry["name"] += tc.function.name or ""
                    entry["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls" and usage_seen and first_delta_role == "assistant"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        ("get_weather", '{"city": "Lisbon, Portugal"}'),
        ("noop", ""),
    ]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls.values()
            ],
        }
    )
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls.values()]
    stream = await client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    text = ""
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "Sunny in Lisbon." and finish == "stop"
    assert [o["call_id"] for o in fake.tool_outputs] == [c["id"] for c in calls.values()]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=messages[:2])
    assert "did not have response messages" in info.value.message


async def test_chat_stream_helper_and_non_streamed(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    fake.enqueue(ToolCalls([Call("f", "{broken")]), Text("plain answer"))
    async with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], tools=tools
    ) as stream:
        kinds = [event.type async for event in stream]
        completion = await stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == "{broken"
    async with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "y"}]
    ) as stream:
        assert (await stream.get_final_completion()).choices[0].message.content == "plain answer"
    result = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": [{"type": "text", "text": "z"}]}]
    )
    assert result.choices[0].message.content == "Echo: z" and result.usage is not None
    assert (await client.models.list()).data[0].object == "model"


async def test_chat_context_limit() -> None:
    async with FakeUpstream(context_limit_chars=20) as fake:
        client = make_client(fake)
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x" * 21}]
            )
        assert info.value.code == "context_length_exceeded"
        assert info.value.param == "messages"
        ok = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "short"}]
        )
        assert ok.choices[0].message.content == "Echo: short"
        await client.close()


# -- Faults -------------------------------------------------------------------------------------


async def test_http_error_faults(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    fake.enqueue(HTTPError(429, retry_after=0.05))
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="gpt-4o", input="hi", stream=True)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after-ms"] == "50"
    fake.enqueue(HTTPError(503), HTTPError(429, retry_after=0.01), Text("third time lucky"))
    retrying = make_client(fake, max_retries=2)
    start = time.monotonic()
    result = await retrying.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    await retrying.close()
    assert result.choices[0].message.content == "third time lucky"
    assert len(fake.model_requests()) == 4 and time.monotonic() - start < 3
    fake.enqueue(HTTPError(500, message="boom", code="server_error"))
    with pytest.raises(openai.InternalServerError) as err:
        async with client.beta.threads.runs.stream(
            thread_id=(await client.beta.threads.create()).id,
            assistant_id=(await client.beta.assistants.create(model="gpt-4o")).id,
        ):
            pass
    assert err.value.body == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
    assert fake.runs == {}  # the request was refused before a run existed


async def test_auth_and_bad_requests() -> None:
    async with FakeUpstream(require_key="sk-right-key") as fake:
        wrong = make_client(fake)
        with pytest.raises(openai.AuthenticationError) as info:
            await wrong.models.list()
        assert info.value.code == "invalid_api_key"
        await wrong.close()
        right = AsyncOpenAI(base_url=fake.base_url, api_key="sk-right-key", max_retries=0)
        assert (await right.responses.create(model="gpt-4o", input="a")).output_text == "Echo: a"
        with pytest.raises(openai.NotFoundError):
            await right.responses.retrieve("resp_missing")
        await right.close()
        headers = {"Authorization": "Bearer sk-right-key", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{fake.base_url}/chat/completions", data=b"{nope") as bad:
                assert bad.status == 400
                body = await bad.json()
            assert set(body["error"]) == {"message", "type", "param", "code"}
            async with http.get(f"{fake.base_url}/nowhere") as missing:
                assert missing.status == 404
                assert (await missing.json())["error"]["message"] == "Invalid URL (GET /v1/nowhere)"


async def test_cut_stream_faults(fake: FakeUpstream, client: AsyncOpenAI) -> None:
    fake.enqueue(CutStream(2, "one two three four"))
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async with client.responses.stream(model="gpt-4o", input="x") as stream:
            async for event in stream:
                seen.append(event.type)
    assert seen.count("response.output_text.delta") == 2 and "response.completed" not in seen
    fake.enqueue(CutStream(1, "one two", clean=True))
    async with client.responses.stream(model="gpt-4o", input="x") as stream:
        async for _event in stream:
            pass
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    fake.enqueue(CutStream(1, "alpha beta"))
    handler = Collector()
    # The SDK's Assistants helper re-raises the raw transport error (legacy behaviour).
    with pytest.raises(httpx2.RemoteProtocolError):
        async with client.beta.threads.runs.stream(
            thread_id=(await client.beta.threads.create()).id,
            assistant_id=(await client.beta.assistants.create(model="gpt-4o")).id,
            event_handler=handler,
        ) as run_stream:
            await run_stream.until_done()
    assert handler.deltas == ["alpha "] and len(fake.active_runs()) == 1
    fake.enqueue(CutStream(0, "gone"))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])


async def test_stall_and_malformed_faults(fake: FakeUpstream) -> None:
    impatient = make_client(fake, timeout=0.3)
    fake.enqueue(Stall(5.0))
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        stream = await impatient.responses.create(model="gpt-4o", input="x", stream=True)
        async for event in stream:
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress"]
    assert time.monotonic() - started < 2
    fake.enqueue(Stall(5.0))
    with pytest.raises(openai.APITimeoutError):
        chunks = await impatient.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )
        async for _chunk in chunks:
            pass
    fake.enqueue(Stall(0.1, then=Text("late but fine")))
    slow_ok = await impatient.responses.create(model="gpt-4o", input="x")
    assert slow_ok.output_text == "late but fine"
    fake.enqueue(Malformed(after_chunks=1))
    deltas = 0
    with pytest.raises(json.JSONDecodeError):
        stream = await impatient.responses.create(model="gpt-4o", input="x", stream=True)
        async for event in stream:
            deltas += event.type == "response.output_text.delta"
    assert deltas == 1
    fake.enqueue(Malformed(after_chunks=2))
    handler = Collector()
    with pytest.raises(json.JSONDecodeError):
        async with impatient.beta.threads.runs.stream(
            thread_id=(await impatient.beta.threads.create()).id,
            assistant_id=(await impatient.beta.assistants.create(model="gpt-4o")).id,
            event_handler=handler,
        ) as run_stream:
            await run_stream.until_done()
    assert len(handler.deltas) == 2
    fake.enqueue(Malformed())
    with pytest.raises(json.JSONDecodeError):
        chunks = await impatient.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )
        async for _chunk in chunks:
            pass
    await impatient.close()


async def test_wire_framing(fake: FakeUpstream) -> None:
    """The raw bytes: `event:` lines for Responses/Assistants, bare `data:` + [DONE] for Chat."""
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "input": "hi", "stream": True}
        async with http.post(f"{fake.base_url}/responses", json=body) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
        assert raw.startswith("event: response.created\ndata: {")
        assert raw.endswith("\n\n") and "[DONE]" not in raw
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
            raw = (await resp.read()).decode()
        assert raw.startswith("data: {") and raw.endswith("data: [DONE]\n\n")
        assert "event:" not in raw
        beta = {"OpenAI-Beta": "assistants=v2"}
        async with http.post(f"{fake.base_url}/assistants", json={"model": "m"}, headers=beta) as r:
            assistant_id = (await r.json())["id"]
        async with http.post(f"{fake.base_url}/threads", json={}, headers=beta) as r:
            thread_id = (await r.json())["id"]
        body = {"assistant_id": assistant_id, "stream": True}
        url = f"{fake.base_url}/threads/{thread_id}/runs"
        async with http.post(url, json=body, headers=beta) as resp:
            raw = (await resp.read()).decode()
        assert raw.startswith("event: thread.run.created\ndata: {")
        assert "\n\nevent: thread.run.completed\ndata: {" in raw
        assert raw.endswith("}\n\nevent: done\ndata: [DONE]\n\n")


# -- Subprocess mode ----------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_subprocess_mode() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_upstream",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        prefix, base_url = line.split(" ", 1)
        assert prefix == "FAKE_UPSTREAM" and base_url.endswith("/v1")
        admin = base_url.removesuffix("/v1") + "/_fake"
        async with aiohttp.ClientSession() as http:
            script = [
                {"type": "text", "text": "from the script"},
                {"type": "tool_calls", "calls": [{"name": "x", "arguments": "{}"}]},
            ]
            async with http.post(f"{admin}/enqueue", json=script) as resp:
                assert resp.status == 200 and (await resp.json())["pending"] == 2
            client = AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
            conv = await client.conversations.create()
            answer = await client.responses.create(model="m", conversation=conv.id, input="q")
            assert answer.output_text == "from the script"
            await client.close()
            async with http.get(f"{admin}/state") as resp:
                state = await resp.json()
        assert set(state) >= {
            "conversations",
            "deleted_conversations",
            "threads",
            "deleted_threads",
            "active_runs",
            "assistants",
            "deleted_assistants",
        }
        assert [i["role"] for i in state["conversations"][conv.id]] == ["user", "assistant"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
