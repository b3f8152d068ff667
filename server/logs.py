"""Logging set-up for `python -m server`: readable text (the default) or one JSON object per
line (LOG_FORMAT=json), and the room/turn/connection ids a log line is about.

The ids travel in a context variable: the Socket.IO handlers bind `connection` (and `room` once
the socket has one), a room's turn worker binds `room`, and each turn binds `turn`. asyncio copies
the context into every task it creates, so a line logged anywhere below carries the ids of the
request or turn it belongs to. `log_ids` sets them for a block and restores them after.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
ID_FIELDS = ("room", "turn", "connection")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ids: ContextVar[dict[str, str]] = ContextVar("roundtable_log_ids", default={})  # noqa: B039


@contextmanager
def log_ids(**ids: str | None) -> Iterator[None]:
    """Within the block, log lines carry these ids (None removes one) besides the outer ones."""
    merged = {**_ids.get(), **ids}
    token = _ids.set({k: v for k, v in merged.items() if v is not None})
    try:
        yield
    finally:
        _ids.reset(token)


def current_ids() -> dict[str, str]:
    """The ids bound here (for tests and for code that starts work elsewhere)."""
    return dict(_ids.get())


class IdsFilter(logging.Filter):
    """Copies the bound ids onto each record (an `extra=` of the same name wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _ids.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids the
    line has, and `exc` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ID_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    """Send the root logger's lines to stderr in `fmt` ("text" or "json") at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(IdsFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Client libraries log every request at INFO (with URLs); keep them to warnings.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
