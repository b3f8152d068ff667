"""Each provider on its own: the real `openai` SDK over HTTP to the fake upstream, no room."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from server.messages import Message, now_ms
from server.providers import OpenAISettings, create_provider
from server.providers import assistants as assistants_module
from server.providers.assistants import AssistantsProvider
from server.providers.base import Provider, RunRequest, ToolCall, ToolResult, ToolSpec
from server.providers.chat import ChatProvider, trim
from server.providers.errors import ProviderError, ProviderProtocolError
from tests.fake_upstream import Call, CutStream, FakeUpstream, Text, ToolCalls

pytestmark = pytest.mark.timeout(30)


def settings_for(upstream: FakeUpstream, **extra: object) -> OpenAISettings:
    base = {"api_key": "test-key", "base_url": upstream.base_url, "model": "fake-model",
            "assistant_name": "Helper", "instructions": "Be brief.", "max_retries": 0}
    return OpenAISettings(**{**base, **extra})  # type: ignore[arg-type]


def user(name: str, content: str, n: int = 0) -> Message:
    return Message(f"m{n}_{name}", f"u_{name}", name, "user", content, now_ms())


async def answer(provider: Provider, thread: str, request: RunRequest) -> str:
    return "".join([event.text async for event in provider.run(thread, request)])


@pytest.fixture
async def opened(
    upstream: FakeUpstream, request: pytest.FixtureRequest
) -> AsyncIterator[Provider]:
    provider = create_provider(request.param, settings_for(upstream))
    await provider.open()
    yield provider
    await provider.close()


WEATHER = ToolSpec("weather", "Weather for a city.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@pytest.mark.parametrize("opened", ["responses", "assistants", "chat"], indirect=True)
async def test_tool_calls_parallel_and_chained(opened: Provider, upstream: FakeUpstream):
    seen: list[list[str]] = []

    async def call_tools(calls: Sequence[ToolCall]) -> list[ToolResult]:
        seen.append([f"{c.name}:{c.arguments}" for c in calls])
        return [ToolResult(c.call_id, f'{{"temp": {len(seen)}}}') for c in calls]

    upstream.enqueue(
        ToolCalls([Call("weather", '{"city": "Oslo"}'), Call("weather", '{"city": "Rome"}')]),
        ToolCalls([Call("weather", '{"city": "Lima"}')]),
        Text("Oslo and Rome are cold, Lima is warm."),
    )
    thread = await opened.create_thread()
    request = RunRequest(user("Ann", "weather?"), "Be brief.", [WEATHER], call_tools)
    assert await answer(opened, thread, request) == "Oslo and Rome are cold, Lima is warm."
    assert seen == [['weather:{"city": "Oslo"}', 'weather:{"city": "Rome"}'],
                    ['weather:{"city": "Lima"}']]
    assert [o["output"] for o in upstream.tool_outputs] == ['{"temp": 1}'] * 2 + ['{"temp": 2}']
    await opened.delete_thread(thread)


@pytest.mark.parametrize("opened", ["responses", "assistants", "chat"], indirect=True)
async def test_cut_stream_is_an_error_and_the_thread_stays_usable(
    opened: Provider, upstream: FakeUpstream
):
    thread = await opened.create_thread()
    upstream.enqueue(CutStream(after_chunks=2, text="one two three four"))
    got: list[str] = []
    with pytest.raises(ProviderProtocolError):
        async for event in opened.run(thread, RunRequest(user("Ann", "hi"), "x")):
            got.append(event.text)
    assert "".join(got) == "one two "
    assert upstream.active_runs() == []
    assert await answer(opened, thread, RunRequest(user("Ann", "again", 1), "x")) == (
        "Echo: [Ann] again")


@pytest.mark.parametrize("opened", ["assistants"], indirect=True)
async def test_assistants_history_reads_every_page_oldest_first(
    opened: Provider, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(assistants_module, "HISTORY_PAGE", 2)
    assert isinstance(opened, AssistantsProvider)
    thread = await opened.create_thread()
    sent = [user(name, f"question {i}", i) for i, name in enumerate(["Ann", "Bob", "Cy"])]
    for i, message in enumerate(sent):
        request = RunRequest(message, "x", answer_id=f"a{i}",
                             answer_created_at=message.created_at + 5)
        await answer(opened, thread, request)
    history = await opened.history(thread)
    assert [(m.id, m.name, m.role, m.content) for m in history] == [
        ("m0_Ann", "Ann", "user", "question 0"), ("a0", "Helper", "assistant",
                                                  "Echo: [Ann] question 0"),
        ("m1_Bob", "Bob", "user", "question 1"), ("a1", "Helper", "assistant",
                                                  "Echo: [Bob] question 1"),
        ("m2_Cy", "Cy", "user", "question 2"), ("a2", "Helper", "assistant",
                                                "Echo: [Cy] question 2"),
    ]
    pages = [r for r in upstream.requests if r.method == "GET" and r.path.endswith("/messages")]
    assert len(pages) == 3
    assert history[0].created_at == sent[0].created_at
    assert history[1].created_at == sent[0].created_at + 5  # the label's time


@pytest.mark.parametrize("metadata", ["on_create", "dropped"])
async def test_assistants_history_without_labels_is_in_thread_order(metadata: str):
    """A compatible server that cannot label answers (no "modify message") or keeps no
    metadata: history still comes back in thread order, `created_at` never going back, though
    our clock (milliseconds, in user metadata) runs 2 s ahead of the thread's (whole seconds)."""
    upstream = FakeUpstream(message_metadata=metadata)
    await upstream.start()
    provider = AssistantsProvider(settings_for(upstream))
    await provider.open()
    thread = await provider.create_thread()
    for i, name in enumerate(["Ann", "Bob"]):
        message = replace(user(name, f"question {i}", i), created_at=now_ms() + 2000)
        request = RunRequest(message, "x", answer_id=f"a{i}", answer_created_at=now_ms() + 2000)
        await answer(provider, thread, request)
    history = await provider.history(thread)
    assert [(m.role, m.name, m.content) for m in history] == [
        ("user", "Ann", "question 0"), ("assistant", "Helper", "Echo: [Ann] question 0"),
        ("user", "Bob", "question 1"), ("assistant", "Helper", "Echo: [Bob] question 1")]
    times = [m.created_at for m in history]
    assert times == sorted(times)
    assert len({m.id for m in history}) == 4
    await provider.close()
    await upstream.stop()


