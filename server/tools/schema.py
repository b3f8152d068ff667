"""Deriving a tool from a plain async function, and checking the model's arguments."""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints

from ..providers.base import ToolSpec

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
