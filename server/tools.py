"""Function tools the assistant may call: plain async functions, described by their signatures.

`tool(fn)` turns an annotated async function into a `Tool` (name, description, JSON schema).
A `ToolRegistry` holds the enabled tools and executes the model's calls: it checks arguments
against the schema, injects the room view, applies a timeout, and turns every failure into an
error output for the model. `load_registry` builds one from the built-ins and the operator's
module (settings `TOOLS_ENABLED` and `TOOLS_MODULE`); see docs/tools.md.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import random
import re
import secrets
import time
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .providers.base import ToolCall, ToolResult, ToolSpec

logger = logging.getLogger(__name__)

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the OpenAI APIs accept
SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ToolError(Exception):
    """A malformed tool or operator module; the message names the tool or `TOOLS_MODULE`."""


class ArgumentError(ValueError):
    """The model's arguments do not fit the tool's schema; the message names the parameter."""


class RoomView(Protocol):
    """What a tool may know about the room. A tool gets it by taking `room: RoomView`."""

    def people(self) -> list[tuple[str, int]]:
        """Who is in the room now: (nickname, since in ms since the epoch), oldest first."""
        ...


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Awaitable[Any]]
    needs_room: bool = False

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one call: `output` is what the model receives (JSON text)."""

    call_id: str
    name: str
    ok: bool
    output: str

    @property
    def result(self) -> ToolResult:
        return ToolResult(self.call_id, self.output)


# ----- deriving a tool from a function -----
def tool(fn: Callable[..., Awaitable[Any]]) -> Tool:
    """Describe an async function as a tool; raise ToolError if it cannot be described."""
    name = getattr(fn, "__name__", repr(fn))
    if not inspect.iscoroutinefunction(fn):
        raise ToolError(f"tool {name!r}: must be an async function (async def)")
    if not TOOL_NAME.match(name):
        raise ToolError(f"tool {name!r}: the name must be 1-64 characters of A-Z a-z 0-9 _ -")
    description, arg_docs = _parse_docstring(fn.__doc__ or "")
    if not description:
        raise ToolError(f"tool {name!r}: needs a docstring; its first paragraph tells the model")
    parameters, needs_room = _parameters(fn, f"tool {name!r}", arg_docs)
    return Tool(name, description, parameters, fn, needs_room)


def _parameters(
    fn: Callable[..., Any], owner: str, arg_docs: dict[str, str]
) -> tuple[dict[str, Any], bool]:
    """The JSON schema of `fn`'s parameters, and whether it takes `room: RoomView`."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a NameError or TypeError from a string annotation
        raise ToolError(f"{owner}: cannot resolve its type hints: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    needs_room = False
    for param in inspect.signature(fn).parameters.values():
        where = f"{owner}: parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolError(f"{where}: *args, **kwargs and positional-only are not supported")
        if param.name not in hints:
            raise ToolError(f"{where}: has no type annotation")
        if hints[param.name] is RoomView:
            if param.name != "room":
                raise ToolError(f"{where}: a RoomView parameter must be named 'room'")
            needs_room = True
            continue
        schema, nullable = _schema(hints[param.name], where)
        if param.name in arg_docs:
            schema.setdefault("description", arg_docs[param.name])
        if param.default is not param.empty:
            schema["default"] = _json_default(param.default, where)
        elif not nullable:
            required.append(param.name)  # `x: T | None` may be left out: it gets None
        properties[param.name] = schema
    closed = {"additionalProperties": False}  # the model may not invent parameters
    return {"type": "object", "properties": properties, "required": required, **closed}, needs_room


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph (one line) and the Google-style `Args:` descriptions."""
    lines = inspect.cleandoc(doc).splitlines()
    first: list[str] = []
    for line in lines:
        if not line.strip() or line.strip() in ("Args:", "Arguments:"):
            break
        first.append(line.strip())
    args: dict[str, str] = {}
    current = ""
    in_args = False
    for line in lines:
        if line.strip() in ("Args:", "Arguments:"):
            in_args = True
        elif in_args and line and not line[0].isspace():
            in_args = False  # the next section, e.g. "Returns:"
        elif in_args and (m := re.match(r"^\s+(\w+)(?:\s*\(.*?\))?:\s*(.*)$", line)):
            current = m.group(1)
            args[current] = m.group(2).strip()
        elif in_args and current and line.strip():
            args[current] = f"{args[current]} {line.strip()}".strip()
    return " ".join(first), args


