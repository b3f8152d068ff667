"""Several processes as one server (server/cluster/, REDIS_URL): bench/run.py's
`--cluster-case PROCESSESxCLIENTS` (default 2x1000; --quick 2x100; `none` skips it).

    python bench/run.py --no-relay --no-fanout --rooms-case none --cluster-case 2x1000 --runs 3

Each run of bench/run.py measures one pair, always in this order:

  (a) one `python -m server` (no REDIS_URL) with C clients in its default room;
  (b) one redis-server (`--save '' --appendonly no`, a free 127.0.0.1 port) and PROCESSES
      `python -m server` with REDIS_URL, the C clients dealt to their ports in turn (client g to
      process g % PROCESSES). Client 0 connects and registers alone first, on process 0, so
      process 0 is where the room opens first and becomes its owner (checked in Redis: the owner
      key's node against the node of client 0's connection).

Both sides use the same single load-generator process (`loadgen.js --url a,b`) and the same
answers from the paced upstream: a warm-up (20 chunks, unpaced), a few short paced answers
(first-delta samples), then the measured paced answer (500 chunks at 50 deltas/s). Every server
process and redis-server run on the servers' core (0), the load generator and the upstream on
core 1. CPU = user + system seconds of every server-side process (psutil, /proc/<pid>/stat)
from the question to the last client's ai-end, summed; per delivered delta = that ÷ the deltas
all clients received. First delta = when a client got the answer's first message-delta, in ms
after t0 (when the upstream was due to write the first chunk), the median client of each
process; per session the median over its answers (the warm-up excluded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import run  # bench/run.py (the running script itself when started as `python bench/run.py`)
from cluster_report import line
from procs import SERVER_CORE, Procs, free_port, pinned

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOM = "main"  # the server's default room, where the load generator's clients register
PROBES = 5  # short paced answers per session for the first-delta figure (--quick: 2)
PROBE_CHUNKS = 10


def parse_cluster_case(text: str) -> tuple[int, int] | None:
    """"2x1000" -> 2 processes, 1,000 clients in one room; "" or "none" -> None."""
    if text in ("", "none"):
        return None
    nodes, _, clients = text.partition("x")
    case = int(nodes), int(clients or 1000)
    if not (case[0] >= 2 and case[1] >= case[0]):
        raise SystemExit(f"--cluster-case {text!r}: need PROCESSESxCLIENTS, 2 <= PROCESSES <= "
                         "CLIENTS")
    return case


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence, on the servers' core."""

    def __init__(self, procs: Procs, log: Path) -> None:
        self.procs, self.log = procs, log
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.version = "?"

    async def __aenter__(self) -> RedisServer:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        cmd = pinned([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                      "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                      "--daemonize", "no", "--loglevel", "warning"], SERVER_CORE)
        self.proc = await self.procs.start(cmd, stdout=False, log=self.log)
        self.ps = psutil.Process(self.proc.pid)
        client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited at start; see {self.log}")
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server not answering within 10 s")
                await asyncio.sleep(0.05)
            self.version = str((await client.info("server")).get("redis_version", "?"))
        finally:
            await client.aclose()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            await self.procs.stop(self.proc)


class Side:
    """The server side's CPU: several processes, summed for `run.one_turn`; each call also
    remembers every process's own figure, so `window()` splits the last measured one."""

    def __init__(self, named: dict[str, list[psutil.Process]]) -> None:
        self.named = named
        self.marks: list[dict[str, tuple[float, float]]] = []
        self.switches: list[dict[str, tuple[int, int]]] = []

    def cpu_split(self) -> tuple[float, float]:
        mark: dict[str, tuple[float, float]] = {}
        switches: dict[str, tuple[int, int]] = {}
        for name, group in self.named.items():
            times = [ps.cpu_times() for ps in group]
            mark[name] = (sum(t.user for t in times), sum(t.system for t in times))
            ctx = [ps.num_ctx_switches() for ps in group]
            switches[name] = (sum(c.voluntary for c in ctx), sum(c.involuntary for c in ctx))
        self.marks.append(mark)
        self.switches.append(switches)
        return sum(u for u, _ in mark.values()), sum(s for _, s in mark.values())

    def switches_window(self) -> dict[str, list[int]]:
        """Context switches (voluntary, involuntary) of each name between the last two calls."""
        a, b = self.switches[-2], self.switches[-1]
        return {name: [b[name][0] - a[name][0], b[name][1] - a[name][1]] for name in b}

    def window(self, part: int | None = None) -> dict[str, float]:
        """CPU seconds of each name between the last two calls: user + system, or only user
        (`part` 0) or system (1)."""
        a, b = self.marks[-2], self.marks[-1]
        parts = (0, 1) if part is None else (part,)
        return {name: sum(b[name][i] - a[name][i] for i in parts) for name in b}


async def wait_ready(url: str, timeout: float = 20) -> None:  # noqa: ASYNC109
    """Until GET /readyz says 200 (a cluster process also needs Redis answering)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {timeout} s")
            await asyncio.sleep(0.1)


async def owner_group(redis_url: str, processes: int) -> int | None:
    """Which process owns the room: the owner key's node (token "<node>:<epoch>") against the
    nodes of clients 0..PROCESSES-1 (client g talks to process g), from their connections
    (`<node>/<sid>` -> user id, the client's name)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        token = await client.get(f"rt:{{{ROOM}}}:owner")
        conns: dict[Any, Any] = await client.hgetall(f"rt:{{{ROOM}}}:conns")
    finally:
        await client.aclose()
    if not token:
        return None
    owner = str(token).rpartition(":")[0]
    node_of = {uid: conn.partition("/")[0] for conn, uid in conns.items()}
    for g in range(processes):
        if node_of.get(f"lg0-{g}") == owner:
            return g
    return None


MARK = re.compile(r"#(\d{4}) ")


async def owner_writes(redis_url: str, t0_ms: float, n: int, interval_ms: float
                       ) -> dict[str, Any]:
    """When the owner wrote each chunk of the last answer into the room's outbound stream: an
    entry's id is Redis's clock (ms) at its XADD. Lateness of those writes against the schedule,
    so the delay splits into before Redis (upstream, owner, WRITE) and after (readers, fan-out,
    clients)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: Any = await client.xrange(f"rt:{{{ROOM}}}:out", min=str(int(t0_ms) - 1000))
    finally:
        await client.aclose()
    written: dict[int, float] = {}
    for entry_id, fields in entries:
        if fields.get("e") != "message-delta":
            continue
        at = float(entry_id.partition("-")[0])
        for m in MARK.finditer(json.loads(fields["d"]).get("delta", "")):
            written.setdefault(int(m.group(1)), at)
    late = sorted((written[i] - (t0_ms + i * interval_ms), i) for i in written if i < n)
    vals = [v for v, _ in late]
    return {"chunks": len(vals), "p50_ms": run.pct(vals, 50), "p99_ms": run.pct(vals, 99),
            "max_ms": vals[-1] if vals else None, "worst": late[-5:]}


async def redis_commandstats(redis_url: str) -> dict[str, list[int]]:
    """Redis's INFO commandstats: command -> [calls, usec] since redis-server started."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        info: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): [int(v["calls"]), int(v["usec"])]
            for name, v in info.items() if isinstance(v, dict)}


async def redis_clients(redis_url: str) -> int:
    """Connections Redis has open (the servers' pools, and this one)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        info: dict[str, Any] = await client.info("clients")
    finally:
        await client.aclose()
    return int(info.get("connected_clients", 0))


async def cluster_session(procs: Procs, up: run.Upstream, mode: str, impl: str, processes: int,
                          clients: int, deflate: bool, n: int, interval: float, probes: int,
                          log: Path, profile: Path | None = None) -> dict[str, Any]:
    """One side of a pair: `mode` "single" (one process, no Redis) or "cluster". With
    `profile`, py-spy records every server process during the paced answer (`-owner`,
    `-other` before the suffix), which costs CPU: not for the figures."""
    cluster = mode == "cluster"
    log_from = log_size(log)
    out: dict[str, Any] = {"mode": mode, "impl": impl, "processes": processes if cluster else 1,
                           "clients": clients, "deflate": deflate, "loadavg": os.getloadavg()}
    async with contextlib.AsyncExitStack() as stack:
        named: dict[str, list[psutil.Process]] = {}
        redis: RedisServer | None = None
        servers: list[run.Server] = []
        if cluster:
            redis = await stack.enter_async_context(RedisServer(procs, log))
            out["redis_version"] = redis.version
            for _ in range(processes):
                srv = await stack.enter_async_context(
                    run.Server(procs, f"{impl}@REDIS_URL={redis.url}", up.base, log))
                await wait_ready(srv.url)
                servers.append(srv)
        else:
            servers.append(await stack.enter_async_context(run.Server(procs, impl, up.base, log)))
        await asyncio.sleep(0.5)
        out["rss_idle"] = sum(s.rss() for s in servers)
        gens = await run.start_loadgens(procs, ",".join(s.url for s in servers), clients,
                                        deflate, log)
        try:
            t_a = time.time()
            for g in gens:
                g.send({"cmd": "connect"})
            conns = await asyncio.gather(*(g.wait("connected", 120) for g in gens))
            out["connect_s"] = max(c["finished"] for c in conns) / 1000 - t_a
            out["connected_ok"] = sum(c["ok"] for c in conns)
            out["connect_errors"] = [e for c in conns for e in c["errors"]][:5]
            owner = 0
            if redis is not None:
                found = await owner_group(redis.url, processes)
                out["owner_group"] = found
                owner = 0 if found is None else found
            else:
                out["owner_group"] = 0
            for k, srv in enumerate(servers):  # "other": every process but the owner
                assert srv.ps is not None
                named.setdefault("owner" if k == owner else "other", []).append(srv.ps)
            if redis is not None:
                assert redis.ps is not None
                named["redis"] = [redis.ps]
            await asyncio.sleep(1.0)
            out["rss_connected"] = sum(s.rss() for s in servers)
            out["rss_by_process_mb"] = [s.rss() / 2**20 for s in servers]
            if redis is not None:
                out["redis_clients"] = await redis_clients(redis.url)
            out["rss_per_client_kb"] = (out["rss_connected"] - out["rss_idle"]) / clients / 1024
            side = Side(named)
            out["warmup"] = await run.one_turn(up, side, gens, 20, 0.0, 30)
            answers = []
            for _ in range(probes):
                turn = await run.one_turn(up, side, gens, PROBE_CHUNKS, interval, 30)
                answers.append(turn)
                await asyncio.sleep(0.2)
            out["probes"] = [{k: turn[k] for k in ("groups", "p99_ms", "lost_chunks",
                                                   "reordered", "kept_pace")} for turn in answers]
            spies = []
            if profile is not None:
                for k, srv in enumerate(servers):
                    role = "owner" if k == owner else f"other{k}"
                    path = profile.with_name(f"{profile.stem}-{mode}-{role}{profile.suffix}")
                    spies.append(await run.start_profile(procs, srv, path, n * interval))
            stats_before = await redis_commandstats(redis.url) if redis is not None else {}
            out["paced"] = await run.one_turn(up, side, gens, n, interval, n * interval + 120)
            if redis is not None:  # what the answer cost Redis, by command (INFO commandstats)
                stats_after = await redis_commandstats(redis.url)
                out["redis_commands"] = {
                    cmd: [calls - stats_before.get(cmd, [0, 0])[0],
                          usec - stats_before.get(cmd, [0, 0])[1]]
                    for cmd, (calls, usec) in sorted(stats_after.items())
                    if calls != stats_before.get(cmd, [0, 0])[0] and cmd != "info"}
            for spy in spies:
                if spy is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(spy.wait(), 30)
            out["cpu_by_process"] = side.window()
            out["cpu_user_by_process"] = side.window(0)
            out["ctx_switches_by_process"] = side.switches_window()
            if redis is not None:  # 1 ms resolution (stream ids); t0 from the upstream
                t0_ms = ((await up.last()).get("t0") or 0) * 1000
                out["owner_writes"] = await owner_writes(redis.url, t0_ms, n, interval * 1000)
            answers.append(out["paced"])
            out["first_delta"] = first_delta(answers)
            for g in gens:
                g.send({"cmd": "status"})
            stats = await asyncio.gather(*(g.wait("status", 10) for g in gens))
            out["disconnects"] = sum(s["disconnects"] for s in stats)
            out["disconnect_reasons"] = sorted({r for s in stats for r in s["disconnect_reasons"]})
        finally:
            for g in gens:
                with contextlib.suppress(Exception):
                    g.send({"cmd": "quit"})
            await asyncio.sleep(0.3)
            for g in gens:
                g.close()
                await procs.stop(g.proc)
            out["server_warnings"] = warnings_since(log, log_from)
    return out


def log_size(log: Path) -> int:
    """Bytes in the log so far (0 before it exists)."""
    try:
        return os.stat(log).st_size
    except OSError:
        return 0


def warnings_since(log: Path, start: int) -> list[str]:
    """The servers' WARNING and ERROR lines written to the log since `start` (bytes): e.g. a
    cluster process that could not reach Redis during the session."""
    with contextlib.suppress(OSError), open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
    return []


def first_delta(answers: list[dict[str, Any]]) -> dict[str, float]:
    """Per process (load-generator group): the median over answers of its median client's
    first-delta time (ms after t0)."""
    per: dict[str, list[float]] = {}
    for turn in answers:
        for g, data in turn.get("groups", {}).items():
            if data.get("first_p50_ms") is not None:
                per.setdefault(g, []).append(data["first_p50_ms"])
    return {g: statistics.median(v) for g, v in per.items()}


async def cluster_pair(procs: Procs, up: run.Upstream, run_index: int, runs: int,
                       case: tuple[int, int], impl: str, deflate: bool, n: int, interval: float,
                       quick: bool, log: Path, results: dict[str, Any],
                       save: Callable[[], None], profile: Path | None = None) -> None:
    """Run `run_index`'s pair, single then cluster, appending to results["cluster"]."""
    processes, clients = case
    for mode in ("single", "cluster"):
        what = "one process" if mode == "single" else f"{processes} processes + redis"
        tag = f"[run {run_index + 1}/{runs}] cluster case: {clients} clients, {what}"
        print(tag + " ...", flush=True)
        try:
            r = await cluster_session(procs, up, mode, impl, processes, clients, deflate, n,
                                      interval, 2 if quick else PROBES, log, profile)
            r["run"] = run_index
            results["cluster"].append(r)
            print("    " + line(r), flush=True)
        except Exception as exc:
            results["errors"].append(f"{tag}: {exc!r}")
            print(f"    FAILED: {exc!r}", flush=True)
        save()
