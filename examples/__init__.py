"""Example operator modules for Roundtable (see docs/tools.md)."""
