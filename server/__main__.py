"""`python -m server`: load settings, configure logging, run the app until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import ConfigError, load_settings
from .local import LocalModelError
from .logs import configure as configure_logging
from .rooms import RoomsFileError
from .tools import ToolError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--env-file", type=Path, default=Path(".env"),
                        help="settings file read before the environment (default: .env)")
    parser.add_argument("--host", help="overrides SERVER_HOST")
    parser.add_argument("--port", type=int, help="overrides SERVER_PORT")
    return parser.parse_args(argv)


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The loop to serve on: asyncio's, or uvloop's when asked for. Measured side by side at
    1,000 clients, uvloop saved nothing per streamed delta and added 0.2 ms to the first one
    (docs/performance.md), so it is not the default."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("EVENT_LOOP=uvloop, but uvloop is not installed "
                              "(pip install uvloop)") from None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        settings = load_settings(dotenv=args.env_file)
    except ConfigError as exc:
        print(f"roundtable: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("server")
    for name, value in settings.public_items():
        log.debug("setting %s=%s", name, value)
    host = args.host or settings.server_host
    port = settings.server_port if args.port is None else args.port
    try:
        app = create_app(settings)
        loop = new_event_loop(settings.event_loop)
    except (ToolError, ConfigError, RoomsFileError) as exc:
        print(f"roundtable: configuration error: {exc}", file=sys.stderr)
        return 2
    model = settings.openai_model
    if settings.llm_api == "local":
        model = settings.local_model_path or "bundled SmolLM2 135M Instruct"
    log.info("Roundtable listening on http://%s:%d (provider: %s, model: %s, loop: %s)",
             host, port, settings.llm_api, model, settings.event_loop)
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            # Room clean-up has its own SHUTDOWN_TIMEOUT budget and every socket is closed by
            # then, so aiohttp need not wait long for handlers.
            shutdown_timeout=0.5,
            print=None,
            access_log=None,
            loop=loop,
        )
    except LocalModelError as exc:
        print(f"roundtable: local model: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
