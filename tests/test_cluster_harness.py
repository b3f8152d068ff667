"""The cluster harness itself (tests/cluster.py): its redis-server and one plain server process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeout

from tests.cluster import RedisServer, ServerProcess, redis_server_fixture  # noqa: F401
from tests.fake_upstream import FakeUpstream

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parent.parent


def gone(pid: int, within: float = 5.0) -> bool:
    """True once no process has this pid (our child is reaped by its own `wait()`)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


async def test_redis_server_starts_on_its_own_loopback_port_and_answers_ping(
    redis_server: RedisServer,
) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = await redis_server.client()
    assert await client.ping() is True
    await client.set("k", "v")
    assert await client.get("k") == "v"


async def test_restart_keeps_the_port_and_loses_every_key(redis_server: RedisServer) -> None:
    client = await redis_server.client()
    await client.set("k", "v")
    port, pid = redis_server.port, redis_server.pid
    await redis_server.restart()
    assert redis_server.port == port and redis_server.pid != pid
    assert gone(pid)
    fresh = await redis_server.client()
    assert await fresh.get("k") is None
    assert await fresh.dbsize() == 0


async def test_pause_makes_commands_time_out_until_resume(redis_server: RedisServer) -> None:
    client = await redis_server.client(socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    await client.set("k", "v")
    await redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeout):
            await client.get("k")
        assert time.monotonic() - started < 2
    finally:
        await redis_server.resume()
    assert await client.get("k") == "v"  # nothing lost: the process was only stopped


INNER_TEST = """
import pytest
from tests.cluster import RedisServer, redis_server_fixture  # noqa: F401

async def test_fails_with_redis_paused(redis_server: RedisServer, tmp_path_factory) -> None:
    client = await redis_server.client()
    await client.set("k", "v")
    (tmp_path_factory.getbasetemp().parent / "pid").write_text(str(redis_server.pid))
    await redis_server.pause()
    raise AssertionError("this test fails on purpose")
"""


def test_the_fixture_stops_redis_even_when_the_test_fails_with_it_paused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_inner=INNER_TEST)
    base = pytester.path / "tmp"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
        "-o", "asyncio_default_fixture_loop_scope=function", f"--basetemp={base}",
    )
    result.assert_outcomes(failed=1)
    pid = int((pytester.path / "pid").read_text())
    assert gone(pid), f"redis-server {pid} is still running"


async def test_a_server_process_without_redis_starts_gets_ready_and_exits_0_on_sigterm(
    upstream: FakeUpstream, tmp_path: Path,
) -> None:
    server = ServerProcess(upstream.base_url, None, tmp_path)
    assert "REDIS_URL" not in server.env and "CLUSTER_LEASE" not in server.env
    assert server.env["SERVER_PORT"] == str(server.port)
    try:
        await server.start()
        await server.wait_ready()
        assert await server.terminate() == 0
        assert "sk-test-secret-key" not in server.output()
        assert f"127.0.0.1:{server.port}" in server.output()
    finally:
        await server.close()
