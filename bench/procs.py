"""Process helpers for the bench: start things in their own process group, pinned to a core,
and make sure every one of them is stopped (group-wide SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NCPU = os.cpu_count() or 1
HAVE_TASKSET = shutil.which("taskset") is not None and NCPU >= 2
SERVER_CORE = "0"
CLIENT_CORE = "1" if NCPU >= 2 else "0"


def pinned(cmd: list[str], core: str) -> list[str]:
    return ["taskset", "-c", core, *cmd] if HAVE_TASKSET else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Procs:
    """Every process the bench started; `stop_all()` ends them group by group."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, cmd: list[str], *, env: dict[str, str] | None = None,
                    stdin: bool = False, stdout: bool = True,
                    log: Path | None = None) -> asyncio.subprocess.Process:
        err: Any = asyncio.subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            err = open(log, "ab")  # noqa: ASYNC230 - a log file, opened once per process
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=err, start_new_session=True, limit=64 * 1024 * 1024,
        )
        if log is not None:
            err.close()
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:  # the leader is gone; make sure nothing of its group is left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    async def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            await self.stop(proc)


async def read_line_prefix(
    proc: asyncio.subprocess.Process, prefix: str, timeout: float  # noqa: ASYNC109
) -> str:
    """The first stdout line that starts with `prefix` (the rest of it), within `timeout` s."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {prefix!r} line within {timeout} s")
        line = await asyncio.wait_for(proc.stdout.readline(), left)
        if not line:
            raise RuntimeError(f"process exited before printing {prefix!r}")
        text = line.decode().strip()
        if text.startswith(prefix):
            return text[len(prefix):].strip()


class LoadGen:
    """One Node load-generator process, spoken to in JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process, ident: int) -> None:
        self.proc = proc
        self.id = ident
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.events.put({"event": "exit"})
                return
            with contextlib.suppress(ValueError):
                await self.events.put(json.loads(line))

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def wait(self, event: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loadgen {self.id}: no {event!r} within {timeout} s")
            msg = await asyncio.wait_for(self.events.get(), left)
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "exit":
                raise RuntimeError(f"loadgen {self.id} exited while waiting for {event!r}")

    def close(self) -> None:
        self._reader.cancel()
