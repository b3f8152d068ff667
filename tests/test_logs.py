"""Logs: LOG_FORMAT=json lines with their ids, and no message text or key above debug."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import pytest

from server.logs import IdsFilter, JsonFormatter, current_ids, log_ids
from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream, HTTPError, Text
from tests.peers import Peer
from tests.test_process import server_env, spawn, wait_healthy

KEY = "sk-live-Zq8vS3cr3tK3y0000"
SAID = "the launch code is PINEAPPLE-4471"
ANSWERED = "Noted, MANGO-9902 acknowledged"


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("server.rooms", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    IdsFilter().filter(rec)
    return rec


def test_json_lines_carry_the_bound_ids_and_nothing_unbound():
    with log_ids(room="design", connection="sid1"):
        with log_ids(turn="m_1", connection=None):
            assert current_ids() == {"room": "design", "turn": "m_1"}
            line = JsonFormatter().format(record("turn %s", turn="m_2"))
        assert current_ids() == {"room": "design", "connection": "sid1"}
    entry = json.loads(line)
    assert entry["message"] == "turn %s"
    assert (entry["room"], entry["turn"], entry["level"]) == ("design", "m_2", "INFO")
    assert entry["logger"] == "server.rooms" and entry["time"].endswith("+00:00")
    assert "connection" not in entry
    assert set(json.loads(JsonFormatter().format(record("x")))) == {
        "time", "level", "logger", "message"}


def test_a_traceback_stays_inside_its_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), True)
        rec.exc_info = __import__("sys").exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_message_text_and_no_key_in_the_log_at_info(
    tmp_path: Path, upstream: FakeUpstream, log_format: str
):
    port = free_port()
    env = server_env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=upstream.base_url,
                     SERVER_PORT=str(port), SHUTDOWN_TIMEOUT="3", LOG_FORMAT=log_format)
    proc = await spawn(tmp_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        alice, bob = Peer(url, "Alice"), Peer(url, "Bob")
        await alice.join()
        await bob.join()
        upstream.enqueue(Text(ANSWERED))
        await alice.say(SAID)
        await bob.wait_for("ai-end")
        # Provider errors that quote the request and the key: their detail is debug-only.
        upstream.enqueue(HTTPError(400, message=f"Invalid input: {SAID!r}"))
        await alice.say(f"again: {SAID}")
        await bob.wait_for("ai-end", count=2)
        upstream.enqueue(HTTPError(401, message=f"Incorrect API key provided: {KEY}"))
        await bob.say(SAID)
        await bob.wait_for("ai-end", count=3)
        for peer in (alice, bob):
            await peer.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    output = (await proc.stdout.read()).decode()
    for secret in (KEY, "PINEAPPLE", "MANGO"):
        assert secret not in output, secret
    assert "ProviderRejected (HTTP 400)" in output and "ProviderAuthError (HTTP 401)" in output
    if log_format == "json":
        entries = [json.loads(line) for line in output.splitlines()]
        joined = [e for e in entries if e["message"].startswith("Alice joined room main")]
        assert joined and joined[0]["room"] == "main" and joined[0]["connection"]
        failed = [e for e in entries if "ProviderRejected" in e["message"]]
        assert failed[0]["room"] == "main" and failed[0]["turn"].startswith("m")
        assert "connection" not in failed[0]
        assert {"time", "level", "logger", "message"} <= set(entries[0])
    else:
        assert "INFO server.rooms.membership: Alice joined room main" in output
