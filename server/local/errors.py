"""The local model's one exception."""

from __future__ import annotations


class LocalModelError(Exception):
    """The local model cannot be used; the message is one line saying why and what to do."""