async def test_assistants_uses_the_named_assistant(upstream: FakeUpstream):
    maker = create_provider("assistants", settings_for(upstream))
    await maker.open()
    created = next(iter(upstream.assistants))
    named = AssistantsProvider(settings_for(upstream, assistant_id=created))
    upstream.assistants[created].update(name="Catbot", instructions="Meow politely.")
    profile = await named.open()
    assert (profile.name, profile.instructions) == ("Catbot", "Meow politely.")
    await named.close()
    assert created in upstream.assistants  # not ours to delete
    await maker.close()
    assert created in upstream.deleted_assistants  # the one we created is deleted


async def test_assistants_unknown_assistant_fails_start_up(upstream: FakeUpstream):
    provider = AssistantsProvider(settings_for(upstream, assistant_id="asst_missing"))
    with pytest.raises(ProviderError):
        await provider.open()
    await provider.close()


def test_trim_keeps_the_newest_and_starts_at_a_user_message():
    thread = [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y" * 400},
              {"role": "user", "content": "z" * 40}, {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c", "function": {"name": "t", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c", "content": "{}"},
              {"role": "assistant", "content": "done"}]
    assert trim(thread, 100_000) == thread
    kept = trim(thread, 60)
    assert kept[0]["role"] == "user" and kept == thread[2:]
    assert trim(thread, 1) == thread[-1:]  # never empty, even over budget


async def test_chat_thread_is_trimmed_before_the_server_refuses_it():
    upstream = FakeUpstream(context_limit_chars=3000)
    await upstream.start()
    provider = ChatProvider(settings_for(upstream, context_budget=500))
    thread = await provider.create_thread()
    for i in range(12):
        text = await answer(provider, thread, RunRequest(user("Ann", f"{i} " + "words " * 60, i),
                                                         "x"))
        assert text.startswith(f"Echo: [Ann] {i} ")
    last = upstream.model_requests()[-1].json["messages"]
    assert sum(len(m.get("content") or "") for m in last) <= 3000
    assert last[0]["role"] == "system" and last[1]["role"] == "user"
    assert len(provider.thread(thread)) == 24  # the server keeps everything; it sends a window
    await provider.close()
    await upstream.stop()


async def test_chat_works_without_a_key(upstream: FakeUpstream):
    provider = ChatProvider(settings_for(upstream, api_key=""))
    thread = await provider.create_thread()
    assert await answer(provider, thread, RunRequest(user("Ann", "hi"), "x")) == (
        "Echo: [Ann] hi")
    await provider.close()


@pytest.mark.parametrize("opened", ["responses"], indirect=True)
async def test_responses_records_an_interrupted_turn_in_the_conversation(
    opened: Provider, upstream: FakeUpstream
):
    """The conversation only records a response when it completes; an interrupted turn is
    recorded by the provider so the next turn sees the question (and owed tool outputs)."""
    thread = await opened.create_thread()
    upstream.enqueue(CutStream(after_chunks=2, text="one two three four"))
    with pytest.raises(ProviderError):
        await answer(opened, thread, RunRequest(user("Ann", "hi"), "x"))

    async def refuse(calls: Sequence[ToolCall]) -> list[ToolResult]:
        raise ProviderError("tools gave up")

    upstream.enqueue(ToolCalls([Call("weather", '{"city": "Oslo"}')]))
    with pytest.raises(ProviderError):
        await answer(opened, thread, RunRequest(user("Bob", "weather?", 1), "x", [WEATHER],
                                                refuse))
    assert await answer(opened, thread, RunRequest(user("Cy", "still there?", 2), "x")) == (
        "Echo: [Cy] still there?")
    kinds = [(i["type"], i.get("role")) for i in upstream.conversations[thread]]
    assert kinds == [("message", "user"), ("message", "assistant"), ("message", "user"),
                     ("function_call", None), ("function_call_output", None),
                     ("message", "user"), ("message", "assistant")]
    texts = [i["content"][0]["text"] for i in upstream.conversations[thread]
             if i["type"] == "message"]
    assert texts[:3] == ["[Ann] hi", "one two ", "[Bob] weather?"]
