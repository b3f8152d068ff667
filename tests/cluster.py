"""Harness for the cluster tests: a real `redis-server`, several `python -m server` processes.

A cluster test imports the fixtures it uses (pytest finds fixtures only in conftest and in the
test module itself; the functions' names differ from the fixtures' so that a test's parameter
does not shadow the import), takes `upstream` from tests/conftest.py, and starts its processes:

    from tests.cluster import StartCluster, cluster_fixture, redis_server_fixture  # noqa: F401

    pytestmark = [pytest.mark.slow, pytest.mark.cluster]

    async def test_two_processes(cluster: StartCluster, upstream: FakeUpstream) -> None:
        nodes = await cluster(n=2)
        await nodes.wait_ready()
        ...   # Peer(nodes[0].url, "Alice"), nodes[1].kill(), print(nodes.dump()), ...

Everything listens on 127.0.0.1 only, on free ports; never on the system service's 6379. Every
process started here is stopped at teardown, also when the test fails (each process's output is
then printed, so pytest shows it with the failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.test_process import server_env, spawn

REDIS_SERVER = "redis-server"
HOST = "127.0.0.1"


class OutputDrain:
    """Reads a process's stdout continuously (so the pipe never fills) and keeps the text."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._chunks: list[bytes] = []
        self._task = asyncio.create_task(self._read(stream)) if stream is not None else None

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self._chunks.append(chunk)

    def text(self) -> str:
        """Everything read so far."""
        return b"".join(self._chunks).decode(errors="replace")

    async def close(self, timeout: float = 2.0) -> None:
        """Read to EOF (the process has exited), or give up after `timeout` seconds."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _signal_and_wait(
    proc: asyncio.subprocess.Process, sig: signal.Signals, timeout: float
) -> bool:
    """Send `sig` (and SIGCONT, in case the process is stopped); True if it exited in time."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


class RedisServer:
    """One `redis-server` on a free loopback port, no persistence, data dir `directory`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: OutputDrain | None = None
        self._logs: list[str] = []  # output of earlier runs (before a restart)
        self._clients: list[Redis] = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING."""
        assert not self.running, "redis-server is already running"
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._drain = OutputDrain(self.proc.stdout)
        try:
            await self._wait_for_ping(timeout)
        except BaseException:
            await self.kill()
            raise

    async def _wait_for_ping(self, timeout: float) -> None:
        probe = Redis(host=HOST, port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5,
                      retry=Retry(NoBackoff(), 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(f"redis-server exited ({self.proc.returncode}):\n"
                                         f"{self.output()}")
                with contextlib.suppress(RedisError, OSError):
                    if await probe.ping():
                        return
                if loop.time() > deadline:
                    raise AssertionError(f"redis-server did not answer PING:\n{self.output()}")
                await asyncio.sleep(0.05)
        finally:
            await probe.aclose()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait (SIGKILL if it has not exited within `timeout` seconds)."""
        if self.proc is not None and not await _signal_and_wait(
                self.proc, signal.SIGTERM, timeout):
            await _kill(self.proc)
        await self._finish_run()

    async def kill(self) -> None:
        """SIGKILL and wait: a crash."""
        if self.proc is not None:
            await _kill(self.proc)
        await self._finish_run()

    async def restart(self) -> None:
        """Stop and start again on the same port; every key is lost, as after a real restart."""
        await self.stop()
        await self.start()

    async def pause(self) -> None:
        """SIGSTOP: connections stay open (and new ones are accepted) but nothing answers."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGSTOP)

    async def resume(self) -> None:
        """SIGCONT after `pause()`."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGCONT)

    async def client(self, **kwargs: Any) -> Redis:
        """A redis.asyncio client on this server (decoded strings); closed by `close()`."""
        client = Redis.from_url(self.url, **{"decode_responses": True, **kwargs})
        self._clients.append(client)
        return client

    async def close(self) -> None:
        """Close every client made by `client()`, then stop the server (the fixture's teardown)."""
        try:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 2)
            self._clients.clear()
        finally:
            await self.stop()

    def output(self) -> str:
        """What redis-server printed, over every run since the first start."""
        current = self._drain.text() if self._drain is not None else ""
        return "".join([*self._logs, current])

    async def _finish_run(self) -> None:
        if self._drain is not None:
            await self._drain.close()
            self._logs.append(self._drain.text())
            self._drain = None


class ServerProcess:
    """One `python -m server` subprocess on a free loopback port."""

    def __init__(
        self, upstream_url: str, redis_url: str | None, cwd: Path, *,
        llm_api: str = "responses", lease: str = "2", name: str = "server", **env: str,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.cwd = cwd
        settings = {
            "OPENAI_API_KEY": "sk-test-secret-key", "OPENAI_BASE_URL": upstream_url,
            "LLM_API": llm_api, "SERVER_PORT": str(self.port), "SHUTDOWN_TIMEOUT": "3",
            "DRAIN_TIMEOUT": "2",
        }
        if redis_url is not None:
            settings.update(REDIS_URL=redis_url, CLUSTER_LEASE=lease)
        settings.update(env)
        self.env = {k: v for k, v in server_env(**settings).items()
                    if k in settings or not k.startswith(("REDIS_", "CLUSTER_"))}
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: OutputDrain | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def proc(self) -> asyncio.subprocess.Process:
        assert self._proc is not None, f"{self.name} is not started"
        return self._proc

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal)."""
        return self._proc.returncode if self._proc is not None else None

    async def start(self, timeout: float = 20.0) -> None:
        """Spawn the process and wait until `GET /healthz` answers 200 (killed if it does not)."""
        assert self._proc is None, f"{self.name} was already started"
        self._proc = await spawn(self.cwd, self.env)
        self._drain = OutputDrain(self._proc.stdout)
        try:
            await self._poll("/healthz", timeout)
        except BaseException:
            await self.kill()
            raise

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until `GET /readyz` answers 200 (Redis and the provider ready, not draining)."""
        await self._poll("/readyz", timeout)

    async def _poll(self, path: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no answer"
        client_timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=client_timeout) as http:
            while loop.time() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited ({self.proc.returncode}) while "
                                         f"waiting for {path}:\n{self.output()}")
                try:
                    async with http.get(f"{self.url}{path}") as resp:
                        if resp.status == 200:
                            return
                        last = f"{resp.status} {await resp.text()}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name}: {path} not 200 within {timeout} s (last: {last}):\n"
                             f"{self.output()}")

    async def kill(self) -> None:
        """SIGKILL and wait: a crash (no clean-up, the lease is not released)."""
        await _kill(self.proc)
        await self._finish()

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; the exit code. Past `timeout` seconds: SIGKILL and fail."""
        exited = await _signal_and_wait(self.proc, signal.SIGTERM, timeout)
        if not exited:
            await _kill(self.proc)
        await self._finish()
        if not exited:
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM:\n"
                                 f"{self.output()}")
        code = self.proc.returncode
        assert code is not None
        return code

    async def pause(self) -> None:
        """SIGSTOP: the process holds its sockets and its lease but does nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    async def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self.proc.send_signal(signal.SIGCONT)

    async def close(self, grace: float = 5.0) -> None:
        """Stop the process if it still runs: SIGTERM, then SIGKILL after `grace` seconds."""
        if self._proc is not None and not await _signal_and_wait(
                self._proc, signal.SIGTERM, grace):
            await _kill(self._proc)
        await self._finish()

    def output(self) -> str:
        """What the process printed so far (stdout and stderr)."""
        return self._drain.text() if self._drain is not None else ""

    async def _finish(self) -> None:
        if self._drain is not None:
            await self._drain.close()


