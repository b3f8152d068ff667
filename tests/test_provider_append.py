"""`append` (messages that enter the thread without a run) and the thread state store: each
provider with the real `openai` SDK over HTTP to the fake upstream, no room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from server.messages import Message
from server.providers import create_provider
from server.providers.assistants import AssistantsProvider
from server.providers.base import Provider, RunRequest
from server.providers.chat import ChatProvider
from server.providers.store import InMemoryThreadStore
from tests.fake_upstream import Call, FakeUpstream, Text, ToolCalls
from tests.test_providers import answer, settings_for, user

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

APIS = ["responses", "assistants", "chat"]


@pytest.fixture
async def opened(
    upstream: FakeUpstream, request: pytest.FixtureRequest
) -> AsyncIterator[Provider]:
    provider = create_provider(request.param, settings_for(upstream))
    await provider.open()
    yield provider
    await provider.close()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [p["text"]["value"] if isinstance(p["text"], dict) else p["text"] for p in content]
    return "".join(parts)


def upstream_texts(upstream: FakeUpstream, thread: str) -> list[str]:
    """The thread's messages as the upstream holds them (Responses, Assistants), or as the last
    completion request sent them (Chat: the thread lives with us, the model sees the request)."""
    if thread in upstream.conversations:
        items = upstream.conversations[thread]
        return [_text(i["content"]) for i in items if i["type"] == "message"]
    if thread in upstream.threads:
        return [_text(m["content"]) for m in upstream.threads[thread]]
    sent = upstream.model_requests()[-1].json["messages"]
    return [m["content"] for m in sent if m["role"] != "system"]


def said(*lines: str) -> list[Message]:
    """Messages from "Name: text" lines, numbered so their ids differ."""
    return [user(line.split(": ")[0], line.split(": ", 1)[1], n)
            for n, line in enumerate(lines, start=10)]


@pytest.mark.parametrize("opened", APIS, indirect=True)
async def test_appended_messages_enter_the_thread_in_order_and_the_next_run_reads_them(
    opened: Provider, upstream: FakeUpstream
):
    thread = await opened.create_thread()
    await opened.append(thread, said("Ann: tea or coffee?", "Bob: coffee"))
    await opened.append(thread, said("Cy: tea"))
    assert upstream.model_requests() == []  # no run
    question = user("Dee", "what did they choose?")
    assert await answer(opened, thread, RunRequest(question, "x")) == (
        "Echo: [Dee] what did they choose?")
    assert upstream_texts(upstream, thread)[:4] == [
        "[Ann] tea or coffee?", "[Bob] coffee", "[Cy] tea", "[Dee] what did they choose?"]


@pytest.mark.parametrize("opened", ["assistants"], indirect=True)
async def test_assistants_appended_messages_carry_our_ids_and_names(
    opened: Provider, upstream: FakeUpstream
):
    assert isinstance(opened, AssistantsProvider)
    thread = await opened.create_thread()
    messages = said("Ann: hello", "Bob: hi Ann")
    await opened.append(thread, messages)
    stored = upstream.threads[thread]
    assert [(m["role"], m["metadata"]["id"], m["metadata"]["name"]) for m in stored] == [
        ("user", messages[0].id, "Ann"), ("user", messages[1].id, "Bob")]
    history = await opened.history(thread)
    assert [(m.id, m.name, m.content) for m in history] == [
        (messages[0].id, "Ann", "hello"), (messages[1].id, "Bob", "hi Ann")]


@pytest.mark.parametrize("opened", APIS, indirect=True)
async def test_append_during_an_answer_enters_the_thread_after_it(
    opened: Provider, upstream: FakeUpstream
):
    """Said while the assistant answers: no refusal (an Assistants thread with an active run
    refuses new messages), and the thread reads question, answer, then what was said."""
    thread = await opened.create_thread()
    words = [f"w{i} " for i in range(10)]
    upstream.enqueue(Text("".join(words), chunks=words, delay=0.03))
    events = opened.run(thread, RunRequest(user("Ann", "a story please"), "x"))
    first = await anext(events)
    appending = asyncio.create_task(opened.append(thread, said("Bob: nice one")))
    await asyncio.sleep(0.1)
    assert not appending.done()  # waits for the answer
    rest = [event.text async for event in events]
    await appending
    assert first.text + "".join(rest) == "".join(words)
    assert upstream.active_runs() == []
    if isinstance(opened, ChatProvider):  # the next request carries the thread
        await answer(opened, thread, RunRequest(user("Cy", "and?", 1), "x"))
    assert upstream_texts(upstream, thread)[:3] == [
        "[Ann] a story please", "".join(words), "[Bob] nice one"]


async def test_assistants_append_waits_for_a_run_it_did_not_start(upstream: FakeUpstream):
    """A run started elsewhere (another process) holds the thread: the API refuses the message
    (HTTP 400) until that run ends; append retries instead of failing."""
    provider = AssistantsProvider(settings_for(upstream))
    await provider.open()
    thread = await provider.create_thread()
    other = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="test-key", max_retries=0)
    upstream.enqueue(ToolCalls([Call("slow_tool", "{}")]))  # the run waits for tool outputs
    async with other.beta.threads.runs.stream(
        thread_id=thread, assistant_id=next(iter(upstream.assistants))
    ) as stream:
        await stream.until_done()
    run = await stream.get_final_run()
    appending = asyncio.create_task(provider.append(thread, said("Ann: anyone?")))
    await asyncio.sleep(0.4)
    assert not appending.done()
    await other.beta.threads.runs.cancel(run.id, thread_id=thread)
    await appending
    refused = [r for r in upstream.requests if r.method == "POST"
               and r.path.endswith(f"/threads/{thread}/messages")]
    assert len(refused) >= 2  # refused while the run was active, then added
    assert upstream_texts(upstream, thread) == ["[Ann] anyone?"]
    await other.close()
    await provider.close()


@pytest.mark.parametrize("opened", ["responses"], indirect=True)
async def test_responses_append_sends_at_most_twenty_items_a_request(
    opened: Provider, upstream: FakeUpstream
):
    thread = await opened.create_thread()
    many = [user("Ann", f"line {i}", i) for i in range(25)]
    await opened.append(thread, many)
    posts = [r for r in upstream.requests if r.method == "POST" and r.path.endswith("/items")]
    assert [len(r.json["items"]) for r in posts] == [20, 5]
    assert upstream_texts(upstream, thread) == [f"[Ann] line {i}" for i in range(25)]


async def test_in_memory_store_keeps_json_values_and_lists_per_thread():
    store = InMemoryThreadStore()
    assert await store.get("t1", "messages") is None
    await store.set("t1", "messages", [])
    await store.append("t1", "messages", [{"role": "user", "content": "a"}])
    await store.append("t1", "messages", [{"role": "user", "content": "b"}, {"n": 1}])
    await store.set("t1", "active_run", "run_1")
    await store.set("t2", "active_run", "run_2")
    got = await store.get("t1", "messages")
    assert got == [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"n": 1}]
    got.append("not stored")  # a copy
    assert len(await store.get("t1", "messages")) == 3
    with pytest.raises(TypeError):
        await store.append("t1", "active_run", ["x"])  # holds a value, not a list
    with pytest.raises(TypeError):
        await store.set("t1", "bad", object())  # not JSON: a Redis store could not hold it
    await store.delete("t1", "active_run")
    assert await store.get("t1", "active_run") is None
    await store.delete("t1")
    assert await store.get("t1", "messages") is None and store.thread_ids() == ["t2"]
    await store.delete("t2", "active_run")
    assert store.thread_ids() == []


async def test_chat_keeps_its_threads_in_the_given_store(upstream: FakeUpstream):
    store = InMemoryThreadStore()
    provider = ChatProvider(settings_for(upstream), store)
    thread = await provider.create_thread()
    await provider.append(thread, said("Ann: hi"))
    await answer(provider, thread, RunRequest(user("Bob", "hello?"), "x"))
    assert await store.get(thread, "messages") == [
        {"role": "user", "content": "[Ann] hi"}, {"role": "user", "content": "[Bob] hello?"},
        {"role": "assistant", "content": "Echo: [Bob] hello?"}]
    other = ChatProvider(settings_for(upstream), store)  # another process, the same store
    await answer(other, thread, RunRequest(user("Cy", "and me?", 1), "x"))
    assert len(upstream.model_requests()[-1].json["messages"]) == 1 + 4
    await provider.delete_thread(thread)
    assert store.thread_ids() == []
    await provider.close()
    await other.close()


async def test_assistants_keeps_the_active_run_in_the_given_store(upstream: FakeUpstream):
    store = InMemoryThreadStore()
    provider = AssistantsProvider(settings_for(upstream), store)
    await provider.open()
    thread = await provider.create_thread()
    words = [f"w{i} " for i in range(6)]
    upstream.enqueue(Text("".join(words), chunks=words, delay=0.02))
    events = provider.run(thread, RunRequest(user("Ann", "go"), "x"))
    await anext(events)
    assert await store.get(thread, "active_run") == upstream.active_runs()[0]
    await events.aclose()  # stopped: the run is cancelled and forgotten
    assert upstream.active_runs() == [] and await store.get(thread, "active_run") is None
    await provider.delete_thread(thread)
    assert store.thread_ids() == []
    await provider.close()