def _schema(hint: Any, where: str) -> tuple[dict[str, Any], bool]:
    """The JSON schema for one annotation, and whether it admits None."""
    description = None
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        description = next((e for e in extras if isinstance(e, str)), None)
    origin = get_origin(hint)
    members = get_args(hint)
    nullable = origin in (Union, types.UnionType)
    if nullable:
        rest = [m for m in members if m is not type(None)]
        if len(rest) != 1 or len(members) != 2:
            raise ToolError(f"{where}: unions other than `X | None` are not supported")
        schema, _ = _schema(rest[0], where)
        kind = schema.get("type")
        if kind is not None:
            schema["type"] = [kind, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    elif hint in SCALARS:
        schema = {"type": SCALARS[hint]}
    elif origin is Literal:
        schema = _literal_schema(members, where)
    elif origin is list and len(members) == 1:
        schema = {"type": "array", "items": _schema(members[0], f"{where} (list items)")[0]}
    else:
        raise ToolError(
            f"{where}: unsupported annotation {hint!r}; use str, int, float, bool, "
            "Literal[...], list[T] or T | None"
        )
    if description:
        schema["description"] = description
    return schema, nullable


def _literal_schema(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    kinds = {SCALARS.get(type(v)) for v in values}
    if None in kinds:
        raise ToolError(f"{where}: Literal values must be str, int, float or bool")
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    return schema


def _json_default(value: Any, where: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ToolError(f"{where}: the default {value!r} is not JSON-serializable") from None
    return value


# ----- checking the model's arguments -----
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _json_type(value: Any) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if isinstance(value, float) and value.is_integer():
        return "number"
    return next((k for k, test in _JSON_TYPES.items() if test(value)), type(value).__name__)


def check_arguments(raw: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Decode the model's JSON arguments and check them against `parameters` (the subset
    of JSON Schema that `tool()` generates); return keyword arguments for the function."""
    try:
        data = json.loads(raw.strip() or "{}")  # some models send "" for "no arguments"
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"arguments are not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArgumentError(f"arguments must be a JSON object, got {_json_type(data)}")
    properties: dict[str, Any] = parameters.get("properties", {})
    for key in data:
        if key not in properties:
            expected = ", ".join(properties) or "none"
            raise ArgumentError(f"unknown parameter {key!r}; expected: {expected}")
    required = parameters.get("required", [])
    for key in required:
        if key not in data:
            raise ArgumentError(f"missing required parameter {key!r}")
    args = {k: _conform(v, properties[k], f"parameter {k!r}") for k, v in data.items()}
    for key, schema in properties.items():
        if key not in args and key not in required and "default" not in schema:
            args[key] = None  # `x: T | None` without a default
    return args


def _conform(value: Any, schema: dict[str, Any], where: str) -> Any:
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds and not any(_JSON_TYPES[k](value) for k in kinds):
        raise ArgumentError(f"{where} must be {' or '.join(kinds)}, got {_json_type(value)}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        options = ", ".join(json.dumps(o) for o in schema["enum"])
        raise ArgumentError(f"{where} must be one of {options}, got {json.dumps(value)}")
    if isinstance(value, float) and "integer" in kinds and "number" not in kinds:
        return int(value)
    if isinstance(value, list) and "items" in schema:
        return [_conform(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _same(value: Any, option: Any) -> bool:
    """Equality that keeps true apart from 1."""
    return bool(value == option and isinstance(value, bool) == isinstance(option, bool))


# ----- the registry -----
class ToolRegistry:
    """The tools offered to the model, by name; executes the model's calls safely."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self._tools:
                raise ToolError(f"tool {t.name!r}: defined twice")
            self._tools[t.name] = t

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def names(self) -> list[str]:
        return list(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    async def execute(
        self,
        call: ToolCall,
        room: RoomView,
        timeout: float,  # noqa: ASYNC109 - a limit per call, applied here with asyncio.timeout
    ) -> ToolOutcome:
        """Run one call; every failure becomes an error output (only cancellation raises)."""
        found = self._tools.get(call.name)
        if found is None:
            available = ", ".join(self._tools) or "none"
            return _failed(call, f"unknown tool {call.name!r}; available: {available}")
        try:
            args = check_arguments(call.arguments, found.parameters)
        except ArgumentError as exc:
            return _failed(call, f"invalid arguments for tool {call.name!r}: {exc}")
        if found.needs_room:
            args["room"] = room
        started = time.monotonic()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await found.fn(**args)
        except TimeoutError as exc:
            if deadline.expired():
                return _failed(call, f"tool {call.name!r} timed out after {timeout:g} s")
            logger.exception("tool call %s (%s) raised", call.call_id, call.name)  # not ours
            return _failed(call, _raised(call.name, exc), logged=True)
        except Exception as exc:
            logger.exception("tool call %s (%s) raised", call.call_id, call.name)
            return _failed(call, _raised(call.name, exc), logged=True)
        elapsed = time.monotonic() - started
        logger.debug("tool call %s (%s) finished in %.2f s", call.call_id, call.name, elapsed)
        try:
            output = result if isinstance(result, str) else json.dumps(result, default=str)
        except (TypeError, ValueError) as exc:  # e.g. a circular structure
            return _failed(call, f"tool {call.name!r} returned a result that is not JSON: {exc}")
        return ToolOutcome(call.call_id, call.name, True, output)


def _raised(name: str, exc: BaseException) -> str:
    detail = f": {exc}" if str(exc) else ""
    return f"tool {name!r} failed: {type(exc).__name__}{detail}"


def _failed(call: ToolCall, error: str, logged: bool = False) -> ToolOutcome:
    if not logged:
        logger.warning("tool call %s (%s) failed: %s", call.call_id, call.name, error)
    return ToolOutcome(call.call_id, call.name, False, json.dumps({"error": error}))


# ----- built-ins -----
async def current_time(
    timezone: Annotated[
        str | None, "IANA time zone such as 'Europe/Berlin' or 'America/New_York'; default UTC"
    ] = None,
) -> dict[str, str]:
    """The current date and time, in UTC or in a given time zone."""
    zone = _zone(timezone)
    now = datetime.now(zone)
    return {
        "timezone": timezone or "UTC",
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
    }


def _zone(name: str | None) -> tzinfo:
    if name is None or name.strip().upper() in ("UTC", "Z"):
        return UTC  # no time zone database needed
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC'"
        ) from None


async def who_is_here(room: RoomView) -> list[dict[str, str]]:
    """Who is in the room right now: nicknames and since when (UTC), longest-present first."""
    return [{"name": name, "since": _iso_utc(since)} for name, since in room.people()]


def _iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def roll_dice(
    sides: Annotated[int, "faces per die, 2 to 1000"] = 6,
    count: Annotated[int, "how many dice, 1 to 100"] = 1,
) -> dict[str, Any]:
    """Roll fair dice (a cryptographically secure random number for each die)."""
    if not 2 <= sides <= 1000:
        raise ValueError(f"sides must be between 2 and 1000, got {sides}")
    if not 1 <= count <= 100:
        raise ValueError(f"count must be between 1 and 100, got {count}")
    rolls = [secrets.randbelow(sides) + 1 for _ in range(count)]
    return {"sides": sides, "rolls": rolls, "total": sum(rolls)}


async def pick_participant(
    room: RoomView,
    count: Annotated[int, "how many people to pick; the number present gives a full order"] = 1,
) -> dict[str, Any]:
    """Pick people in the room at random, fairly and without repeats, in the order drawn.

    With count equal to the number of people present this is a fair random order, e.g. for
    "who presents first?".
    """
    names = [name for name, _ in room.people()]
    if not names:
        raise ValueError("nobody is in the room")
    if not 1 <= count <= len(names):
        raise ValueError(f"count must be between 1 and {len(names)} (the people present)")
    return {"picked": random.SystemRandom().sample(names, count), "out_of": len(names)}


BUILTINS: tuple[Tool, ...] = tuple(
    tool(fn) for fn in (current_time, who_is_here, roll_dice, pick_participant)
)


# ----- loading from settings -----
def load_registry(enabled: str = "all", module: str = "") -> ToolRegistry:
    """The registry for settings `TOOLS_ENABLED` ("all", "none" or a comma-separated list of
    names; empty means none) and `TOOLS_MODULE` ("" or "package.module")."""
    available = list(BUILTINS)
    if module.strip():
        builtin_names = {t.name for t in BUILTINS}
        for t in module_tools(module.strip()):
            if t.name in builtin_names:
                raise ToolError(f"TOOLS_MODULE: tool {t.name!r} has the name of a built-in")
            available.append(t)
    try:
        registry = ToolRegistry(available)
    except ToolError as exc:
        raise ToolError(f"TOOLS_MODULE: {exc}") from None
    choice = enabled.strip()
    if choice.lower() == "all":
        return registry
    if choice.lower() == "none":
        return ToolRegistry()
    wanted = {name.strip() for name in choice.split(",") if name.strip()}
    for name in sorted(wanted - set(registry.names())):
        names = ", ".join(registry.names())
        raise ToolError(f"TOOLS_ENABLED: unknown tool {name!r}; available: {names}")
    return ToolRegistry(t for t in available if t.name in wanted)


def module_tools(module: str) -> list[Tool]:
    """The tools of an operator module: its `TOOLS` list if it has one, otherwise every public
    async function (or `Tool`) defined in the module itself, in definition order."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ToolError(f"TOOLS_MODULE: cannot import {module!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed while importing
        raise ToolError(
            f"TOOLS_MODULE: importing {module!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    listed = getattr(mod, "TOOLS", None)
    if listed is None:
        public = (v for k, v in vars(mod).items() if not k.startswith("_"))
        candidates = [v for v in public if _local(v, module)]
    elif isinstance(listed, list | tuple):
        candidates = list(listed)
    else:
        raise ToolError(f"TOOLS_MODULE: {module}.TOOLS must be a list of async functions")
    if not candidates:
        raise ToolError(f"TOOLS_MODULE: {module!r} defines no tools (no TOOLS, no async def)")
    try:
        return [c if isinstance(c, Tool) else tool(c) for c in candidates]
    except ToolError as exc:
        raise ToolError(f"TOOLS_MODULE: {module}: {exc}") from None


def _local(value: Any, module: str) -> bool:
    """True for an async function or Tool defined in `module` (not imported into it)."""
    fn = value.fn if isinstance(value, Tool) else value
    return inspect.iscoroutinefunction(fn) and getattr(fn, "__module__", None) == module
