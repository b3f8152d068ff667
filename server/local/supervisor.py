"""A child process this server owns: started, health-checked, restarted, stopped, never orphaned.

`Supervisor` runs one command in its own session and process group, forwards its output a line
at a time to a logger (lines that look like errors at WARNING, the rest at DEBUG, and lines the
child marks with `roundtable: ` at INFO), waits until a health URL answers 200, restarts the
child with doubling backoff when it dies (a bounded number of times in a row), and stops it with
SIGTERM to its group, then SIGKILL. On Linux the child also gets `PR_SET_PDEATHSIG`, so it is
killed when this process dies, however it dies. Nothing here knows what the child serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

logger = logging.getLogger(__name__)

NOTE = "roundtable: "  # how a child marks a line worth showing at INFO
PR_SET_PDEATHSIG = 1
_LOUD = re.compile(r"^(ERROR|CRITICAL|WARNING|Traceback)|\b(error|exception|failed)\b", re.I)


class StartError(Exception):
    """The child exited or did not become healthy; the message is one line."""


@dataclass(frozen=True)
class Timing:
    """How patient the supervisor is."""

    start_timeout: float = 300.0  # to become healthy
    stop_timeout: float = 5.0  # between SIGTERM and SIGKILL
    max_restarts: int = 5  # in a row
    restart_backoff: float = 1.0  # first delay; doubles up to 30 s
    stable_after: float = 60.0  # healthy this long resets the count
    progress_every: float = 5.0  # a log line while waiting


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this process dies (or None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    """One owned child process. `command()` is called at each (re)start."""

    def __init__(
        self,
        name: str,
        command: Callable[[], Sequence[str]],
        health_url: Callable[[], str],
        *,
        env: Mapping[str, str] | None = None,
        timing: Timing = Timing(),
        output: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.health_url = health_url
        self.env = dict(env or {})
        self.timing = timing
        self.output = output or logging.getLogger(f"{__name__}.child")
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=40)
        self._stopping = False
        self._ready_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> float:
        """Start the child and wait until healthy; returns the seconds it took. On failure it
        is stopped and StartError raised."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._stopping = False
        started = time.monotonic()
        try:
            await self._launch()
            await self._wait_healthy()
        except BaseException:
            await self._terminate()
            raise
        self._watcher = asyncio.create_task(self._watch(), name=f"{self.name}-watch")
        return self._ready_at - started

    async def stop(self) -> None:
        """Stop watching, then SIGTERM the child's group, SIGKILL after stop_timeout."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()

    async def _launch(self) -> None:
        self._tail.clear()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            limit=1 << 20,
            # its own session and process group: Ctrl-C reaches only us, and we stop it in order
            # (start_new_session rather than process_group=0: uvloop supports only the former)
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        logger.debug("%s started: pid %d", self.name, self._proc.pid)
        self._pump = asyncio.create_task(self._forward(self._proc), name=f"{self.name}-output")

    async def _forward(self, proc: asyncio.subprocess.Process) -> None:
        """The child's output, a line at a time, to the output logger (and a tail for errors)."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # an over-long line: skip it
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            if line.startswith(NOTE):
                self.output.info("%s", line[len(NOTE):])
            else:
                level = logging.WARNING if _LOUD.search(line) else logging.DEBUG
                self.output.log(level, "%s", line)

    def last_words(self) -> str:
        """The child's last line of output, for a one-line error."""
        return self._tail[-1] if self._tail else "(no output)"

    async def _wait_healthy(self) -> None:
        """Poll the health URL until it answers 200; log progress while waiting."""
        proc = self._proc
        assert proc is not None
        started = time.monotonic()
        next_note = started + self.timing.progress_every
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not await self._healthy(http):
                if proc.returncode is not None:
                    await self._drain()
                    self._log_tail(logging.ERROR)
                    raise StartError(f"{self.name} exited with status {proc.returncode} while "
                                     f"starting: {self.last_words()}")
                now = time.monotonic()
                if now - started > self.timing.start_timeout:
                    self._log_tail(logging.ERROR)
                    raise StartError(f"{self.name} did not answer within "
                                     f"{self.timing.start_timeout:.0f} s")
                if now >= next_note:
                    logger.info("waiting for %s … (%d s)", self.name, round(now - started))
                    next_note += self.timing.progress_every
                await asyncio.sleep(0.1)
        self._ready_at = time.monotonic()

    async def _healthy(self, http: aiohttp.ClientSession) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(self.health_url()) as resp:
                return resp.status == 200
        return False

    def _log_tail(self, level: int) -> None:
        for line in self._tail:
            logger.log(level, "%s: %s", self.name, line)

    async def _drain(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), 2)

    async def _watch(self) -> None:
        """Restart the child when it dies, with doubling backoff, at most max_restarts times in
        a row (a child that stayed up for stable_after seconds resets the count)."""
        failures = 0
        timing = self.timing
        while True:
            proc = self._proc
            assert proc is not None
            status = await proc.wait()
            await self._drain()
            if self._stopping:
                return
            if time.monotonic() - self._ready_at > timing.stable_after:
                failures = 0
            failures += 1
            self._log_tail(logging.WARNING)
            if failures > timing.max_restarts:
                logger.error("%s died %d times in a row (status %s); giving up: restart "
                             "Roundtable", self.name, failures, status)
                return
            delay = min(timing.restart_backoff * 2 ** (failures - 1), 30.0)
            logger.error("%s exited unexpectedly (status %s); restarting in %.1f s (attempt %d "
                         "of %d)", self.name, status, delay, failures, timing.max_restarts)
            await asyncio.sleep(delay)
            try:
                await self._launch()
                await self._wait_healthy()
                self.restarts += 1
                logger.info("%s is back (pid %d)", self.name, self.pid)
            except StartError as exc:
                logger.error("restarting %s failed: %s", self.name, exc)
                await self._terminate()
                self._ready_at = time.monotonic()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.timing.stop_timeout)
            except TimeoutError:
                logger.warning("%s did not stop in %.0f s; killing it", self.name,
                               self.timing.stop_timeout)
                self._signal(proc, signal.SIGKILL)
                await proc.wait()
            logger.info("%s stopped (pid %d)", self.name, proc.pid)
        await self._drain()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
