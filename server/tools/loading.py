"""Building the registry from settings: `TOOLS_ENABLED` and the operator's `TOOLS_MODULE`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from .builtins import BUILTINS
from .registry import ToolRegistry
from .schema import Tool, ToolError, tool


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