class Cluster:
    """Several ServerProcess sharing one Redis and one fake upstream."""

    def __init__(self, processes: list[ServerProcess]) -> None:
        self.processes = processes

    def __getitem__(self, index: int) -> ServerProcess:
        return self.processes[index]

    def __len__(self) -> int:
        return len(self.processes)

    def __iter__(self) -> Iterator[ServerProcess]:
        return iter(self.processes)

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    async def start(self) -> None:
        """Start every process at once; each is healthy (/healthz) when this returns."""
        await asyncio.gather(*(p.start() for p in self.processes))

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until every running process answers /readyz with 200."""
        await asyncio.gather(*(p.wait_ready(timeout) for p in self.processes if p.running))

    async def close(self, grace: float = 5.0) -> None:
        """Stop every process still running (SIGTERM, SIGKILL after `grace` seconds)."""
        results = await asyncio.gather(*(p.close(grace) for p in self.processes),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def dump(self) -> str:
        """Every process's output, each under a header with its name, url and state (exit code)."""
        parts = []
        for p in self.processes:
            state = ("not started" if not p.started else "running" if p.running
                     else f"exit {p.returncode}")
            parts.append(f"===== {p.name} {p.url} ({state}) =====\n{p.output()}")
        return "\n".join(parts)


StartCluster = Callable[..., Awaitable[Cluster]]


@contextlib.asynccontextmanager
async def running_redis(directory: Path) -> AsyncIterator[RedisServer]:
    """A started RedisServer, stopped (with its clients) on exit, also on an exception."""
    redis = RedisServer(directory)
    try:
        await redis.start()
        yield redis
    finally:
        await redis.close()


@pytest.fixture(name="redis_server")
async def redis_server_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own on a free loopback port; always stopped at teardown."""
    async with running_redis(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


@pytest.fixture(name="cluster")
async def cluster_fixture(
    upstream: FakeUpstream, redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[StartCluster]:
    """Factory `await cluster(n=3, llm_api="responses", **env) -> Cluster` (started, healthy).

    Every process shares `redis_server` and `upstream`; `env` adds or overrides settings
    (e.g. CLUSTER_LEASE="1"). Every cluster started is closed at teardown, and its processes'
    output printed (pytest shows it when the test failed).
    """
    clusters: list[Cluster] = []

    async def start(n: int = 3, llm_api: str = "responses", **env: str) -> Cluster:
        base = len([p for c in clusters for p in c])
        nodes = Cluster([
            ServerProcess(upstream.base_url, redis_server.url,
                          tmp_path_factory.mktemp(f"node{base + i}"), llm_api=llm_api,
                          name=f"node{base + i}", **env)
            for i in range(n)
        ])
        clusters.append(nodes)
        await nodes.start()
        return nodes

    try:
        yield start
    finally:
        try:
            for nodes in clusters:
                await nodes.close()
        finally:
            for nodes in clusters:
                print(nodes.dump(), file=sys.stderr)
