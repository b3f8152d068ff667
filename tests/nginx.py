"""A real nginx (Debian's) on a free loopback port, for the tests of docs/deploy.md.

`running_nginx(directory, site, port)` writes a minimal nginx.conf around `site` (a server
configuration such as deploy/nginx/roundtable.conf, meant for inside `http {}`), starts nginx in
the foreground with every file (pid, logs, temp paths) under `directory`, waits until
`GET /healthz` through it answers 200, and stops it on exit, also on an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_CONF = ROOT / "deploy" / "nginx" / "roundtable.conf"
NGINX = Path("/usr/sbin/nginx")


@dataclass
class Proxy:
    """A running nginx: its address and the directory with its logs."""

    url: str
    dir: Path

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


def missing_nginx() -> str | None:
    """Why nginx cannot run here (`make nginx-deps` installs it), or None."""
    if not os.access(NGINX, os.X_OK):
        return "nginx is not installed: run `make nginx-deps`"
    return None


def substitute(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur exactly once) replaced by `new`."""
    assert text.count(old) == 1, f"the nginx configuration must contain {old!r} once"
    return text.replace(old, new)


def main_conf(directory: Path, site: Path) -> str:
    """An nginx.conf that keeps everything under `directory` and includes `site`."""
    temps = "\n".join(f"    {kind}_temp_path {directory / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "access.log"};
{temps}
    include {site};
}}
"""


@contextlib.asynccontextmanager
async def running_nginx(
    directory: Path, site: str, port: int, timeout: float = 10.0
) -> AsyncIterator[Proxy]:
    """nginx serving `site` (which listens on 127.0.0.1:`port`), until the block exits."""
    (directory / "roundtable.conf").write_text(site)
    (directory / "nginx.conf").write_text(main_conf(directory, directory / "roundtable.conf"))
    proxy = Proxy(f"http://127.0.0.1:{port}", directory)
    with (directory / "nginx.out").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(NGINX), "-p", str(directory), "-c", str(directory / "nginx.conf"),
            "-e", str(directory / "error.log"),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)
    try:
        await _wait_healthy(proc, proxy, timeout)
        yield proxy
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_healthy(proc: asyncio.subprocess.Process, proxy: Proxy, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while loop.time() < deadline:
            if proc.returncode is not None:
                output = (proxy.dir / "nginx.out").read_text(errors="replace")
                raise AssertionError(f"nginx exited ({proc.returncode}):\n{output}\n"
                                     f"{proxy.error_log()}")
            try:
                async with http.get(f"{proxy.url}/healthz") as resp:
                    if resp.status == 200:
                        return
                    last = f"{resp.status} {await resp.text()}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.05)
    raise AssertionError(f"nginx: /healthz not 200 within {timeout} s (last: {last}):\n"
                         f"{proxy.error_log()}")
