"""`python -m server.local needed [--env-file .env]`: exit 0 when the settings select the
local model, 1 otherwise (a configuration error counts as no: the server will say what)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def needed(env_file: Path) -> bool:
    """Whether the settings (environment over `env_file`) select the local model."""
    from ..config import ConfigError, load_settings

    try:
        return load_settings(dotenv=env_file).llm_api == "local"
    except ConfigError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("needed", help="exit 0 if the settings select the local model")
    check.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    return 0 if needed(args.env_file) else 1


if __name__ == "__main__":
    sys.exit(main())
