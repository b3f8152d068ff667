"""Function tools the assistant may call: plain async functions, described by their signatures.

`tool(fn)` turns an annotated async function into a `Tool` (name, description, JSON schema).
A `ToolRegistry` holds the enabled tools and executes the model's calls: it checks arguments
against the schema, injects the room view, applies a timeout, and turns every failure into an
error output for the model. `load_registry` builds one from the built-ins and the operator's
module (settings `TOOLS_ENABLED` and `TOOLS_MODULE`); see docs/tools.md.
"""

from .builtins import BUILTINS, current_time, pick_participant, roll_dice, who_is_here
from .loading import load_registry, module_tools
from .registry import ToolOutcome, ToolRegistry
from .schema import ArgumentError, RoomView, Tool, ToolError, check_arguments, tool

__all__ = [
    "BUILTINS",
    "ArgumentError",
    "RoomView",
    "Tool",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "check_arguments",
    "current_time",
    "load_registry",
    "module_tools",
    "pick_participant",
    "roll_dice",
    "tool",
    "who_is_here",
]
