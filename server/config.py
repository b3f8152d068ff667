"""Settings: one frozen object built from the environment and an optional `.env` file."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .logs import LOG_FORMATS
from .rooms.config import REPLY_MODES, ROOM_NAME

LLM_APIS = ("responses", "assistants", "chat", "local")


class ConfigError(Exception):
    """A setting is missing or has a bad value; the message names the setting."""


def _str(raw: str) -> str:
    return raw


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {raw!r}")
    return value.rstrip("/")


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"must start with redis://, rediss:// or unix://, got {raw!r}")
    return value


def _room(raw: str) -> str:
    value = raw.strip().lower()
    if not ROOM_NAME.match(value):
        raise ValueError(f"a room name is 1 to 40 characters of a-z, 0-9, '-' and '_', got {raw!r}")
    return value


def _handle(raw: str) -> str:
    value = raw.strip().lstrip("@")
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", value):
        raise ValueError(f"a handle is 1 to 32 letters, digits, '-' or '_', got {raw!r}")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in items:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"each origin must be '*' or start with http(s)://, got {origin!r}")
    return items


def _header(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^[A-Za-z0-9-]{1,64}$", value):
        raise ValueError(f"an HTTP header name is letters, digits and '-', got {raw!r}")
    return value


def _networks(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected IP addresses or CIDRs, got {item!r}") from None
    return items


def _setting(
    env: str, default: str, parse: Callable[[str], Any], help: str, secret: bool = False
) -> Any:
    """Declare a setting: its variable name, default (as text), parser and one line of help."""
    meta = {"env": env, "parse": parse, "help": help, "default": default}
    return field(default=parse(default), metadata=meta, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told; see `.env.example` for one line of help each."""

    llm_api: str = _setting(
        "LLM_API", "responses", _choice(*LLM_APIS),
        "Provider API: responses (OpenAI), assistants (Assistants v2), chat (Chat Completions), "
        "local (embedded model). Empty: responses if OPENAI_API_KEY or OPENAI_BASE_URL is set, "
        "else local.",
    )
    openai_api_key: str = _setting(
        "OPENAI_API_KEY", "", _str, "API key for the provider (never logged or sent to clients).",
        secret=True,
    )
    openai_base_url: str = _setting(
        "OPENAI_BASE_URL", "", _url, "Base URL of an OpenAI-compatible server; empty = OpenAI."
    )
    openai_model: str = _setting("OPENAI_MODEL", "gpt-5.4-mini", _str, "Model name for each run.")
    openai_assistant_id: str = _setting(
        "OPENAI_ASSISTANT_ID", "", _str,
        "assistants: existing assistant to use; empty = create one and delete it at shutdown.",
    )
    context_budget: int = _setting(
        "CONTEXT_TOKEN_BUDGET", "16000", _int_range(256, 10_000_000),
        "chat: most tokens of history sent per request; older messages are trimmed first.",
    )
    local_model_path: str = _setting(
        "LOCAL_MODEL_PATH", "", _str,
        "local: GGUF model file to serve; empty = the bundled SmolLM2 135M Instruct (a demo).",
    )
    local_max_tokens: int = _setting(
        "LOCAL_MAX_TOKENS", "256", _int_range(1, 1_000_000),
        "local: most tokens the model may write in one answer.",
    )
    local_temperature: float = _setting(
        "LOCAL_TEMPERATURE", "0.2", _float_range(0.0, 2.0),
        "local: sampling temperature; low keeps a small model on topic (0 = always the likeliest).",
    )
    local_repeat_penalty: float = _setting(
        "LOCAL_REPEAT_PENALTY", "1.1", _float_range(1.0, 2.0),
        "local: penalty on repeating recent tokens (1.0 = none); keeps small models on track.",
    )
    local_context: int = _setting(
        "LOCAL_CONTEXT", "2048", _int_range(512, 1_000_000),
        "local: the model's context window in tokens (history is trimmed to fit).",
    )
    assistant_name: str = _setting(
        "ASSISTANT_NAME", "Roundtable AI", _str, "Name shown on the assistant's messages."
    )
    assistant_instructions: str = _setting(
        "ASSISTANT_INSTRUCTIONS",
        "You are a helpful, friendly assistant taking part in a team's group chat. "
        "Keep answers short unless asked for detail.",
        _str,
        "Base instructions for every run.",
    )
    server_host: str = _setting("SERVER_HOST", "127.0.0.1", _str, "Interface to listen on.")
    server_port: int = _setting("SERVER_PORT", "5020", _int_range(0, 65535), "Port to listen on.")
    cors_origins: tuple[str, ...] = _setting(
        "CORS_ORIGINS",
        "http://localhost:5173,http://127.0.0.1:5173",
        _origins,
        "Extra browser origins allowed to connect (comma-separated; the server's own is always).",
    )
    max_name_length: int = _setting(
        "MAX_NAME_LENGTH", "32", _int_range(1, 200), "Longest nickname, in characters."
    )
    max_message_length: int = _setting(
        "MAX_MESSAGE_LENGTH", "8000", _int_range(1, 1_000_000), "Longest message, in characters."
    )
    max_queued_turns: int = _setting(
        "MAX_QUEUED_TURNS", "50", _int_range(1, 100_000), "Turns that may wait in the queue."
    )
    request_timeout: float = _setting(
        "REQUEST_TIMEOUT", "60", _float_range(1, 3600), "Seconds to wait on one provider request."
    )
    shutdown_timeout: float = _setting(
        "SHUTDOWN_TIMEOUT", "5", _float_range(0.1, 60), "Seconds allowed for clean-up at shutdown."
    )
    max_participants: int = _setting(
        "MAX_PARTICIPANTS", "2000", _int_range(1, 1_000_000),
        "People allowed in one room at once (a configured room may set its own).",
    )
    reply_mode: str = _setting(
        "REPLY_MODE", "always", _choice(*REPLY_MODES),
        "When the assistant answers: always (every message, input locked meanwhile), mention "
        "(only when @-mentioned), auto (it decides); a room in ROOMS_FILE may fix its own.",
    )
    assistant_handle: str = _setting(
        "ASSISTANT_HANDLE", "ai", _handle,
        "The assistant's @handle in mention and auto rooms (@ai); @ and its name work too.",
    )
    default_room: str = _setting(
        "DEFAULT_ROOM", "main", _room, "The room of clients that name none (and of `/`)."
    )
    max_rooms: int = _setting(
        "MAX_ROOMS", "200", _int_range(1, 100_000),
        "Rooms that may be open at once; one more is refused with room_limit.",
    )
    rooms_file: str = _setting(
        "ROOMS_FILE", "", _str,
        "TOML file of configured rooms ([rooms.<name>]: instructions, password, listed, "
        "max_participants); empty = none.",
    )
    rooms_ad_hoc: bool = _setting(
        "ROOMS_AD_HOC", "true", _bool,
        "Whether any room name may be opened; false = only DEFAULT_ROOM and configured rooms.",
    )
    rate_limit_per_minute: int = _setting(
        "RATE_LIMIT_PER_MINUTE", "30", _int_range(1, 100_000),
        "Messages one connection may send per minute; more are refused with rate_limited.",
    )
    max_payload_bytes: int = _setting(
        "MAX_PAYLOAD_BYTES", "1000000", _int_range(1024, 100_000_000),
        "Largest Socket.IO packet a client may send, in bytes; a larger one closes its "
        "connection (too-long messages and nicknames below it get their own error).",
    )
    room_password: str = _setting(
        "ROOM_PASSWORD", "", _str,
        "If set, clients must send it at connect (Socket.IO auth {token}) and GET /api/rooms "
        "as a bearer token; empty = open server.",
        secret=True,
    )
    metrics_token: str = _setting(
        "METRICS_TOKEN", "", _str,
        "If set, GET /metrics needs it as a bearer token; empty = open to whoever reaches it.",
        secret=True,
    )
    redis_url: str = _setting(
        "REDIS_URL", "", _redis_url,
        "Redis for several server processes acting as one (docs/cluster.md), e.g. "
        "redis://127.0.0.1:6379/0; empty = one process, no Redis.",
        secret=True,
    )
    cluster_lease: float = _setting(
        "CLUSTER_LEASE", "5", _float_range(0.5, 60),
        "With REDIS_URL: seconds a room's owner process (and a process's liveness) lasts "
        "unrenewed; another process takes a room over this long after its owner dies.",
    )
    drain_timeout: float = _setting(
        "DRAIN_TIMEOUT", "15", _float_range(0, 3600),
        "On SIGTERM, seconds the answers in flight may take to finish before they are cut short.",
    )
    run_timeout: float = _setting(
        "RUN_TIMEOUT", "60", _float_range(1, 3600),
        "Seconds without any streamed output before an answer is abandoned.",
    )
    provider_max_retries: int = _setting(
        "PROVIDER_MAX_RETRIES", "2", _int_range(0, 10),
        "Retries (with backoff) of a provider request that failed before anything streamed.",
    )
    tools_enabled: str = _setting(
        "TOOLS_ENABLED", "all", _str, "Tools the assistant may call: all, none, or a list."
    )
    tools_module: str = _setting(
        "TOOLS_MODULE", "", _str, "Python module with your own tools (package.module)."
    )
    tool_timeout: float = _setting(
        "TOOL_TIMEOUT", "10", _float_range(0.1, 600), "Seconds one tool call may take."
    )
    tool_max_rounds: int = _setting(
        "TOOL_MAX_ROUNDS", "5", _int_range(1, 100), "Rounds of tool calls allowed in one answer."
    )
    ws_compression: bool = _setting(
        "WS_COMPRESSION", "false", _bool,
        "Accept permessage-deflate on websockets (costs memory and CPU per client).",
    )
    event_loop: str = _setting(
        "EVENT_LOOP", "asyncio", _choice("asyncio", "uvloop"),
        "Event loop for python -m server: asyncio, or uvloop (pip install uvloop).",
    )
    log_level: str = _setting(
        "LOG_LEVEL", "INFO", _choice("debug", "info", "warning", "error"),
        "Logging verbosity; message text and provider error details are logged only at debug.",
    )
    log_format: str = _setting(
        "LOG_FORMAT", "text", _choice(*LOG_FORMATS),
        "Log lines as readable text, or json: one object per line (time, level, logger, "
        "message, room/turn/connection ids) for log collectors.",
    )
    trusted_user_header: str = _setting(
        "TRUSTED_USER_HEADER", "", _header,
        "Header a sign-in proxy sets to the person's name (e.g. X-Forwarded-User); when set, "
        "only connections from TRUSTED_PROXIES carrying it are accepted. Empty = nicknames.",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "TRUSTED_PROXIES", "127.0.0.1/8,::1", _networks,
        "Addresses (IPs or CIDRs, comma-separated) TRUSTED_USER_HEADER is honoured from.",
    )

    def validate(self) -> None:
        """Cross-field checks that need more than one setting."""
        if self.llm_api != "local" and not self.openai_api_key and not self.openai_base_url:
            raise ConfigError(
                f"OPENAI_API_KEY: not set, but LLM_API={self.llm_api} needs it. Put your key in "
                ".env (see .env.example), set OPENAI_BASE_URL to a server that needs no key, or "
                "unset LLM_API to use the local model."
            )
        if self.trusted_user_header and not self.trusted_proxies:
            raise ConfigError(
                f"TRUSTED_PROXIES: empty, but TRUSTED_USER_HEADER={self.trusted_user_header} "
                "needs the addresses of the proxy that sets it."
            )

    def public_items(self) -> list[tuple[str, str]]:
        """Settings for the start-up log, with the key masked."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "(set)" if value else "(not set)"
            out.append((f.metadata["env"], str(value)))
        return out


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a simple `.env` file: KEY=value lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build Settings from `.env` overlaid by the environment; raise ConfigError on bad values."""
    source = dict(read_dotenv(dotenv)) if dotenv is not None else {}
    source.update(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env = f.metadata["env"]
        raw = source.get(env)
        if raw is None or (env == "LLM_API" and not raw.strip()):  # empty LLM_API = choose
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{env}: {exc}") from None
    settings = Settings(**values)
    if not source.get("LLM_API", "").strip() and not (
        settings.openai_api_key or settings.openai_base_url
    ):
        settings = replace(settings, llm_api="local")  # no provider configured: the local model
    settings.validate()
    return settings


ENV_EXAMPLE_HEADER = """\
# Roundtable settings. Copy to .env and edit; real environment variables override this file.
# With nothing set, the embedded local model is used: no key, no network. Set OPENAI_API_KEY
# for OpenAI, or OPENAI_BASE_URL for another server (see README). A bad value stops start-up
# with one line naming the setting.

"""


def env_example_text() -> str:
    """The text of `.env.example`: every setting with its help line and default."""
    lines = [ENV_EXAMPLE_HEADER]
    for env, default, help_text in settings_help():
        value = "" if env == "LLM_API" else default  # empty: chosen from the key/base URL
        lines.append(f"# {help_text}\n{env}={value}\n")
    return "".join(lines)


def settings_help() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting: the source of `.env.example`."""
    return [
        (f.metadata["env"], f.metadata["default"], f.metadata["help"])
        for f in fields(Settings)
    ]
