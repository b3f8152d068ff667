"""Roundtable: one AI conversation, many people."""

__version__ = "0.1.0"
