"""The terminal client: join a Roundtable room from a shell (`python -m client`)."""

from .app import Options, run

__all__ = ["Options", "run"]
